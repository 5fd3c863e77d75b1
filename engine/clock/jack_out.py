"""MIDI clock out on a JACK MIDI port, each message written at its exact frame.

With the JACK sink frame-locked (`DeviceSink.frame_origin`), output sample s plays at JACK
frame origin + s. `JackClockSender` computes the clock's events a little ahead from the
timeline (`MidiClockOut`) and queues them with their frames; the port's process callback
(C: engine/clock/jack_midi.c, so the JACK cycle never waits for Python) writes each at its
offset in the cycle that contains it. No wall clock is involved, so a
stalled or overrun JACK server moves the clock exactly as it moves the audio. (rtmidi's
JACK output instead writes whatever was sent at offset 0 of the next cycle, timed by when
a thread woke up.)
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import mido

from engine.clock.jack_midi import attach
from engine.clock.midi_clock_out import MidiClockOut
from engine.errors import BacklineError
from engine.jack import FRAME_MASK, leave_jack
from engine.midi import port_matches
from engine.timeline import Timeline

logger = logging.getLogger(__name__)
LEAD_S = 0.05  # events are queued this far ahead of the playhead


class JackClockOutput:
    """A JACK MIDI output connected to the first input port matching `pattern`; writes queued (frame, bytes)."""

    def __init__(self, pattern: str, *, client_name: str = "backline-clock-out") -> None:
        try:
            import jack
        except ImportError as err:
            raise BacklineError("JACK MIDI clock out needs the JACK-Client package (pip install JACK-Client)") from err
        try:
            self._client = jack.Client(client_name, no_start_server=True)
        except jack.JackError as err:
            raise BacklineError(f"cannot open a JACK client for clock out: {err}") from err
        self._port = self._client.midi_outports.register("clock out")
        self._queue = attach(self._client, self._port, output=True)
        self._client.activate()
        names = [p.name for p in self._client.get_ports(is_midi=True, is_input=True) if not p.name.startswith(client_name)]
        self.bound = next((n for n in names if port_matches(n, pattern)), None)
        if self.bound is None:
            self.close()
            raise BacklineError(f"MIDI clock output {pattern!r} not found on JACK; inputs: {', '.join(names) or 'none'}")
        self._client.connect(self._port, self.bound)
        logger.info("MIDI clock out to %r (JACK, written at its frames)", self.bound)

    def put(self, frame: int, message: mido.Message) -> None:
        """Queue `message` for JACK frame `frame` (32 bits); frames must come in order. One thread."""
        if not self._queue.put(frame & FRAME_MASK, bytes(message.bytes())):
            logger.warning("MIDI clock out: queue full, %s dropped", message.type)

    def close(self, *, drain_s: float = 0.5) -> None:
        """Let what is queued (a final Stop) go out, for at most `drain_s`, then leave JACK."""
        idle, deadline = threading.Event(), time.monotonic() + drain_s
        while self._queue.pending and time.monotonic() < deadline:
            idle.wait(0.01)
        leave_jack(self._client)


class JackClockSender:
    """Feeds a `MidiClockOut`'s events to a `JackClockOutput` at frame origin + sample; its own thread."""

    def __init__(self, output: JackClockOutput, out: MidiClockOut, *, timeline: Callable[[], Timeline],
                 playhead: Callable[[], int], origin: int, sample_rate: int) -> None:
        self._output = output
        self._out = out
        self._timeline = timeline
        self._playhead = playhead
        self._origin = origin
        self._lead = round(LEAD_S * sample_rate)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="jack-clock-out", daemon=True)
        self._cursor = playhead()
        self.sent = 0

    def start(self) -> None:
        self._thread.start()

    def _queue_until(self, until: int) -> None:
        try:
            events = self._out.events(self._timeline(), self._cursor, until)
        except Exception:  # a bad timeline must not kill the clock thread
            logger.exception("MIDI clock out: could not compute events for %d..%d", self._cursor, until)
            events = []
        for ev in events:
            self._output.put(self._origin + ev.sample, ev.message)
            self.sent += 1
        self._cursor = max(self._cursor, until)

    def _run(self) -> None:
        """The sender's thread: keep the events of the next LEAD_S of output queued."""
        while not self._stop.wait(LEAD_S / 4):
            self._queue_until(self._playhead() + self._lead)

    def close(self) -> None:
        """Stop the thread; Stop goes out right after what is queued (the clock was playing)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        if self._out.playing:
            self._out.stop(at_sample=self._cursor)
            self._queue_until(self._cursor + 1)
