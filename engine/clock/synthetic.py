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
    arrivals: np.ndarray | None = None
    """Arrival time of every song tick's clock as a receiver records it (NaN: dropped)."""

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
    late: tuple[float, float] | None = None,
    frame_rate: int | None = None,
    start_lead: float | None = None,
) -> ClockStream:
    """A Start message, then `ticks` clocks (song tick 0 first) at `bpm` (constant or per tick).

    `jitter` adds uniform noise of +/- that many seconds to each arrival time; `wander` makes
    each interval up to +/- that fraction longer or shorter, the sender's time error adding up
    (a random walk, as jack_midi_clock -J sends); `preroll_ticks` clocks arrive before Start (as
    a stopped sequencer sends them); `dropout=(first, last)` leaves out song ticks
    first..last-1, the sender keeping time meanwhile. `late=(seconds, probability)` delays
    that share of ticks by that much (a USB host's late poll); `frame_rate` rounds each
    sender time to a frame (a JACK sender); `start_lead` is how long before tick 0 Start
    comes (default half a period).
    """
    tempo = bpm if callable(bpm) else (lambda _k, _b=float(bpm): _b)
    total = preroll_ticks + ticks
    periods = np.array([60.0 / (tempo(k - preroll_ticks) * PPQN) for k in range(total)])
    rng = np.random.default_rng(seed)
    if wander:
        periods *= 1.0 + rng.uniform(-wander, wander, size=total)
    times = t0 + np.concatenate(([0.0], np.cumsum(periods[:-1])))
    if frame_rate:
        times = np.rint(times * frame_rate) / frame_rate
    arrivals = times + rng.uniform(-jitter, jitter, size=total) if jitter else times.copy()
    if late:
        arrivals += np.where(rng.random(size=total) < late[1], late[0], 0.0)
    events: list[tuple[float, mido.Message]] = []
    for i in range(total):
        song = i - preroll_ticks
        if song == 0:
            lead = periods[i] / 2 if start_lead is None else start_lead
            events.append((float(arrivals[i] - lead), mido.Message("start")))
        if dropout is not None and dropout[0] <= song < dropout[1]:
            arrivals[i] = np.nan
            continue
        events.append((float(arrivals[i]), mido.Message("clock")))
    events.sort(key=lambda e: e[0])
    return ClockStream(events=events, tick_times=times[preroll_ticks:], arrivals=arrivals[preroll_ticks:])


JACK_RATE = 48_000
JACK_PERIOD = 256


def jack_midi_clock(*, bpm: float | Callable[[int], float], ticks: int, jitter_percent: float, seed: int = 0,
                    **kw: object) -> ClockStream:
    """What x42's `jack_midi_clock -b BPM -J PERCENT` sends on a JACK server at 48 kHz.

    Modelled on its source (jack_midi_clock.c, `process`): each tick is due one interval
    after the last one's unrounded due time plus `randf() * jitter_level * interval`,
    `randf()` uniform in -1..1 (Park-Miller); it is written at the nearest frame. So -J
    makes the intervals vary by up to J %, the deviations adding up: a random walk of the
    phase around the nominal tempo, not white jitter. Start comes one cycle (256 frames)
    before the first tick (the transport goes Starting, then Rolling). Frames are exact
    seconds here (the engine converts JACK frames with `FrameTimebase`).
    """
    return clock_stream(bpm=bpm, ticks=ticks, seed=seed, wander=jitter_percent / 100.0, frame_rate=JACK_RATE,
                        start_lead=JACK_PERIOD / JACK_RATE, **kw)  # type: ignore[arg-type]


def usb_midi_clock(*, bpm: float | Callable[[int], float], ticks: int, seed: int = 0, **kw: object) -> ClockStream:
    """A clock through a USB MIDI interface: each tick +/- 1 ms (uniform) around its time,
    and 1 tick in 200 (about one every 2 s at 133 BPM) 5 ms late on top."""
    return clock_stream(bpm=bpm, ticks=ticks, seed=seed, jitter=0.001, late=(0.005, 1 / 200), **kw)  # type: ignore[arg-type]


def reference_tempo(arrivals: np.ndarray, upto: int, *, window: int = 8 * PPQN) -> float:
    """The issue's reference: BPM of the least-squares line through the recorded ticks
    `upto - window + 1 .. upto` (2 bars of 4/4 by default), dropped ticks (NaN) left out."""
    k = np.arange(max(0, upto - window + 1), upto + 1)
    t = arrivals[k]
    keep = ~np.isnan(t)
    slope = np.polyfit(k[keep].astype(np.float64), t[keep], 1)[0]
    return 60.0 / (slope * PPQN)


def ramp(start_bpm: float, end_bpm: float, *, over_ticks: int, after: int = 0) -> Callable[[int], float]:
    """Tempo per song tick: steady, then a linear ramp over `over_ticks`, then steady."""

    def tempo(k: int) -> float:
        x = min(max((k - after) / over_ticks, 0.0), 1.0)
        return start_bpm + (end_bpm - start_bpm) * x

    return tempo


def jump(before_bpm: float, after_bpm: float, *, at: int) -> Callable[[int], float]:
    """Tempo per song tick: a sudden change at song tick `at`."""
    return lambda k: before_bpm if k < at else after_bpm
