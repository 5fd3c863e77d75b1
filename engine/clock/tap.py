"""Tap tempo (the average interval of the last few taps) and tempo ramps in bar steps.

A tap can come from a note, a CC or an OSC message; the control layer calls `tap(t)`
with the arrival time, so this module knows nothing about where taps come from.
"""

from __future__ import annotations

import logging
from collections import deque
from fractions import Fraction

from engine.ratelog import RateLimitedLog
from engine.timeline import BPM_RANGE, Timeline

logger = logging.getLogger(__name__)
SAME_TAP_S = 0.05  # a tap this soon after the one before is that tap (a bouncing switch, two pads struck together)


class TapTempo:
    """Collect taps; report a tempo once two taps less than `reset_after` apart arrived."""

    def __init__(self, *, taps: int = 4, reset_after: float = 2.0) -> None:
        if not 2 <= taps <= 32:
            raise ValueError(f"taps must be in 2..32, got {taps}")
        if not 0.15 < reset_after <= 10.0:
            raise ValueError(f"reset_after must be in 0.15..10 s, got {reset_after}")
        self.reset_after = reset_after
        self._times: deque[float] = deque(maxlen=taps)
        self._log = RateLimitedLog(logger)

    def tap(self, t: float) -> float | None:
        """Register a tap at monotonic time `t`; the tempo in BPM, or None if not known yet.

        Runs on the control thread. A gap longer than `reset_after` starts a new series; one
        shorter than SAME_TAP_S is the tap before again (ignored: taps stamped alike divided
        by zero); a tempo outside the timeline's range is reported (rate-limited) and not returned.
        """
        if self._times and 0 <= t - self._times[-1] < SAME_TAP_S:
            return None
        if self._times and (t - self._times[-1] > self.reset_after or t < self._times[-1]):
            self._times.clear()
        self._times.append(t)
        if len(self._times) < 2:
            return None
        bpm = 60.0 * (len(self._times) - 1) / (self._times[-1] - self._times[0])
        if not BPM_RANGE[0] <= bpm <= BPM_RANGE[1]:
            self._log.warn("range", "tap tempo %.1f BPM is outside %s..%s BPM; ignored", bpm, *BPM_RANGE)
            self._times.clear()
            self._times.append(t)
            return None
        return bpm


def ramp(timeline: Timeline, *, to_bpm: float, from_bar: int, bars: int) -> Timeline:
    """A ramp in bar steps: bar `from_bar + i` plays at start + (to - start) * (i + 1) / bars."""
    if bars < 1:
        raise ValueError(f"a ramp needs at least 1 bar, got {bars}")
    start = timeline.tempo_at(timeline.bar_start(from_bar))
    target = Fraction(round(to_bpm, 3)).limit_denominator(1000)
    for i in range(bars):
        timeline = timeline.with_change(at_bar=from_bar + i, bpm=start + (target - start) * (i + 1) / bars)
    return timeline
