"""Turn a clock estimate into Timeline updates: re-fit upcoming bars when the estimate moves.

Bars not planned yet are moved, and (with rollback) bars generated but not played when the
clock moved further; audio already playing stays where it is. Changes land on a bar line
(`at_bar`): `Timeline.with_change(at_beat=...)` inside a bar would start a new bar there and
break the bar count that MIDI clock and Link share with the band. The bar that starts where planning stands (`planned_until`) absorbs the phase
correction: it ends where the clock says the next bar starts (where planning stands again).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

from engine.clock.estimate import ClockEstimate
from engine.timeline import BEATS_PER_BAR_RANGE, BPM_RANGE, Segment, Timeline
from engine.units import FRAME_SAMPLES

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Refit:
    """A new Timeline for the scheduler, different from the old one from bar line `at` on."""

    timeline: Timeline
    at: int
    """Where the scheduler plans again: `planned_until`, or with rollback a bar line before it."""


class TimelineFollower:
    """Keeps the engine's Timeline on an external clock's grid, within tolerances.

    Two pairs of them, because moving a bar costs nothing before it is planned and a
    generator's work after. Bars not planned yet follow the estimate closely
    (`phase_tolerance`, `tempo_tolerance`): a bar line is fixed when the bar before it is
    planned, a bar and the look-ahead before it plays, and whatever it is off then is heard.
    With 2 ms there as well, a bar line could stand 2 ms further off than the follower's
    estimate (on the sample-exact clock of the soak the engine's ticks sat 2.00 ms off for a
    bar after a restart; the soak allows 2 ms at p99). Bars already generated (with rollback,
    from `replan_from`) are planned again only past the wider `rollback_phase_tolerance` and
    `rollback_tempo_tolerance`: that throws their audio away.
    """

    def __init__(
        self,
        *,
        beats_per_bar: int = 4,
        phase_tolerance: float = 0.00025,
        tempo_tolerance: float = 0.005,
        rollback_phase_tolerance: float = 0.002,
        rollback_tempo_tolerance: float = 0.05,
        sample_rate: int = 48_000,
        min_bar: int = FRAME_SAMPLES,
    ) -> None:
        self.beats_per_bar = beats_per_bar
        self.phase_tolerance = phase_tolerance
        self.tempo_tolerance = tempo_tolerance
        self.rollback_phase_tolerance = rollback_phase_tolerance
        self.rollback_tempo_tolerance = rollback_tempo_tolerance
        self.sample_rate = sample_rate
        self.min_bar = min_bar
        """The shortest bar the absorbing bar may be cut to (one generator frame)."""
        self.epoch: int | None = None
        """The estimate epoch whose song grid the timeline follows."""

    def song_grid(self, estimate: ClockEstimate, *, time_to_sample: Callable[[float], float]) -> Timeline:
        """The clock's own bar grid: bar k starts at song beat k * beats_per_bar.

        Taking it marks the estimate's epoch as followed.
        """
        self.epoch = estimate.epoch
        bpm = Fraction(round(estimate.tempo_bpm, 3)).limit_denominator(1000)
        origin = round(time_to_sample(estimate.beat_time(0)))
        return Timeline.start(bpm, self.beats_per_bar, origin=origin, sample_rate=self.sample_rate)

    def update(
        self,
        estimate: ClockEstimate | None,
        timeline: Timeline,
        *,
        planned_until: int,
        replan_from: int | None = None,
        time_to_sample: Callable[[float], float],
    ) -> Refit | None:
        """A re-fit when the estimate disagrees with `timeline`, else None.

        Runs on the scheduler thread. `planned_until` is the bar line where audio not yet
        planned starts; `replan_from` (default `planned_until`) the earliest bar line the
        scheduler can plan again from (rollback). After a transport (re)start or relocation
        (a new estimate epoch) the result is the song grid (`song_grid`) from its first bar at
        least `min_bar` after `replan_from`, with one bridging bar before it; otherwise the
        first bar that starts after `replan_from` (by `min_bar`) in both grids moves to where
        the estimate puts it if it is off by the rollback tolerances, else the first after
        `planned_until` if it is off by the others.
        """
        if estimate is None or not estimate.running:
            return None
        replan = planned_until if replan_from is None else replan_from
        if estimate.epoch != self.epoch:
            song = self.song_grid(estimate, time_to_sample=time_to_sample)
            return Refit(bridge(song, from_sample=replan, min_bar=self.min_bar), replan)
        if replan < planned_until:
            new = self._refit(estimate, timeline, replan, self.rollback_phase_tolerance, self.rollback_tempo_tolerance,
                              time_to_sample)
            if new is not None:
                return Refit(new, replan)
        new = self._refit(estimate, timeline, planned_until, self.phase_tolerance, self.tempo_tolerance, time_to_sample)
        return None if new is None else Refit(new, planned_until)

    def _refit(self, estimate: ClockEstimate, timeline: Timeline, after: int, phase_tolerance: float,
               tempo_tolerance: float, time_to_sample: Callable[[float], float]) -> Timeline | None:
        """`timeline` with its first bar starting after `after` (by `min_bar`) where the estimate
        puts it, and the estimate's tempo from there, when either is off by more than the tolerance."""
        bpm = Fraction(round(estimate.tempo_bpm, 3)).limit_denominator(1000)
        bar = timeline.bar_at(after)
        while True:
            beat = timeline.bar_first_beat(bar)
            predicted = round(time_to_sample(estimate.beat_time(beat)))
            if timeline.bar_start(bar) > after and predicted >= after + self.min_bar:
                break
            bar += 1
        have = timeline.bar_start(bar)
        tempo_off = abs(float(timeline.tempo_at(have)) - estimate.tempo_bpm)
        phase_off = abs(predicted - have) / self.sample_rate
        if phase_off <= phase_tolerance and tempo_off <= tempo_tolerance:
            return None
        # Segments starting at or after this bar are not planned yet: drop and re-plan them.
        kept = tuple(s for s in timeline.segments if s.origin_bar < bar) or timeline.segments[:1]
        logger.debug("re-fit from bar %d: phase %.2f ms, tempo %.3f BPM off", bar, phase_off * 1e3, tempo_off)
        # the meter the bar had (not the kept segment's: a bridging bar has its own count of beats)
        return Timeline(kept).with_change(at_bar=bar, bpm=bpm, origin=predicted, beats_per_bar=timeline.beats_in_bar(bar))


def bridge(song: Timeline, *, from_sample: int, min_bar: int) -> Timeline:
    """`song` from its first bar at least `min_bar` after `from_sample`, led in by one bar from `from_sample`.

    The bridging bar keeps the song's bar and beat numbers (it is the song bar before, its
    beats the song's last ones before that bar line), so the grid after it is the clock's and
    later estimates compare beat for beat. It is whole beats, as many as fit nearest, at the
    tempo that fills it exactly: at the song's tempo it would end in a piece of a beat, which
    the fitter cannot play as a beat (a beat line 9 ms, or half a beat, before the song's bar
    line), and the bar line after it was heard that far off (measured live after a Continue).
    """
    bar = song.bar_at(from_sample + min_bar)
    first = song.segments[0]
    while song.bar_start(bar) < from_sample + min_bar or song.bar_start(bar) - from_sample < 0.75 * first.beat_length:
        bar += 1  # at least three quarters of a beat: whole beats then stay within 4/3 of the song's tempo
    length = song.bar_start(bar) - from_sample
    beats = min(max(1, round(length / first.beat_length)), BEATS_PER_BAR_RANGE[1])
    while beats > 1 and 60 * first.sample_rate * beats / length > BPM_RANGE[1]:
        beats -= 1
    while beats < BEATS_PER_BAR_RANGE[1] and 60 * first.sample_rate * beats / length < BPM_RANGE[0]:
        beats += 1
    lead = Segment(origin=from_sample, origin_bar=bar - 1, origin_beat=song.bar_first_beat(bar) - beats,
                   bpm=Fraction(60 * first.sample_rate * beats, length), beats_per_bar=beats,
                   sample_rate=first.sample_rate)
    start = Segment(origin=song.bar_start(bar), origin_bar=bar, origin_beat=song.bar_first_beat(bar),
                    bpm=first.bpm, beats_per_bar=first.beats_per_bar, sample_rate=first.sample_rate)
    return Timeline((lead, start))
