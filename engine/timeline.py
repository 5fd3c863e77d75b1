"""The bar grid: where every bar and beat starts, as integer samples, without drift.

A timeline is a list of tempo segments. Each segment has an integer sample origin and
places beat j at ``origin + round((j - origin_beat) * beat_length)``, with
``beat_length`` an exact `Fraction`. Positions are never summed from floats, so bar
10,000 is exactly where bar 0 said it would be. Rounding is half-up.

Timelines are immutable: a tempo or meter change returns a new timeline that the owner
(the scheduler) swaps in whole.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from fractions import Fraction

from engine.units import SAMPLE_RATE

BPM_RANGE = (20.0, 400.0)
BEATS_PER_BAR_RANGE = (1, 32)
_HALF = Fraction(1, 2)


def round_half_up(x: Fraction) -> int:
    """Round an exact rational to the nearest integer, halves upwards."""
    return math.floor(x + _HALF)


def as_bpm(bpm: float | Fraction | str) -> Fraction:
    """Exact tempo from a float, a decimal string or a Fraction, checked against the range."""
    try:
        value = Fraction(str(bpm)) if isinstance(bpm, float) else Fraction(bpm)
    except (ValueError, ZeroDivisionError) as err:
        raise ValueError(f"tempo must be in {BPM_RANGE[0]}..{BPM_RANGE[1]} BPM, got {bpm!r}") from err
    if not (BPM_RANGE[0] <= value <= BPM_RANGE[1]):
        raise ValueError(f"tempo must be in {BPM_RANGE[0]}..{BPM_RANGE[1]} BPM, got {float(value)}")
    return value


def check_meter(beats_per_bar: int) -> int:
    lo, hi = BEATS_PER_BAR_RANGE
    if int(beats_per_bar) != beats_per_bar or not (lo <= beats_per_bar <= hi):
        raise ValueError(f"beats per bar must be an integer in {lo}..{hi}, got {beats_per_bar}")
    return int(beats_per_bar)


@dataclass(frozen=True, slots=True)
class Segment:
    """A stretch of constant tempo and meter starting on a bar line at `origin` samples."""

    origin: int
    origin_bar: int
    origin_beat: int
    bpm: Fraction
    beats_per_bar: int
    sample_rate: int = SAMPLE_RATE

    @property
    def beat_length(self) -> Fraction:
        return Fraction(60 * self.sample_rate) / self.bpm

    @property
    def bar_length(self) -> Fraction:
        return self.beat_length * self.beats_per_bar

    def beat_start(self, beat: int) -> int:
        return self.origin + round_half_up((beat - self.origin_beat) * self.beat_length)

    def beat_at(self, sample: int) -> int:
        """The beat whose start is the last one at or before `sample`."""
        beat = self.origin_beat + math.floor((sample - self.origin) / self.beat_length)
        while self.beat_start(beat + 1) <= sample:  # correct for rounding at the edge
            beat += 1
        while self.beat_start(beat) > sample:
            beat -= 1
        return beat


@dataclass(frozen=True, slots=True)
class Timeline:
    """Tempo segments in order; bar and beat numbers count from transport start (0)."""

    segments: tuple[Segment, ...]

    @classmethod
    def start(
        cls,
        bpm: float | Fraction | str,
        beats_per_bar: int = 4,
        *,
        origin: int = 0,
        sample_rate: int = SAMPLE_RATE,
    ) -> Timeline:
        segment = Segment(origin, 0, 0, as_bpm(bpm), check_meter(beats_per_bar), sample_rate)
        return cls((segment,))

    # -- lookup ---------------------------------------------------------------------
    def _segment_for_bar(self, bar: int) -> Segment:
        index = bisect.bisect_right([s.origin_bar for s in self.segments], bar) - 1
        return self.segments[max(index, 0)]

    def _segment_for_beat(self, beat: int) -> Segment:
        index = bisect.bisect_right([s.origin_beat for s in self.segments], beat) - 1
        return self.segments[max(index, 0)]

    def _segment_for_sample(self, sample: int) -> Segment:
        index = bisect.bisect_right([s.origin for s in self.segments], sample) - 1
        return self.segments[max(index, 0)]

    @property
    def origin(self) -> int:
        return self.segments[0].origin

    def segment_at(self, sample: int) -> Segment:
        return self._segment_for_sample(sample)

    def bar_first_beat(self, bar: int) -> int:
        seg = self._segment_for_bar(bar)
        return seg.origin_beat + (bar - seg.origin_bar) * seg.beats_per_bar

    def bar_start(self, bar: int) -> int:
        """First sample of `bar` (global bar number)."""
        seg = self._segment_for_bar(bar)
        return seg.beat_start(seg.origin_beat + (bar - seg.origin_bar) * seg.beats_per_bar)

    def beat_start(self, beat: int) -> int:
        """First sample of `beat` (global beat number)."""
        return self._segment_for_beat(beat).beat_start(beat)

    def bar_length(self, bar: int) -> int:
        return self.bar_start(bar + 1) - self.bar_start(bar)

    def beat_at(self, sample: int) -> int:
        return self._segment_for_sample(sample).beat_at(sample)

    def bar_at(self, sample: int) -> int:
        """The bar that `sample` lies in (negative before the origin)."""
        seg = self._segment_for_sample(sample)
        beat = seg.beat_at(sample)
        return seg.origin_bar + (beat - seg.origin_beat) // seg.beats_per_bar

    def beats_in_bar(self, bar: int) -> int:
        return self._segment_for_bar(bar).beats_per_bar

    def tempo_at(self, sample: int) -> Fraction:
        return self._segment_for_sample(sample).bpm

    def next_boundary(self, sample: int, quantize: str) -> int:
        """First `now`/`beat`/`bar` boundary at or after `sample`."""
        if quantize == "now":
            return sample
        if quantize == "beat":
            beat = self.beat_at(sample)
            start = self.beat_start(beat)
            return start if start == sample else self.beat_start(beat + 1)
        if quantize == "bar":
            bar = self.bar_at(sample)
            start = self.bar_start(bar)
            return start if start == sample else self.bar_start(bar + 1)
        raise ValueError(f"quantize must be one of now, beat, bar, got {quantize!r}")

    # -- changes --------------------------------------------------------------------
    def with_change(
        self,
        *,
        at_bar: int | None = None,
        at_beat: int | None = None,
        bpm: float | Fraction | str | None = None,
        beats_per_bar: int | None = None,
        origin: int | None = None,
    ) -> Timeline:
        """A new timeline whose tempo/meter change starts a segment at a bar line or beat.

        A change at a beat inside a bar cuts that bar short: the beat becomes bar 1 of
        the new segment's count (the next global bar number). `origin` places the new
        segment's first beat at a given sample instead of where the old grid puts it:
        external clocks use it to correct phase as well as tempo.
        """
        if (at_bar is None) == (at_beat is None):
            raise ValueError("give exactly one of at_bar or at_beat")
        if at_bar is not None:
            beat = self.bar_first_beat(at_bar)
            bar = at_bar
        else:
            beat = int(at_beat)  # type: ignore[arg-type]
            bar = self.bar_at(self.beat_start(beat))
            if self.bar_first_beat(bar) != beat:
                bar += 1
        old = self._segment_for_beat(beat)
        if origin is None:
            origin = self.beat_start(beat)
        elif origin <= old.origin and old is not self.segments[0]:
            raise ValueError(f"a new segment must start after {old.origin}, got {origin}")
        new = Segment(
            origin=origin,
            origin_bar=bar,
            origin_beat=beat,
            bpm=old.bpm if bpm is None else as_bpm(bpm),
            beats_per_bar=old.beats_per_bar if beats_per_bar is None else check_meter(beats_per_bar),
            sample_rate=old.sample_rate,
        )
        kept = tuple(s for s in self.segments if s.origin < origin)
        return Timeline(kept + (new,))
