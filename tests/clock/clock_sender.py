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

import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.jack import leave_jack
from engine.service.health import StatusUnavailable, query_http

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


@dataclass
class Recording:
    """What a `backline run` following the sender put out: audio by JACK frame, /status replies, the run's end."""

    runs: Any  # what the test's plan returned (the segments it scheduled)
    audio: np.ndarray
    recorded: np.ndarray
    first_frame: int
    polls: list[tuple[float, dict]]  # (JACK frame of the reply, status)
    received: list[tuple[int, bytes]]
    xruns: int
    xrun_frames: list[int]  # JACK frame of the recorder's last cycle before each xrun
    late: int
    returncode: int
    stderr: str


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def follow_sender(jack_server: str, patch: Path, plan: Callable[[ClockSender, int], Any], *, seconds: float,
                  lead: float = 0.5 * 48_000) -> Recording:
    """`backline run --clock midi:bl-clk --midi-api jack --output jack --start-on bar` for `seconds`
    against a sender of ours, recorded by `jack_rx.receiver` and its web page's `/status` polled
    10 times a second (each reply placed in JACK frames by the recorder's latest cycle). Once
    backline's ports are connected, `plan(sender, first_frame)` schedules the song `lead`
    frames on and returns what the test wants to keep (`Recording.runs`)."""
    from jack_rx import connections, receiver, run_engine, wait_for

    port, done = free_tcp_port(), threading.Event()
    polls: list[tuple[float, dict]] = []
    planned: list[Any] = []
    with receiver(jack_server, audio_seconds=seconds + 10) as rx, clock_sender(jack_server) as sender:
        sender.client.connect("bl-clk:out", "bl-rx:in")

        def roll() -> None:
            wait_for(lambda: len(connections(rx.client, "bl-clk:out")) >= 2 and bool(connections(rx.client, "bl-rx:in_1")),
                     what="backline's ports")
            planned.append(plan(sender, int(sender.client.frame_time + lead)))

        def poll() -> None:
            while not done.wait(0.1):
                try:
                    status = query_http(f"http://127.0.0.1:{port}/status", timeout_s=0.5)
                except StatusUnavailable:
                    continue
                replied = time.monotonic()
                if rx.cycle is not None:
                    frame, at = rx.cycle
                    polls.append((frame + (replied - at) * 48_000, status))

        threads = [threading.Thread(target=roll, daemon=True), threading.Thread(target=poll, daemon=True)]
        for t in threads:
            t.start()
        try:
            returncode, stderr = run_engine(["--patch", str(patch), "--web-port", str(port), "--output", "jack",
                                             "--connect", "bl-rx:in_1,bl-rx:in_2", "--clock", "midi:bl-clk",
                                             "--midi-api", "jack", "--start-on", "bar"], seconds=seconds)
        finally:
            done.set()
            for t in threads:
                t.join(timeout=35)
        assert planned, "the engine never connected to the sender"
        assert sender.pending == 0, f"the engine ended before the song did ({sender.pending} events left; {stderr[-2000:]})"
        assert rx.audio_first_frame is not None
        return Recording(planned[0], rx.audio[: rx.audio_pos, 0].copy(), rx.recorded[: rx.audio_pos].copy(),
                         rx.audio_first_frame, polls, list(rx.raw), rx.xruns, list(rx.xrun_frames), sender.late, returncode, stderr)
