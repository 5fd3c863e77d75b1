from fractions import Fraction

import pytest

from engine.timeline import Timeline, round_half_up

TEMPOS = ["91.3", "120", "127", "133.33", "174"]


@pytest.mark.parametrize("bpm", TEMPOS)
def test_bar_k_starts_exactly_at_rounded_k_times_bar_length(bpm: str) -> None:
    timeline = Timeline.start(bpm, 4)
    bar_length = Fraction(4 * 60 * 48000) / Fraction(bpm)
    for k in range(0, 10_001):
        assert timeline.bar_start(k) == round_half_up(k * bar_length)
    assert timeline.bar_start(10_000) == round_half_up(10_000 * bar_length)


def test_frames_per_bar_are_not_whole_at_these_tempos() -> None:
    # The tempos above are chosen so that bars are not a whole number of 1920-sample frames.
    fractional = [bpm for bpm in TEMPOS if (Fraction(4 * 60 * 48000) / Fraction(bpm) / 1920).denominator != 1]
    assert set(fractional) == {"91.3", "127", "133.33", "174"}


def test_bar_and_beat_lookup_invert_starts() -> None:
    timeline = Timeline.start("133.33", 3)
    for bar in range(200):
        start = timeline.bar_start(bar)
        assert timeline.bar_at(start) == bar
        assert timeline.bar_at(start - 1) == bar - 1
        assert timeline.beat_at(start) == 3 * bar


def test_tempo_change_starts_a_segment_on_a_bar_line() -> None:
    timeline = Timeline.start(120, 4).with_change(at_bar=5, bpm=90)
    assert timeline.bar_start(5) == 5 * 96000
    assert timeline.bar_start(6) - timeline.bar_start(5) == 128000
    assert timeline.bar_start(4) == 4 * 96000  # history unchanged
    assert timeline.tempo_at(timeline.bar_start(5)) == 90


def test_meter_change_at_a_beat_cuts_the_bar_short() -> None:
    timeline = Timeline.start(120, 4).with_change(at_beat=10, beats_per_bar=3)  # beat 10 = bar 2, beat 3
    assert timeline.bar_start(3) == 10 * 24000  # the beat became a bar line
    assert timeline.bar_length(2) == 2 * 24000  # bar 2 was cut to two beats
    assert timeline.bar_length(3) == 3 * 24000


def test_explicit_origin_shifts_phase() -> None:
    timeline = Timeline.start(120, 4).with_change(at_bar=2, origin=2 * 96000 + 37)
    assert timeline.bar_start(2) == 192037
    assert timeline.bar_start(3) == 288037


@pytest.mark.parametrize("bad", [0, 19.9, 401, float("nan")])
def test_out_of_range_tempo_is_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="tempo must be in"):
        Timeline.start(bad, 4)


def test_next_boundary() -> None:
    timeline = Timeline.start(120, 4)
    assert timeline.next_boundary(1, "beat") == 24000
    assert timeline.next_boundary(24000, "beat") == 24000
    assert timeline.next_boundary(1, "bar") == 96000
    assert timeline.next_boundary(5, "now") == 5
