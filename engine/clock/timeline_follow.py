"""Turn a clock estimate into Timeline updates: re-fit upcoming bars when the estimate moves.

Only bars that are not generated yet are touched, so audio already made stays where it is.
Changes land on a bar line (`at_bar`): `Timeline.with_change(at_beat=...)` inside a bar
would start a new bar there and break the bar count that MIDI clock and Link share with
the band.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from fractions import Fraction

from engine.clock.estimate import ClockEstimate
from engine.timeline import Timeline

logger = logging.getLogger(__name__)


class TimelineFollower:
    """Keeps the engine's Timeline on an external clock's grid, within tolerances."""

    def __init__(
        self,
        *,
        beats_per_bar: int = 4,
        phase_tolerance: float = 0.002,
        tempo_tolerance: float = 0.05,
        sample_rate: int = 48_000,
    ) -> None:
        self.beats_per_bar = beats_per_bar
        self.phase_tolerance = phase_tolerance
        self.tempo_tolerance = tempo_tolerance
        self.sample_rate = sample_rate
        self._epoch: int | None = None

    def update(
        self,
        estimate: ClockEstimate | None,
        timeline: Timeline,
        *,
        generated_until: int,
        time_to_sample: Callable[[float], float],
    ) -> Timeline | None:
        """A new Timeline when the estimate disagrees with `timeline`, else None.

        Runs on the scheduler thread. After a transport (re)start or relocation (a new
        estimate epoch) it returns a fresh Timeline whose bar numbers are the song's
        (bar k starts at song beat k * beats_per_bar); otherwise it changes the first bar
        that starts at or after `generated_until` in both the old grid and the estimate.
        """
        if estimate is None or not estimate.running:
            return None
        bpm = Fraction(round(estimate.tempo_bpm, 3)).limit_denominator(1000)
        if estimate.epoch != self._epoch:
            self._epoch = estimate.epoch
            origin = round(time_to_sample(estimate.beat_time(0)))
            return Timeline.start(bpm, self.beats_per_bar, origin=origin, sample_rate=self.sample_rate)
        bar = timeline.bar_at(generated_until)
        while True:
            beat = timeline.bar_first_beat(bar)
            predicted = round(time_to_sample(estimate.beat_time(beat)))
            if timeline.bar_start(bar) >= generated_until and predicted >= generated_until:
                break
            bar += 1
        have = timeline.bar_start(bar)
        tempo_off = abs(float(timeline.tempo_at(have)) - estimate.tempo_bpm)
        phase_off = abs(predicted - have) / self.sample_rate
        if phase_off <= self.phase_tolerance and tempo_off <= self.tempo_tolerance:
            return None
        # Segments starting at or after this bar are not generated yet: drop and re-plan them.
        kept = tuple(s for s in timeline.segments if s.origin_bar < bar) or timeline.segments[:1]
        logger.debug("re-fit from bar %d: phase %.2f ms, tempo %.3f BPM off", bar, phase_off * 1e3, tempo_off)
        return Timeline(kept).with_change(at_bar=bar, bpm=bpm, origin=predicted)
