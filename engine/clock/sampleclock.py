"""The audio sink's sample counter as seen from monotonic time: the engine's clock of record."""

from __future__ import annotations

from dataclasses import dataclass

from engine.conditioning import SAMPLE_RATE


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
