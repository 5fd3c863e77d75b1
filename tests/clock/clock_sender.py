"""A JACK MIDI clock sender of the tests' own: clock ticks, Start, Stop, Continue and Song
Position Pointer written at exact JACK frames, as a JACK timecode master drives
jack_midi_clock (a relocation sends Song Position Pointer, then Continue).

Test code: its process callback is Python on JACK's process thread (it allocates and takes
the GIL, which the engine's own callbacks never do). The events are a list of
(frame, bytes) fixed before they are due; each cycle writes those that fall in it at their
offset. A message due in a cycle JACK skipped (an xrun) goes out at the start of the next
cycle the sender gets, late, as a hardware sender's overdue message would, and is counted
(`late`), so a test can tell a sender that was late from a receiver that lost an event.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from contextlib import contextmanager
from collections.abc import Iterator

from engine.jack import leave_jack

CLOCK, START, CONTINUE, STOP = b"\xf8", b"\xfa", b"\xfb", b"\xfc"


def song_position(sixteenths: int) -> bytes:
    """Song Position Pointer: the position in MIDI beats (sixteenth notes, 6 clocks each), 14 bits LSB first."""
    if not 0 <= sixteenths < 1 << 14:
        raise ValueError(f"song position {sixteenths} is outside 0..16383")
    return bytes((0xF2, sixteenths & 0x7F, sixteenths >> 7))


class ClockSender:
    """A JACK client `name` with one MIDI output `out`, sending the events it is given at their frames."""

    def __init__(self, client) -> None:  # type: ignore[no-untyped-def]
        self.client = client
        self.port = client.midi_outports.register("out")
        self._events: list[tuple[int, bytes]] = []  # sorted by frame; the process thread pops from the front
        self._lock = threading.Lock()
        self.sent: list[tuple[int, int, bytes]] = []  # (frame due, frame written, message)
        self.late = 0
        client.set_process_callback(self._process)

    def schedule(self, events: Iterable[tuple[int, bytes]]) -> None:
        """Add (JACK frame, message) pairs; frames are absolute JACK frame times (not wrapped here)."""
        with self._lock:
            self._events = sorted([*self._events, *events], key=lambda e: e[0])

    @property
    def pending(self) -> int:
        return len(self._events)

    def _process(self, frames: int) -> None:
        """JACK's process thread: write every event due before this cycle's end."""
        self.port.clear_buffer()
        base = self.client.last_frame_time
        if not self._lock.acquire(blocking=False):  # the test is scheduling: send these next cycle
            return
        try:
            n = 0
            while n < len(self._events) and self._events[n][0] < base + frames:
                n += 1
            due, self._events = self._events[:n], self._events[n:]
        finally:
            self._lock.release()
        for frame, message in due:
            offset = frame - base
            if offset < 0:  # its cycle was skipped (or the test scheduled it too late): now, late
                self.late += 1
                offset = 0
            self.port.write_midi_event(offset, message)
            self.sent.append((frame, base + offset, message))


def ticks(first_frame: float, period: float, count: int) -> list[tuple[int, bytes]]:
    """`count` clock ticks, the first at `first_frame`, `period` frames apart (rounded each, not summed)."""
    return [(round(first_frame + i * period), CLOCK) for i in range(count)]


@contextmanager
def clock_sender(jack_server: str, *, name: str = "bl-clk") -> Iterator[ClockSender]:
    import jack as jackclient

    client = jackclient.Client(name, servername=jack_server)
    try:
        sender = ClockSender(client)  # the callback is set before activation
        client.activate()
        yield sender
    finally:
        leave_jack(client)
