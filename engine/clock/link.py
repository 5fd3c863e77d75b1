"""Ableton Link as a clock source, through the LinkPython-extern binding (import name `link`).

The binding is optional: it is imported only when a clock source asks for Link, and when
it is missing `open_link` raises `LinkUnavailable` with the install hint. Licence: the
wrapper is public domain (Unlicense); the Ableton Link library compiled into its wheel is
GPL-2.0-or-later (or a commercial licence from Ableton), so a distribution that bundles
the binding with backline (Apache-2.0) is distributed under GPL-3.0 as a whole. It is
therefore not a hard dependency.

Beat numbering: song beat j is Link beat j with quantum = beats per bar, so our bar lines
fall on Link phase 0. With start/stop sync, starting requests beat 0 at the start time,
which Link moves to the next bar line of the session when other peers are playing.
Link's clock is CLOCK_MONOTONIC_RAW on Linux; times are converted to the engine's clock
(`now`: `time.monotonic()`, or JACK's frame clock in seconds once the engine follows Link on
JACK, `ClockDriver.use_frames`) by sampling both clocks back to back on every call. On JACK's
frame clock the tempo is converted too: JACK's frames run at their own rate (a sound card's
crystal, a loaded dummy server: 74 ppm slow here once, about 270 ppm in CI), measured against Link's
clock by `ClockRate`, so that one estimate's beats stay on the session's beats in JACK frames
until the next, instead of drifting by that rate between refits.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from engine.clock.estimate import PPQN, ClockEstimate, ClockState
from engine.errors import BacklineError
from engine.timeline import as_bpm, check_meter

logger = logging.getLogger(__name__)


class LinkUnavailable(BacklineError):
    """The Ableton Link binding cannot be imported here."""


def load_binding() -> Any:
    """The `link` module of LinkPython-extern, or LinkUnavailable saying how to get it."""
    try:
        import link  # type: ignore[import-not-found]
    except ImportError as err:
        raise LinkUnavailable(
            f"Ableton Link is not available ({err}); install it with `pip install LinkPython-extern`"
        ) from err
    return link


def _line_through(pairs: tuple[tuple[float, float], ...]) -> tuple[float, float]:
    """(slope, root-mean-square residual) of the least-squares line through (x, y) `pairs`."""
    n = len(pairs)
    x0, y0 = pairs[0]  # from the first pair: squares of seconds since boot would lose digits
    mx = sum(x - x0 for x, _ in pairs) / n
    my = sum(y - y0 for _, y in pairs) / n
    slope = sum((x - x0 - mx) * (y - y0 - my) for x, y in pairs) / sum((x - x0 - mx) ** 2 for x, _ in pairs)
    return slope, math.sqrt(sum((y - y0 - my - (x - x0 - mx) * slope) ** 2 for x, y in pairs) / n)


class _Line(NamedTuple):
    pairs: tuple[tuple[float, float], ...]  # (Link seconds, engine seconds), oldest first
    rate: float  # the slope of the last window that was on a line


class ClockRate:
    """The engine's clock's rate against Link's: engine seconds elapsed per Link second.

    A least-squares line through the last `window` pairs of clock readings, one kept per
    `spacing` engine seconds (5 s of them by default), rather than a delay-locked loop: the
    pairs come at the loop's irregular times (and from status reads), which a line weighs
    alike whatever their spacing; it has no loop gain to tune, is unbiased for a constant rate
    (a crystal's, a loaded server's mean), and its residual says whether the clocks are on a
    line at all. Its slope is the rate once the pairs span `min_span` and lie within `max_rms`
    of it; else the last rate stays (1.0 at first: the phase alone is converted, as before).
    On a quiet dummy JACK server the pairs lay 0.006-0.04 ms off their line, the rate then
    good to a few ppm (CI's 270 ppm drifted a beat 2 ms in 16 beats at 127 BPM). Where the
    server is starved of CPU (the engine starting, other work) it loses cycles in bursts,
    ms off any line: a window over one had a slope 500-2700 ppm off JACK's rate on either
    side of it (0.2-1 ms off its line), which played the beats further off than no rate.
    A pair read across a preemption (its two engine readings `max_spread` apart) is not taken.

    `observe` runs on whichever thread converts a Link time (the scheduler thread; a status
    read): the window and its rate are one value swapped whole, no lock, and a pair lost when
    two threads observe at once costs nothing.
    """

    def __init__(self, *, window: int = 100, spacing: float = 0.05, min_span: float = 2.0,
                 max_rms: float = 0.0001, max_spread: float = 0.0005) -> None:
        self.window = window
        self.spacing = spacing
        self.min_span = min_span
        self.max_rms = max_rms
        self.max_spread = max_spread
        self._line = _Line((), 1.0)

    @property
    def rate(self) -> float:
        """Engine seconds per Link second (1.0 until measured)."""
        return self._line.rate

    def observe(self, link_s: float, engine_s: float, spread: float) -> None:
        """Add the pair read at Link time `link_s`, engine time `engine_s` (the mean of two
        readings `spread` apart around Link's)."""
        pairs, rate = self._line
        if pairs and engine_s < pairs[-1][1] - self.spacing:
            pairs = ()  # the clock went back: another clock (read as `use_clock` swapped it), start again
        elif spread > self.max_spread or (pairs and engine_s - pairs[-1][1] < self.spacing):
            return  # preempted mid-reading, or too soon (a frozen clock never gets past here)
        pairs = (*pairs[max(0, len(pairs) + 1 - self.window):], (link_s, engine_s))
        if pairs[-1][0] - pairs[0][0] >= self.min_span:
            slope, rms = _line_through(pairs)
            rate = slope if rms <= self.max_rms else rate
        self._line = _Line(pairs, rate)


class LinkClock:
    """One Link peer: follows the session tempo, phase and (optionally) start/stop."""

    def __init__(self, *, bpm: float, beats_per_bar: int = 4, start_stop_sync: bool = True, binding: Any = None) -> None:
        module = binding if binding is not None else load_binding()
        self.quantum = float(check_meter(beats_per_bar))
        self._link = module.Link(float(as_bpm(bpm)))
        self._clock = self._link.clock()
        self._link.startStopSyncEnabled = start_stop_sync
        self._sync = start_stop_sync
        self._epoch = 0
        self._was_playing = False
        self.now: Callable[[], float] = time.monotonic
        """The engine's clock every time `t` here is on (set by `use_clock`)."""
        self._rate: ClockRate | None = None  # on a clock of its own rate (JACK's frames): that rate

    def use_clock(self, now: Callable[[], float]) -> None:
        """Put every time `t` here on `now` (JACK's frame clock in seconds) from here on, and
        measure its rate against Link's to convert the session's tempo onto it too.

        Runs on the scheduler thread, before it asks for an estimate on the new clock.
        """
        self.now = now
        self._rate = ClockRate()

    def enable(self) -> None:
        """Join the network session (multicast discovery starts here, not before)."""
        self._link.enabled = True
        logger.info("Ableton Link enabled (quantum %g)", self.quantum)

    def close(self) -> None:
        self._link.enabled = False

    @property
    def peers(self) -> int:
        return int(self._link.numPeers())

    @property
    def session_tempo(self) -> float:
        """The session's tempo (BPM of Link's clock, what every peer shows); the estimate's is on `now`."""
        return float(self._link.captureAppSessionState().tempo())

    def _pair(self) -> tuple[float, float, float]:
        """(Link seconds, engine seconds (`now`), engine seconds per Link second), sampled now;
        the pair feeds the rate where one is measured."""
        before = self.now()
        micros = self._clock.micros()
        after = self.now()
        link_s, engine_s = micros / 1e6, (before + after) / 2
        rate = self._rate
        if rate is None:
            return link_s, engine_s, 1.0
        rate.observe(link_s, engine_s, after - before)
        return link_s, engine_s, rate.rate

    def _offset(self) -> float:
        """Link clock minus the engine's clock (`now`), in seconds, sampled now."""
        link_s, engine_s, _ = self._pair()
        return link_s - engine_s

    def _micros(self, t: float) -> int:
        """Link's clock in microseconds at engine time `t`."""
        link_s, engine_s, rate = self._pair()
        return round((link_s + (t - engine_s) / rate) * 1e6)

    def estimate(self, t: float) -> ClockEstimate:
        """Session tempo and phase at time `t` (the engine's clock, `now`). Runs on the scheduler thread."""
        state = self._link.captureAppSessionState()
        playing = state.isPlaying() if self._sync else True
        if playing and not self._was_playing:
            if self._sync:  # someone started: our beat 0 is the session's start time, on a bar line
                state.requestBeatAtStartPlayingTime(0.0, self.quantum)
                self._link.commitAppSessionState(state)
                state = self._link.captureAppSessionState()
            self._epoch += 1
        self._was_playing = playing
        link_s, engine_s, rate = self._pair()  # Link time L is engine time engine_s + (L - link_s) * rate
        micros = round((link_s + (t - engine_s) / rate) * 1e6)
        beat = math.floor(state.beatAtTime(micros, self.quantum))
        run_state: ClockState = "running" if playing else "stopped"
        return ClockEstimate(
            tempo_bpm=float(state.tempo()) / rate,  # beats per engine minute: a Link minute lasts `rate` of them
            ref_time=engine_s + (state.timeAtBeat(float(beat), self.quantum) / 1e6 - link_s) * rate,
            ref_tick=float(beat * PPQN),
            state=run_state,
            last_clock_age=0.0,
            epoch=self._epoch,
        )

    def propose_tempo(self, bpm: float, t: float) -> None:
        """Ask the session for a new tempo from time `t` (the engine's clock) on (peers follow)."""
        state = self._link.captureAppSessionState()
        state.setTempo(float(as_bpm(bpm)), self._micros(t))
        self._link.commitAppSessionState(state)

    def set_playing(self, playing: bool, t: float) -> None:
        """Start (beat 0 at the next bar line of the session) or stop the shared transport."""
        state = self._link.captureAppSessionState()
        state.setIsPlayingAndRequestBeatAtTime(playing, self._micros(t), 0.0, self.quantum)
        self._link.commitAppSessionState(state)

    def health(self, t: float) -> dict[str, object]:
        est = self.estimate(t)
        return {"state": est.state, "tempo_bpm": round(self.session_tempo, 2), "peers": self.peers}
