"""A JACK client for clock tests: stamps MIDI events with JACK frame time, optionally records audio.

Frame time (cycle start + event offset) is the audio sample clock itself, so clock ticks and
recorded audio (placed at its frames) share one time base. Stamping with time.monotonic() in a Python callback
instead would measure the test box (GIL waits, a loaded dummy driver), not the clock.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import mido
import numpy as np
import pytest

from engine.jack import leave_jack


class FrameStampedInput:
    """A JACK MIDI input (and `audio_seconds` of stereo recording) stamped in JACK frames."""

    def __init__(self, client, *, audio_seconds: float = 0.0) -> None:  # type: ignore[no-untyped-def]
        self.client = client
        self.port = client.midi_inports.register("in")
        self.raw: list[tuple[int, bytes]] = []
        self.clocks = 0
        self.audio_ins = [client.inports.register(f"in_{i + 1}") for i in range(2)] if audio_seconds else []
        self.audio = np.zeros((int(audio_seconds * 48_000), 2), dtype=np.float32)
        self.recorded = np.zeros(len(self.audio), dtype=bool)  # frames this client was called for
        self.audio_first_frame: int | None = None
        self.audio_pos = 0
        self.cycle: tuple[int, float] | None = None  # (this cycle's first frame, monotonic time it was called)
        self.xruns = 0  # the server's xruns while this client runs (its own or any client's)
        self.xrun_frames: list[int] = []  # JACK frame of the cycle before each
        client.set_process_callback(self._process)
        client.set_xrun_callback(self._xrun)

    def _xrun(self, delayed_usecs: float) -> None:
        self.xruns += 1
        if self.cycle is not None:
            self.xrun_frames.append(self.cycle[0])  # the last cycle this client ran before it

    def _process(self, frames: int) -> None:
        """Runs on the JACK process thread: stamp and keep MIDI bytes (parsed later), copy audio.

        Test code: it allocates, which the engine's callbacks must not.
        """
        base = self.client.last_frame_time
        self.cycle = (base, time.monotonic())
        for offset, data in self.port.incoming_midi_events():
            message = bytes(data)
            self.raw.append((base + offset, message))  # list.append is atomic under the GIL
            self.clocks += message[0] == 0xF8
        if self.audio_ins:
            # Placed by frame, not appended: JACK skips cycles on an xrun while its frame
            # counter runs on, and the clock's ticks are stamped in those frames.
            if self.audio_first_frame is None:
                self.audio_first_frame = base
            pos = (base - self.audio_first_frame) & 0xFFFFFFFF
            n = max(0, min(frames, len(self.audio) - pos))
            for ch, port in enumerate(self.audio_ins):
                self.audio[pos : pos + n, ch] = port.get_array()[:n]
            self.recorded[pos : pos + n] = True
            self.audio_pos = max(self.audio_pos, pos + n)

    def snapshot(self) -> list[tuple[int, mido.Message]]:
        return [(f, mido.Message.from_bytes(b)) for f, b in list(self.raw)]

    def song_tick_frames(self, bpm: float) -> dict[int, float]:
        """Song tick number -> frame, for the clocks from the first Start on (song tick 0 first).

        Numbered by frame, not by count: JACK skips cycles on an xrun and a clock source
        drops the ticks that fell in them (jack_midi_clock does) or a cycle runs twice and
        repeats them. A sender that keeps its ticks writes the overdue one at the start of
        the next cycle it gets: a tick that arrives late and less than half a period before
        the next one is that overdue tick, numbered as the one before. `bpm` is the sender's
        nominal tempo; its jitter must stay below half a tick period between neighbours.
        """
        items = self.snapshot()
        first = next(i for i, (_, m) in enumerate(items) if m.type == "start")
        frames = [f for f, m in items[first:] if m.type == "clock"]
        period = 48_000 * 60 / bpm / 24
        # Song tick 0 is the first clock after Start, due within half a tick of it (jack_midi_clock
        # sends it one cycle later): the first clock to arrive a tick or more late follows lost ones.
        tick = round((frames[0] - items[first][0]) / period)
        ticks = {tick: float(frames[0])}
        last = frames[0]
        for i, frame in enumerate(frames[1:], start=1):
            step = round((frame - last) / period)
            overdue = step >= 2 and i + 1 < len(frames) and frames[i + 1] - frame < period / 2
            if overdue:
                step -= 1
            if step >= 1:
                tick, last = tick + step, (last + step * period if overdue else frame)  # overdue: where it was due
                ticks[tick] = float(frame)
        return ticks

    def skipped_before(self, frame: int, period: int) -> int:
        """Frames of the JACK cycles skipped just before the cycle holding `frame` (audio recording only):
        what a message due in them was delayed by, on top of one cycle."""
        assert self.audio_first_frame is not None
        at = ((frame - self.audio_first_frame) & 0xFFFFFFFF) // period * period
        gap = 0
        while at - gap > 0 and not self.recorded[at - gap - 1]:
            gap += 1
        return gap


def unforeseeable_ms(ticks: dict[int, float], tick: int, *, horizon: int, window: int = 96) -> float:
    """How far the clock's tick `tick` lands from where its last `window` ticks pointed, `horizon` ticks before.

    A follower that must place a beat `horizon` ticks ahead cannot know where a wandering
    clock goes after that; tests grant this much on top of their tolerance.
    """
    known = [(k, ticks[k]) for k in range(tick - horizon - window, tick - horizon) if k in ticks]
    if len(known) < window // 2:
        return 0.0
    k, f = np.array(known, dtype=np.float64).T
    slope, at = np.polyfit(k, f, 1)
    return float((ticks[tick] - (at + slope * tick)) / 48_000 * 1e3)


@contextmanager
def receiver(jack_server: str, *, audio_seconds: float = 0.0) -> Iterator[FrameStampedInput]:
    import jack as jackclient

    client = jackclient.Client("bl-rx", servername=jack_server)
    try:
        rx = FrameStampedInput(client, audio_seconds=audio_seconds)  # the callback is set before activation
        client.activate()
        yield rx
    finally:
        leave_jack(client)


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0, what: str = "MIDI") -> None:
    idle = threading.Event()
    deadline = time.monotonic() + timeout
    while not predicate():
        if idle.wait(0.25) or time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")


# jack_midi_clock without and with its -J 1 jitter option (a random walk), for the tests that follow it.
JITTER = pytest.mark.parametrize("jitter", [0, 1])


REPO = Path(__file__).resolve().parents[2]


def run_engine(args: Sequence[str], *, seconds: float) -> tuple[int, str]:
    """`backline run ARGS --no-midi --no-osc --duration SECONDS` to its end: (exit code, stderr)."""
    engine = subprocess.Popen([sys.executable, "-m", "engine", "run", *args, "--no-midi", "--no-osc",
                               "--duration", str(seconds)],
                              cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    try:
        _, stderr = engine.communicate(timeout=seconds + 30)
    finally:
        engine.kill() if engine.poll() is None else None
    return engine.returncode, stderr


def connections(client, port: str) -> list[object]:  # type: ignore[no-untyped-def]
    import jack as jackclient

    try:
        return client.get_all_connections(port)
    except jackclient.JackError:  # not registered yet
        return []


def run_following_jack_midi_clock(rx: FrameStampedInput, args: Sequence[str], *, bpm: float, jitter: int,
                                  seconds: float) -> tuple[int, str]:
    """jack_midi_clock at `bpm` (-J `jitter`) into the engine (`--clock midi:jack_midi_clock
    --start-on bar`) and into `rx`; the transport rolls once backline's clock input and audio
    are connected, so it sees Start. (exit code, stderr)."""
    rx.client.transport_frame = 0  # jack_midi_clock sends Start (not Continue) when rolling from 0
    clock = subprocess.Popen(["jack_midi_clock", "-b", f"{bpm:g}", "-B", "-J", str(jitter), "bl-rx:in"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    roll = threading.Thread(target=lambda: (wait_for(lambda: len(connections(rx.client, "jack_midi_clock:mclk_out")) >= 2
                                                     and bool(connections(rx.client, "bl-rx:in_1")), what="backline's ports"),
                                            rx.client.transport_start()), daemon=True)
    roll.start()
    try:
        return run_engine([*args, "--output", "jack", "--connect", "bl-rx:in_1,bl-rx:in_2", "--clock",
                           "midi:jack_midi_clock", "--midi-api", "jack", "--start-on", "bar"], seconds=seconds)
    finally:
        rx.client.transport_stop()
        clock.terminate()
        clock.wait(timeout=5)
