"""The C output ring and its feeder, driven by hand: the C callback (`bl_callback`, run here
through `OutputRing.pull` exactly as PortAudio runs it) must play the playback ring's stream
sample for sample, and every decision the Python reader used to make at the playhead (replay
a bar when the generator is late, freeze, a rollback's rewrite) must reach it ahead of time."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from engine.audio.feeder import OutputFeeder
from engine.audio.ring import PlaybackRing
from engine.audio.rtout import OutputRing
from engine.units import CHANNELS

BAR = 4096


def noise(frames: int, seed: int = 7) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (frames, CHANNELS)).astype(np.float32)


def setup(frames: int, *, block: int = 256, bars: int | None = None, capacity: int = 1 << 16,
          fade: int = 1) -> tuple[PlaybackRing, OutputRing, OutputFeeder, np.ndarray]:
    """A ring with `frames` of noise written (bar lines every BAR), fed into a C ring."""
    audio = noise(frames)
    ring = PlaybackRing(capacity=1 << 17)
    ring.reset(0)
    for k in range((bars if bars is not None else frames // BAR) + 1):
        ring.publish_bar(k * BAR)
    ring.write(0, audio)
    out = OutputRing(capacity, CHANNELS, fade_frames=fade)
    feeder = OutputFeeder(ring, out, blocksize=block, finished=threading.Event())
    return ring, out, feeder, audio


def play(out: OutputRing, feeder: OutputFeeder | None, frames: int, block: int) -> np.ndarray:
    """Run the callback block after block, the feeder's thread looking between blocks."""
    got = np.zeros((frames, CHANNELS), dtype=np.float32)
    for start in range(0, frames, block):
        if feeder is not None:
            feeder.feed()
        out.pull(got[start : start + block])
    return got


@pytest.mark.parametrize("block", [64, 255, 256, 1024, 4096])
def test_the_callback_plays_the_exact_stream_across_the_ring_wrap(block: int) -> None:
    ring, out, feeder, audio = setup(6 * 4096, block=block, capacity=1 << 13)  # the C ring wraps three times
    feeder.feed()
    out.arm()
    got = play(out, feeder, 5 * 4096 // block * block, block)
    assert np.array_equal(got, audio[: len(got)])
    assert out.read_position == len(got) and out.callbacks == len(got) // block and out.gaps == 0


def test_before_arming_the_callback_is_silent_and_the_playhead_stays() -> None:
    _, out, feeder, _ = setup(4096)
    feeder.feed()
    block = np.ones((1024, CHANNELS), dtype=np.float32)
    out.pull(block)
    assert not block.any() and out.read_position == 0 and out.callbacks == 0
    assert out.tid is not None  # the first block names the audio thread, armed or not


def test_a_stop_fades_linearly_across_blocks_then_stays_silent() -> None:
    _, out, feeder, audio = setup(8 * 1024, fade=480)  # 480 samples: spans two 256-frame blocks
    feeder.feed()
    out.arm()
    got = np.zeros((4 * 1024, CHANNELS), dtype=np.float32)
    out.pull(got[:1024])
    out.fade()
    assert not out.finished
    for start in range(1024, len(got), 256):
        out.pull(got[start : start + 256])
    gain = got[1024:1504] / audio[1024:1504]
    assert np.allclose(gain, np.linspace(1.0, 0.0, 480, dtype=np.float32)[:, None], atol=1e-5)
    assert not got[1504:].any()
    assert out.finished


def test_frames_not_fed_with_no_bar_to_loop_play_as_zeros_and_count_as_a_gap() -> None:
    _, out, feeder, audio = setup(4096, bars=0)  # no complete bar yet
    feeder.feed()
    out.arm()
    got = play(out, None, 8192, 1024)  # nobody feeds past the 4096 written
    assert np.array_equal(got[:4096], audio) and not got[4096:].any()
    assert out.gaps == 4 and out.gap_frames == 4096 and out.dry_entries == 0


def test_a_frozen_feeder_the_callback_loops_the_designated_bar_and_the_feeder_goes_on_inside_it() -> None:
    """Python frozen (no feed) while the generator is late too: the callback loops bar 1, bar-
    aligned, faded in from the last frame played; the feeder, back, continues that replay."""
    ring, out, feeder, audio = setup(2 * BAR, bars=3)  # bars 0 and 1 complete, bar 2 not written
    feeder.feed()
    out.arm()
    got = play(out, None, 3 * BAR, 256)  # nobody feeds: from 2 * BAR the callback runs dry
    assert out.gaps == 0 and out.dry_entries == 1 and out.dry_frames == BAR
    assert np.array_equal(got[: 2 * BAR], audio[: 2 * BAR])
    assert np.array_equal(got[2 * BAR + 240 : 3 * BAR], audio[BAR + 240 : 2 * BAR])  # bar 1 again
    assert np.abs(got[2 * BAR] - got[2 * BAR - 1]).max() < 0.01  # no click going in: it fades from the last frame
    later = play(out, feeder, 2 * BAR, 256)  # the feeder is back
    assert ring.underruns == 1 and out.dry_entries == 1 and out.gaps == 0
    # what it feeds goes on with the same loop: bar 1 once more, at bar 3's offsets (not from its start)
    assert np.array_equal(later[256 : BAR], audio[BAR + 256 : 2 * BAR])


def test_a_rollback_rewrite_inside_the_look_ahead_reaches_the_callback() -> None:
    """The whole look-ahead is in the C ring; audio written again replaces it there before it plays."""
    ring, out, feeder, audio = setup(8 * BAR)
    feeder.start()  # copies all 8 bars at once
    try:
        out.arm()
        got = np.zeros((8 * BAR, CHANNELS), dtype=np.float32)
        out.pull(got[:1024])
        assert feeder.fed == 8 * BAR
        new = noise(8 * BAR - 3000, seed=9)
        ring.rewind(3000, ring.bar_mark(), exact_until=3000)  # a generator replayed exactly up to 3000
        ring.write(3000, new)  # the writer's hook feeds it at once
        for start in range(1024, len(got), 1024):
            out.pull(got[start : start + 1024])
    finally:
        feeder.close()
    assert np.array_equal(got[:3000], audio[:3000])
    assert np.array_equal(got[3000:], new)
    assert feeder.late_writes == 0


def test_a_rewrite_within_a_block_of_the_playhead_never_touches_the_block_being_played() -> None:
    ring, out, feeder, audio = setup(8 * BAR)
    feeder.feed()
    out.arm()
    got = play(out, None, 1024, 256)
    ring.rewind(1100, ring.bar_mark(), exact_until=1100)
    ring.write(1100, noise(8 * BAR - 1100, seed=9))
    feeder.feed()
    assert feeder.late_writes == 1
    out.pull(block := np.zeros((256, CHANNELS), dtype=np.float32))
    assert np.array_equal(block, audio[1024:1280])  # the block in flight stays as it was committed
    assert np.array_equal(got, audio[:1024])


def test_a_late_generator_replays_the_last_bar_from_the_deadline_not_before() -> None:
    """Two bars written, none more: the feeder leaves the end alone until the playhead is `lead`
    from it, then the ring's reader replays bar 1 bar-aligned; the callback never runs dry."""
    ring, out, feeder, audio = setup(2 * BAR, bars=3)
    feeder.feed()
    out.arm()
    played = play(out, None, 2 * BAR - feeder.lead - 256, 256)
    feeder.feed()
    assert feeder.fed == 2 * BAR and ring.underruns == 0  # not yet: the generator may still come
    played = np.concatenate([played, play(out, feeder, 2 * BAR, 256)])
    assert ring.underruns == 1 and out.gaps == 0
    at = 2 * BAR  # the replayed bar plays on from the same offset, after a 5 ms crossfade
    assert np.array_equal(played[at + 240 : at + 1024], audio[BAR + 240 : BAR + 1024])


def test_fresh_audio_after_a_replay_rejoins_at_a_bar_line() -> None:
    ring, out, feeder, audio = setup(2 * BAR, bars=4)
    feeder.feed()
    out.arm()
    play(out, feeder, 2 * BAR + 512, 256)  # replaying bar 1
    late = noise(2 * BAR, seed=3)
    ring.write(2 * BAR, late)  # bar 2 and 3 arrive late
    got = play(out, feeder, 2 * BAR, 256)
    assert ring.rejoins == 1 and ring.rejoined_at == 3 * BAR
    at = 3 * BAR - (2 * BAR + 512)  # bar 3 plays fresh from its line
    assert np.array_equal(got[at + 240 : at + 1024], late[BAR + 240 : BAR + 1024])


def test_freeze_loops_from_the_next_bar_line_past_the_lead_although_more_was_fed() -> None:
    ring, out, feeder, audio = setup(8 * BAR)
    feeder.feed()
    out.arm()
    play(out, feeder, 1024, 256)
    ring.freeze = True
    got = play(out, feeder, 4 * BAR, 256)  # playhead 1024 .. 1024 + 4 bars
    assert ring.freezes == 1
    line = BAR - 1024  # bar 1's line, in `got`
    assert np.array_equal(got[:line], audio[1024:BAR])
    assert np.array_equal(got[line + 240 : line + BAR], audio[240:BAR])  # bar 0 again (crossfaded in)
    assert np.array_equal(got[line + BAR + 240 : line + 2 * BAR], audio[240:BAR])  # and again
    assert out.gaps == 0


def test_silence_fed_before_the_first_bar_is_replaced_when_audio_arrives() -> None:
    """An external clock's first bar: nothing written, so the feeder feeds silence at its deadline;
    the first audio written over it plays (not a lead of it lost)."""
    ring = PlaybackRing(capacity=1 << 17)
    ring.reset(0)
    out = OutputRing(1 << 14, CHANNELS, fade_frames=1)
    feeder = OutputFeeder(ring, out, blocksize=256, finished=threading.Event())
    feeder.feed()
    out.arm()
    assert feeder.fed >= feeder.lead  # silence, ahead
    ring.reset(512)  # the clock's bar line: inside the silence already fed
    ring.publish_bar(512)
    ring.publish_bar(512 + BAR)
    audio = noise(BAR)
    ring.write(512, audio)
    got = play(out, feeder, 512 + BAR, 256)
    assert not got[:512].any()
    assert np.array_equal(got[512:], audio)


def test_a_stream_that_starts_inside_the_first_feed_plays_from_its_origin() -> None:
    """A MIDI clock out starts the stream 100 ms in (ring origin 4800): the first feed covers the
    silence before it and the audio after it in one read."""
    ring = PlaybackRing(capacity=1 << 17)
    ring.reset(4800)
    ring.publish_bar(4800)
    ring.publish_bar(4800 + BAR)
    audio = noise(BAR)
    ring.write(4800, audio)
    out = OutputRing(1 << 14, CHANNELS, fade_frames=1)
    feeder = OutputFeeder(ring, out, blocksize=256, finished=threading.Event())
    feeder.feed()
    out.arm()
    got = play(out, None, 4800 + BAR, 256)
    assert not got[:4800].any()
    assert np.array_equal(got[4800:], audio)


def _first_bar_short_by(missing: int) -> tuple[PlaybackRing, OutputRing, OutputFeeder, np.ndarray]:
    """A stream whose first bar is not all written yet (a restarted engine's generator late in
    its first bar): bar lines at 0, BAR and 2 * BAR; the BAR + BAR samples it will get."""
    ring = PlaybackRing(capacity=1 << 17)
    ring.reset(0)
    for k in range(3):
        ring.publish_bar(k * BAR)
    audio = noise(2 * BAR + 1024, seed=5)
    ring.write(0, audio[: BAR - missing])
    out = OutputRing(1 << 14, CHANNELS, fade_frames=1)
    feeder = OutputFeeder(ring, out, blocksize=256, finished=threading.Event())
    feeder.feed()
    out.arm()
    return ring, out, feeder, audio


def test_silence_fed_with_no_bar_to_loop_counts_once_it_plays_and_fresh_audio_fades_in_after_it() -> None:
    """The first bar runs out before it is complete: the feeder can only feed silence. What of it
    the callback plays is the status's silence; fresh audio written after it plays from the first
    frame not yet committed, faded in from zero (no click), and the audio before that stays."""
    ring, out, feeder, audio = _first_bar_short_by(2000)
    got = play(out, feeder, BAR - 1200, 256)  # the silence from BAR - 2000 is being played
    played_silence = out.read_position - (BAR - 2000)
    feeder.feed()  # it counts what the callback has played when it next looks
    assert played_silence > 0 and feeder.silence_played >= played_silence
    safe = out.read_position + feeder.in_flight
    ring.write(BAR - 2000, audio[BAR - 2000 : 2 * BAR + 1024])
    got = np.concatenate([got, play(out, feeder, 2200, 256)])
    assert not got[BAR - 2000 : safe].any()  # what was committed as silence played as silence
    assert feeder.silence_played == safe - (BAR - 2000)  # and counted, no more
    assert np.abs(got[safe]).max() < 0.01  # fresh audio from there, faded in from zero
    assert np.array_equal(got[safe + 240 :], audio[safe + 240 : len(got)])
    assert ring.underruns == 0


def test_fresh_audio_never_overwrites_a_replay_that_began_after_silence() -> None:
    """Silence fed (no bar yet), then the first bar completes with the stream still short of what
    was fed: the reader replays bar 0. Fresh audio written after that must not be copied over the
    replayed frames (a burst of fresh audio with hard edges inside the replay); fresh audio
    rejoins at bar 2's line, as after any underrun."""
    ring, out, feeder, audio = _first_bar_short_by(1000)
    got = play(out, feeder, BAR - 600, 256)
    assert feeder.fed > BAR  # silence fed past bar 1's line
    ring.write(BAR - 1000, audio[BAR - 1000 : BAR + 100])  # bar 0 complete; the stream ends before what was fed
    got = np.concatenate([got, play(out, feeder, 1024, 256)])
    assert ring.replaying and ring.underruns == 1
    committed = out.read_position + feeder.in_flight  # past it, the C ring holds what the feeder chose
    ring.write(BAR + 100, audio[BAR + 100 : 2 * BAR + 1024])  # the rest arrives, through bar 2's line
    got = np.concatenate([got, play(out, feeder, 2 * BAR + 512 - len(got), 256)])
    assert ring.rejoins == 1 and ring.rejoined_at == 2 * BAR
    seg = slice(committed, 2 * BAR)
    assert np.array_equal(got[seg], audio[seg.start - BAR : seg.stop - BAR])  # bar 0 again, bar-aligned
    assert np.array_equal(got[2 * BAR + 240 :], audio[2 * BAR + 240 : len(got)])


def test_resampled_silence_with_no_bar_to_loop_counts_in_device_frames() -> None:
    """At 44.1 kHz the feeder resamples what it reads `lead` ahead: zeros it reads for want of
    audio (the first bar not complete) count as the status's silence, in the device's frames."""
    ring = PlaybackRing(capacity=1 << 17)
    ring.reset(0)
    for k in range(3):
        ring.publish_bar(k * BAR)
    ring.write(0, noise(BAR - 2048))
    out = OutputRing(1 << 14, CHANNELS, fade_frames=1)
    feeder = OutputFeeder(ring, out, blocksize=256, finished=threading.Event(), device_rate=44_100)
    feeder.feed()
    out.arm()
    play(out, feeder, 6144, 256)  # 44.1 kHz frames: past what was written (3720 of them)
    zeros = feeder.position - (BAR - 2048)  # 48 kHz samples read past the end
    assert zeros > 0 and feeder.silence_played == pytest.approx(zeros * 44_100 / 48_000, abs=zeros // 256 + 1)  # rounded down once a 256-sample chunk
    assert ring.underruns == 0
