"""Estimates turned into Timeline re-fits: only ungenerated bars move, bar lines land on beats."""

from __future__ import annotations

import pytest

from engine.clock import ClockEstimate, MidiClockFollower, SampleClock, TimelineFollower
from engine.clock.synthetic import clock_stream, jump
from engine.clock.timeline_follow import bridge
from engine.timeline import Timeline
from engine.units import FRAME_SAMPLES

SR = 48_000
SINK = SampleClock(sample=0, time=10.0)  # sample 0 of the output plays at monotonic 10.0 s


def estimate(bpm: float, *, beat0: float = 10.0, epoch: int = 1, state: str = "running") -> ClockEstimate:
    return ClockEstimate(tempo_bpm=bpm, ref_time=beat0, ref_tick=0.0, state=state, last_clock_age=0.0, epoch=epoch)  # type: ignore[arg-type]


def test_first_estimate_of_an_epoch_starts_a_song_grid() -> None:
    follower = TimelineFollower(beats_per_bar=4)
    refit = follower.update(estimate(120.0, beat0=10.5), Timeline.start(100), planned_until=0, time_to_sample=SINK.sample_at)
    assert refit is not None and refit.at == 0
    new = refit.timeline
    assert new.bar_start(0) == 24_000 and new.bar_start(3) == 24_000 + 3 * 96_000
    assert follower.update(estimate(120.0, beat0=10.5), new, planned_until=0, time_to_sample=SINK.sample_at) is None


def test_a_moved_estimate_refits_from_the_first_ungenerated_bar_only() -> None:
    follower = TimelineFollower(beats_per_bar=4)
    grid = follower.update(estimate(120.0), Timeline.start(120), planned_until=0, time_to_sample=SINK.sample_at).timeline  # type: ignore[union-attr]
    moved = estimate(121.0, beat0=10.0)
    refit = follower.update(moved, grid, planned_until=100_000, time_to_sample=SINK.sample_at)
    assert refit is not None and refit.at == 100_000
    new = refit.timeline
    assert new.bar_start(1) == grid.bar_start(1)  # generated: untouched
    assert new.bar_start(2) == round(SINK.sample_at(moved.beat_time(8)))
    assert new.bar_start(3) - new.bar_start(2) == round(4 * 60 / 121 * SR)
    assert new.bar_at(new.bar_start(2)) == 2  # the bar count is the song's


def test_small_moves_within_tolerance_leave_the_timeline_alone() -> None:
    follower = TimelineFollower(beats_per_bar=4, phase_tolerance=0.002, tempo_tolerance=0.05)
    grid = follower.update(estimate(120.0), Timeline.start(120), planned_until=0, time_to_sample=SINK.sample_at).timeline  # type: ignore[union-attr]
    nudged = estimate(120.01, beat0=10.0005)
    assert follower.update(nudged, grid, planned_until=50_000, time_to_sample=SINK.sample_at) is None
    assert follower.update(estimate(120.0, state="lost"), grid, planned_until=0, time_to_sample=SINK.sample_at) is None


def test_an_unplanned_bar_follows_a_small_move_and_a_generated_one_only_a_large_one() -> None:
    """Moving a bar not planned yet is free, so a 0.5 ms move re-fits it (a 2 ms tolerance there
    left bar lines up to 2 ms further off than the follower's estimate); a bar already
    generated (with rollback: `replan_from` before `planned_until`) is planned again only past
    2 ms, and then from `replan_from`."""
    follower = TimelineFollower(beats_per_bar=4)
    grid = follower.update(estimate(120.0), Timeline.start(120), planned_until=0, time_to_sample=SINK.sample_at).timeline  # type: ignore[union-attr]
    small = follower.update(estimate(120.0, beat0=10.0005), grid, planned_until=192_000, replan_from=96_000,
                            time_to_sample=SINK.sample_at)
    assert small is not None and small.at == 192_000  # no rollback for half a millisecond
    assert small.timeline.bar_start(2) == grid.bar_start(2)  # planned: untouched
    assert small.timeline.bar_start(3) == grid.bar_start(3) + 24  # the first unplanned bar line, 0.5 ms later
    large = follower.update(estimate(120.0, beat0=10.003), grid, planned_until=192_000, replan_from=96_000,
                            time_to_sample=SINK.sample_at)
    assert large is not None and large.at == 96_000
    assert large.timeline.bar_start(1) == grid.bar_start(1) and large.timeline.bar_start(2) == grid.bar_start(2) + 144


def test_following_a_tempo_jump_keeps_bar_lines_on_the_clock() -> None:
    """End to end: clock stream -> follower -> re-fitted timeline; bar starts vs true beats."""
    stream = clock_stream(bpm=jump(120.0, 140.0, at=24 * 32), ticks=24 * 64 + 1, jitter=0.002, seed=5)
    clock, follower = MidiClockFollower(), TimelineFollower(beats_per_bar=4)
    timeline = Timeline.start(120)
    lookahead = 0.5
    for t, msg in stream.events:
        clock.feed(msg, t)
        refit = follower.update(clock.estimate(t), timeline, planned_until=round(SINK.sample_at(t + lookahead)),
                                time_to_sample=SINK.sample_at)
        timeline = refit.timeline if refit else timeline
    for bar in range(2, 16):
        if bar in (8, 9):  # the jump is at bar 8: audio generated before it was known keeps the old grid
            continue
        err = timeline.bar_start(bar) / SR + SINK.time - stream.beat_time(4 * bar)
        assert abs(err) < 0.005, f"bar {bar} off by {err * 1e3:.2f} ms"


@pytest.mark.parametrize("from_sample", [1_000, 30_000, 61_000, 66_000, 80_000, 95_900])
def test_the_bridging_bar_is_whole_beats_ending_on_the_songs_bar_line(from_sample: int) -> None:
    """A relocation's bridging bar (from a bar line of the old grid to the song's next bar line)
    is whole beats, so no piece of a beat is left for the fitter to play (it cannot: the bar line
    after it was heard 9.4 ms early or 95 ms late, tests/clock/test_song_position_live.py); its
    beats are the song's last ones before that line."""
    song = Timeline.start(120, 4)  # bars of 96,000 samples
    bridged = bridge(song, from_sample=from_sample, min_bar=FRAME_SAMPLES)  # the engine's margin
    lead, start = bridged.segments
    assert lead.origin == from_sample and start.origin == song.bar_start(start.origin_bar)
    assert bridged.bar_start(lead.origin_bar + 1) == start.origin  # the bar ends on the song's line...
    assert lead.beats_per_bar * lead.beat_length == start.origin - from_sample  # ...in whole beats
    assert lead.origin_beat + lead.beats_per_bar == song.bar_first_beat(start.origin_bar)
    assert 120 / 1.5 <= float(lead.bpm) <= 120 * 4 / 3  # near the song's tempo (a lead just before a line takes the next bar)
