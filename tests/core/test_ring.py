import numpy as np

from engine.audio.ring import PlaybackRing

BAR = 4800


def bar_audio(bar: int) -> np.ndarray:
    """Each bar a constant level, so replayed material is easy to recognise."""
    return np.full((BAR, 2), 0.1 * (bar + 1), dtype=np.float32)


def ring_with_bars(count: int) -> PlaybackRing:
    ring = PlaybackRing(capacity=1 << 16, crossfade=64)
    ring.reset(0)
    for bar in range(count):
        ring.publish_bar(bar * BAR)
        ring.write(bar * BAR, bar_audio(bar))
    return ring


def read(ring: PlaybackRing, start: int, n: int, block: int = 256) -> np.ndarray:
    out = np.zeros((n, 2), dtype=np.float32)
    for pos in range(start, start + n, block):
        ring.read(out[pos - start : pos - start + block], pos)
    return out


def test_plays_what_was_written() -> None:
    ring = ring_with_bars(3)
    out = read(ring, 0, 3 * BAR)
    assert np.array_equal(out[:BAR], bar_audio(0))
    assert np.array_equal(out[2 * BAR :], bar_audio(2))
    assert ring.underruns == 0


def test_underrun_replays_last_complete_bar_bar_aligned_and_rejoins_at_a_bar_line() -> None:
    ring = ring_with_bars(3)
    ring.publish_bar(3 * BAR)  # bar 3 is announced but its audio is late
    out = read(ring, 0, 4 * BAR)
    assert ring.underruns == 1
    # Bar 3 plays bar 2 again, aligned: after the crossfade it is exactly bar 2's level.
    assert np.allclose(out[3 * BAR + 64 : 4 * BAR], 0.3)
    # Fresh audio arrives for bars 3..5; the ring rejoins at the next bar line (bar 4).
    for bar in range(3, 6):
        if bar > 3:
            ring.publish_bar(bar * BAR)
        ring.write(bar * BAR, bar_audio(bar))
    later = read(ring, 4 * BAR, 2 * BAR)
    assert ring.rejoins == 1 and not ring.replaying
    assert np.allclose(later[64:BAR], 0.5)  # bar 4 fresh after a 64-sample crossfade
    # Continuous through the rejoin: the 0.3 -> 0.5 change is spread over the 64-sample
    # raised-cosine fade (largest step 0.2 * pi / 128), not a jump.
    joined = np.concatenate([out, later])[:, 0]
    around_rejoin = joined[4 * BAR - 32 : 4 * BAR + 96]
    assert np.abs(np.diff(around_rejoin)).max() < 0.2 * np.pi / 128 * 1.05


def test_freeze_loops_the_current_bar_from_the_next_bar_line() -> None:
    ring = ring_with_bars(6)
    read(ring, 0, BAR + 512)
    ring.freeze = True
    out = read(ring, BAR + 512, 3 * BAR - 512)  # up to the end of bar 3
    assert ring.freezes == 1
    assert np.allclose(out[: BAR - 512], 0.2)  # bar 1 plays out
    assert np.allclose(out[BAR - 512 + 64 :], 0.2)  # bars 2 and 3 replay bar 1
    ring.freeze = False
    after = read(ring, 3 * BAR, 2 * BAR)
    assert np.allclose(after[BAR + 64 :], 0.5)  # back to fresh audio at bar 4
    assert ring.underruns == 0


def test_a_rewind_splices_at_the_first_sample_that_differs() -> None:
    """Written again from bar 1: equal samples change nothing; from the first that differs the
    new audio is written as is when the writer promised an exact replay up to there, and
    crossfaded (64 samples here) when it differs sooner. The reader's limit never moves back."""
    for exact_until, crossfaded in ((BAR + 1000, False), (BAR + 2000, True)):
        ring = ring_with_bars(3)
        ring.rewind(BAR, 2, exact_until=exact_until)
        assert ring.written == 3 * BAR and ring.cursor == BAR
        new = bar_audio(1).copy()
        new[1500:] = 0.9
        ring.write(BAR, new[:1000])  # equal so far: not the splice yet
        ring.write(BAR + 1000, new[1000:])
        assert ring.splice_at == BAR + 1500 and ring.cursor == 2 * BAR and ring.written == 3 * BAR
        ring.publish_bar(2 * BAR)
        out = read(ring, 0, 3 * BAR)
        np.testing.assert_array_equal(out[: BAR + 1500], np.concatenate([bar_audio(0), bar_audio(1)[:1500]]))
        if crossfaded:
            fade = out[BAR + 1500 : BAR + 1564, 0]
            assert 0.2 < fade[0] < fade[-1] < 0.9 and np.all(np.diff(fade) > 0)
            np.testing.assert_array_equal(out[BAR + 1564 : 2 * BAR], new[1564:])
        else:
            np.testing.assert_array_equal(out[BAR + 1500 : 2 * BAR], new[1500:])
        np.testing.assert_array_equal(out[2 * BAR :], bar_audio(2))  # not written again yet: still playable
