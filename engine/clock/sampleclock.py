"""The audio sink's sample counter as seen from monotonic time: the engine's clock of record."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from engine.units import SAMPLE_RATE


@dataclass(frozen=True, slots=True)
class SampleClock:
    """Sample `sample` of the output stream plays at monotonic time `time` (seconds).

    The sink publishes a fresh one from its non-real-time side (e.g. once per block
    reported by the stream's time info); readers convert with it and never sleep.
    """

    sample: int
    time: float
    sample_rate: int = SAMPLE_RATE

    def time_of(self, sample: float) -> float:
        return self.time + (sample - self.sample) / self.sample_rate

    def sample_at(self, t: float) -> float:
        return self.sample + (t - self.time) * self.sample_rate


class SampleClockTracker:
    """Derives the sink's SampleClock from playhead observations, without touching the sink.

    The sink advances its playhead a block at a time on its own thread; the engine loop
    reads it every few milliseconds. An observation (playhead p seen at time t) means the
    block before p was taken, so sample p - block started playing at or before t and
    `t - (p - block) / rate` is never below the true offset: the smallest such value over the last `window` seconds is the clock, accurate
    to the loop's best wake-up latency. The window lets it follow a device whose rate
    differs slightly from time.monotonic()'s, at an error below rate error x window.
    """

    def __init__(self, *, sample_rate: int = SAMPLE_RATE, window: float = 1.0) -> None:
        self.sample_rate = sample_rate
        self.window = window
        self._points: deque[tuple[float, float]] = deque()  # (t, t - p / rate), offsets increasing
        self.clock: SampleClock | None = None

    def observe(self, playhead: int, t: float, *, block: int) -> SampleClock | None:
        """Record playhead `playhead` (read before `t`) seen at monotonic `t`; the engine loop thread.

        `block` is the sink's block size; None until the sink has taken a block.
        """
        if playhead < block:
            return self.clock
        offset = t - (playhead - block) / self.sample_rate
        points = self._points
        while points and points[-1][1] >= offset:
            points.pop()
        points.append((t, offset))
        while points[0][0] < t - self.window:
            points.popleft()
        best = points[0][1]
        self.clock = SampleClock(sample=playhead, time=best + playhead / self.sample_rate, sample_rate=self.sample_rate)
        return self.clock
