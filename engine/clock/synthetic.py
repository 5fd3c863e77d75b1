"""Synthetic MIDI clock streams with known truth, for tests, benchmarks and self-checks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import mido
import numpy as np

from engine.clock.estimate import PPQN


@dataclass(frozen=True, slots=True)
class ClockStream:
    """Timestamped messages as they would arrive, and the true time of every song tick."""

    events: list[tuple[float, mido.Message]]
    tick_times: np.ndarray

    def beat_time(self, beat: int) -> float:
        return float(self.tick_times[beat * PPQN])


def clock_stream(
    *,
    bpm: float | Callable[[int], float],
    ticks: int,
    t0: float = 10.0,
    jitter: float = 0.0,
    seed: int = 0,
    preroll_ticks: int = 0,
    dropout: tuple[int, int] | None = None,
    wander: float = 0.0,
) -> ClockStream:
    """A Start message, then `ticks` clocks (song tick 0 first) at `bpm` (constant or per tick).

    `jitter` adds uniform noise of +/- that many seconds to each arrival time; `wander` makes
    each interval up to +/- that fraction longer or shorter, the sender's time error adding up
    (a random walk, as jack_midi_clock -J sends); `preroll_ticks` clocks arrive before Start (as
    a stopped sequencer sends them); `dropout=(first, last)` leaves out song ticks
    first..last-1, the sender keeping time meanwhile.
    """
    tempo = bpm if callable(bpm) else (lambda _k, _b=float(bpm): _b)
    total = preroll_ticks + ticks
    periods = np.array([60.0 / (tempo(k - preroll_ticks) * PPQN) for k in range(total)])
    rng = np.random.default_rng(seed)
    if wander:
        periods *= 1.0 + rng.uniform(-wander, wander, size=total)
    times = t0 + np.concatenate(([0.0], np.cumsum(periods[:-1])))
    arrivals = times + rng.uniform(-jitter, jitter, size=total) if jitter else times
    events: list[tuple[float, mido.Message]] = []
    for i in range(total):
        song = i - preroll_ticks
        if song == 0:
            events.append((float(arrivals[i] - periods[i] / 2), mido.Message("start")))
        if dropout is not None and dropout[0] <= song < dropout[1]:
            continue
        events.append((float(arrivals[i]), mido.Message("clock")))
    events.sort(key=lambda e: e[0])
    return ClockStream(events=events, tick_times=times[preroll_ticks:])


def ramp(start_bpm: float, end_bpm: float, *, over_ticks: int, after: int = 0) -> Callable[[int], float]:
    """Tempo per song tick: steady, then a linear ramp over `over_ticks`, then steady."""

    def tempo(k: int) -> float:
        x = min(max((k - after) / over_ticks, 0.0), 1.0)
        return start_bpm + (end_bpm - start_bpm) * x

    return tempo


def jump(before_bpm: float, after_bpm: float, *, at: int) -> Callable[[int], float]:
    """Tempo per song tick: a sudden change at song tick `at`."""
    return lambda k: before_bpm if k < at else after_bpm
