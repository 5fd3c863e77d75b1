"""MIDI clock input on a JACK MIDI port, stamped in JACK frames: for an engine whose audio goes to JACK.

Why not rtmidi's JACK API here: it stamps every event with `jack_get_time()` when its
process callback runs, dropping the event's frame offset. All events of a cycle then share
one stamp (a period of jitter), and when the server is late or skips cycles (an xrun) the
clock looks late or bursty in wall time although it is exact in frames. JACK frames are
also the clock of the JACK audio sink (see `DeviceSink.frame_origin`), so a clock tick at
frame f and the audio sample that plays at frame f are compared without any wall clock.

The process callback (C: engine/clock/jack_midi.c, so the JACK cycle never waits for Python)
queues (frame, bytes) and returns; the engine loop converts frames to the engine's clock
seconds with a `FrameTimebase`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import mido

from engine.clock.jack_midi import attach
from engine.clock.midi_in import RESCAN_S, parse_stamped
from engine.errors import BacklineError
from engine.jack import FRAME_MASK, frame_delta, leave_jack
from engine.midi import port_matches
from engine.ratelog import RateLimitedLog

logger = logging.getLogger(__name__)


class FrameTimebase:
    """JACK frames as seconds on the engine's clock: frame `origin` is 0 s (the sink's playhead 0).

    JACK's frame counter is 32 bits and wraps after 24.8 hours at 48 kHz; each conversion
    unwraps against the last frame seen (within +/- 12 hours of it). The last (raw, unwrapped)
    pair is swapped whole, so any thread may convert.
    """

    def __init__(self, *, origin: int, rate: int, frame_time: Callable[[], int]) -> None:
        self.rate = rate
        self._frame_time = frame_time
        self._last = (origin & FRAME_MASK, 0)  # (32-bit frame, frames since origin)
        self._frozen: float | None = None  # `now` once the JACK client behind `frame_time` is closing

    def frames(self, raw: int) -> int:
        """Frames since the origin for a 32-bit JACK frame time near the last one seen."""
        last_raw, last = self._last
        delta = frame_delta(raw, last_raw)
        self._last = (raw & FRAME_MASK, last + delta)
        return last + delta

    def seconds(self, raw: int) -> float:
        return self.frames(raw) / self.rate

    def now(self) -> float:
        """JACK's current frame time (interpolated within the cycle) in seconds."""
        frozen = self._frozen
        return self.seconds(self._frame_time()) if frozen is None else frozen

    def freeze(self) -> None:
        """Hold `now` at this moment's frame time from here on: the JACK client it reads is about to
        close, and the last status is read after that (for every holder of this timebase)."""
        self._frozen = self.now()


class JackClockInput:
    """A JACK MIDI input that connects to the first output port matching `pattern`."""

    def __init__(self, pattern: str, *, client_name: str = "backline-clock") -> None:
        try:
            import jack
        except ImportError as err:
            raise BacklineError("JACK MIDI clock input needs the JACK-Client package (pip install JACK-Client)") from err
        self.pattern = pattern
        self.api = "jack"
        try:
            self._client = jack.Client(client_name, no_start_server=True)
        except jack.JackError as err:
            raise BacklineError(f"cannot open a JACK client for clock input: {err}") from err
        self._port = self._client.midi_inports.register("clock in")
        self._events = attach(self._client, self._port, output=False)
        self._client.activate()
        self.bound: str | None = None
        self.timebase: FrameTimebase | None = None
        self._next_scan = 0.0
        self._log = RateLimitedLog(logger, interval=30.0)
        self._dropped = 0

    def frame_time(self) -> int:
        """JACK's current frame time (any thread)."""
        return self._client.frame_time

    def _scan(self) -> None:
        self._next_scan = time.monotonic() + RESCAN_S
        names = [p.name for p in self._client.get_ports(is_midi=True, is_output=True)]
        match = next((n for n in names if port_matches(n, self.pattern)), None)
        if match is None:
            self._log.warn("absent", "MIDI clock input %r not found on JACK (ports: %s); still looking",
                           self.pattern, ", ".join(names) or "none")
            return
        if match not in [q.name for q in self._port.connections]:  # a patchbay may have connected it already
            self._client.connect(match, self._port)
        self.bound = match
        logger.info("MIDI clock input %r bound to %r (JACK, stamped in frames)", self.pattern, self.bound)

    def poll(self) -> list[tuple[mido.Message, float]]:
        """Messages since the last poll with their times in timebase seconds; the engine loop thread.

        Until the sink has a frame origin (no `timebase` yet) messages stay queued. Bytes mido
        cannot parse are counted and logged (rate-limited), never raised.
        """
        if self.bound is None or not self._port.connections:
            self.bound = None
            if time.monotonic() >= self._next_scan:
                self._scan()
        if self.timebase is None:
            return []
        raw = [(data, self.timebase.seconds(frame)) for frame, data in self._events.take()]
        if self._events.dropped > self._dropped:
            self._log.warn("dropped", "MIDI clock input %r: %d events dropped (longer than 3 bytes, or the queue was full)",
                           self.bound, self._events.dropped - self._dropped)
            self._dropped = self._events.dropped
        return parse_stamped(raw, log=self._log, port=self.bound)

    def close(self) -> None:
        leave_jack(self._client)
