"""A JACK client for clock tests: stamps MIDI events with JACK frame time, optionally records audio.

Frame time (cycle start + event offset) is the audio sample clock itself, so clock ticks and
recorded audio share one time base. Stamping with time.monotonic() in a Python callback
instead would measure the test box (GIL waits, a loaded dummy driver), not the clock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import mido
import numpy as np


class FrameStampedInput:
    """A JACK MIDI input (and `audio_seconds` of stereo recording) stamped in JACK frames."""

    def __init__(self, client, *, audio_seconds: float = 0.0) -> None:  # type: ignore[no-untyped-def]
        self.client = client
        self.port = client.midi_inports.register("in")
        self.raw: list[tuple[int, bytes]] = []
        self.clocks = 0
        self.audio_ins = [client.inports.register(f"in_{i + 1}") for i in range(2)] if audio_seconds else []
        self.audio = np.zeros((int(audio_seconds * 48_000), 2), dtype=np.float32)
        self.audio_first_frame: int | None = None
        self.audio_pos = 0
        client.set_process_callback(self._process)

    def _process(self, frames: int) -> None:
        """Runs on the JACK process thread: stamp and keep MIDI bytes (parsed later), copy audio.

        Test code: it allocates, which the engine's callbacks must not.
        """
        base = self.client.last_frame_time
        for offset, data in self.port.incoming_midi_events():
            message = bytes(data)
            self.raw.append((base + offset, message))  # list.append is atomic under the GIL
            self.clocks += message[0] == 0xF8
        if self.audio_ins:
            if self.audio_first_frame is None:
                self.audio_first_frame = base
            n = min(frames, len(self.audio) - self.audio_pos)
            for ch, port in enumerate(self.audio_ins):
                self.audio[self.audio_pos : self.audio_pos + n, ch] = port.get_array()[:n]
            self.audio_pos += n

    def snapshot(self) -> list[tuple[int, mido.Message]]:
        return [(f, mido.Message.from_bytes(b)) for f, b in list(self.raw)]

    def clock_frames(self) -> np.ndarray:
        return np.array([f for f, m in self.snapshot() if m.type == "clock"], dtype=np.float64)

    def song_tick_frames(self) -> np.ndarray:
        """Frames of the clocks from the first Start on (song tick 0 first)."""
        items = self.snapshot()
        first = next(i for i, (_, m) in enumerate(items) if m.type == "start")
        return np.array([f for f, m in items[first:] if m.type == "clock"], dtype=np.float64)


@contextmanager
def receiver(jack_server: str, *, audio_seconds: float = 0.0) -> Iterator[FrameStampedInput]:
    import jack as jackclient

    client = jackclient.Client("bl-rx", servername=jack_server)
    try:
        rx = FrameStampedInput(client, audio_seconds=audio_seconds)  # the callback is set before activation
        client.activate()
        yield rx
    finally:
        client.deactivate()
        client.close()


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0, what: str = "MIDI") -> None:
    idle = threading.Event()
    deadline = time.monotonic() + timeout
    while not predicate():
        if idle.wait(0.25) or time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
