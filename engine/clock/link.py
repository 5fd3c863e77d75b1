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
JACK, `ClockDriver.use_frames`) by sampling both clocks back to back on every call.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

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
        """The engine's clock every time `t` here is on (set on the scheduler thread, before use)."""

    def enable(self) -> None:
        """Join the network session (multicast discovery starts here, not before)."""
        self._link.enabled = True
        logger.info("Ableton Link enabled (quantum %g)", self.quantum)

    def close(self) -> None:
        self._link.enabled = False

    @property
    def peers(self) -> int:
        return int(self._link.numPeers())

    def _offset(self) -> float:
        """Link clock minus the engine's clock (`now`), in seconds, sampled now."""
        before = self.now()
        micros = self._clock.micros()
        after = self.now()
        return micros / 1e6 - (before + after) / 2

    def _micros(self, t: float) -> int:
        return round((t + self._offset()) * 1e6)

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
        offset = self._offset()
        micros = round((t + offset) * 1e6)
        beat = math.floor(state.beatAtTime(micros, self.quantum))
        run_state: ClockState = "running" if playing else "stopped"
        return ClockEstimate(
            tempo_bpm=float(state.tempo()),
            ref_time=state.timeAtBeat(float(beat), self.quantum) / 1e6 - offset,
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
        return {"state": est.state, "tempo_bpm": round(est.tempo_bpm, 2), "peers": self.peers}
