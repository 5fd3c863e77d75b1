"""Playing the 48 kHz stream on a device that runs at another rate.

The engine's clock of record stays in 48 kHz samples. A feeder thread (not real-time)
reads the ring at its own 48 kHz position, resamples with soxr's streaming resampler and
pushes the result into a small preallocated FIFO at the device rate. The audio callback
only copies out of that FIFO, exactly as it copies out of the ring at 48 kHz. The
callback's count of device frames taken converts back to a 48 kHz playhead with integer
arithmetic; soxr's output is delay-compensated (device frame j is 48 kHz sample
j * 48000 / rate), so bar lines keep their place.
"""

from __future__ import annotations

import logging
import threading
from typing import Literal

import numpy as np
import soxr

from engine.audio.ring import PlaybackRing
from engine.units import CHANNELS, SAMPLE_RATE

log = logging.getLogger(__name__)
Quality = Literal["QQ", "LQ", "MQ", "HQ", "VHQ"]
CHUNK = 256  # 48 kHz samples the feeder reads per step
QUEUE_S = 0.02  # device audio kept queued ahead of the callback


class DeviceFifo:
    """Single-producer, single-consumer FIFO of device-rate frames; no lock, no allocation.

    The producer copies samples in before it advances `written`; the consumer copies out
    before it advances `taken`. Each counter has one writer, so under the GIL each side
    sees the other's samples in place before it sees the counter move.
    """

    def __init__(self, capacity: int, *, channels: int = CHANNELS) -> None:
        self.capacity = capacity
        self._buf = np.zeros((capacity, channels), dtype=np.float32)
        self.written = 0
        self.taken = 0

    def level(self) -> int:
        return self.written - self.taken

    def push(self, audio: np.ndarray) -> None:
        """Producer thread: append; the caller keeps the level under the capacity."""
        n = len(audio)
        if n > self.capacity - self.level():
            raise ValueError(f"{n} frames do not fit a FIFO with {self.capacity - self.level()} free")
        pos = self.written % self.capacity
        first = min(n, self.capacity - pos)
        self._buf[pos : pos + first] = audio[:first]
        self._buf[: n - first] = audio[first:]
        self.written += n

    def pull(self, out: np.ndarray) -> int:
        """Audio thread: fill `out` with what is queued, zeros after; return frames taken."""
        n = min(len(out), self.written - self.taken)
        pos = self.taken % self.capacity
        first = min(n, self.capacity - pos)
        out[:first] = self._buf[pos : pos + first]
        out[first:n] = self._buf[: n - first]
        out[n:] = 0.0
        self.taken += n
        return n


class ResamplingFeeder:
    """Moves the ring's 48 kHz stream into a device-rate FIFO on its own thread."""

    def __init__(self, ring: PlaybackRing, *, device_rate: int, blocksize: int, failed: threading.Event,
                 quality: Quality = "HQ") -> None:
        self.ring = ring
        self.device_rate = device_rate
        self.quality = quality
        self._stream = soxr.ResampleStream(SAMPLE_RATE, device_rate, CHANNELS, dtype="float32", quality=quality)
        self.target = max(4 * blocksize, round(QUEUE_S * device_rate))
        # soxr releases its output in bursts of a few chunks: leave room for the largest.
        burst = 8 * CHUNK * device_rate // SAMPLE_RATE + 64
        self.fifo = DeviceFifo(1 << (self.target + burst).bit_length())
        self.position = 0  # 48 kHz samples read from the ring
        self._chunk = np.zeros((CHUNK, CHANNELS), dtype=np.float32)
        self._period = self.target / device_rate / 4
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failed = failed  # set if the feeder dies, so the engine stops instead of playing silence

    def pump(self) -> None:
        """Feeder thread: top the FIFO up to its target level."""
        while self.fifo.level() < self.target:
            self.ring.read(self._chunk, self.position)
            self.position += CHUNK
            out = self._stream.resample_chunk(self._chunk)
            if len(out):
                self.fifo.push(out)

    def start(self) -> None:
        """Fill the FIFO before the first callback can ask, then keep it filled."""
        self.pump()
        self._thread = threading.Thread(target=self._run, name="resample-feeder", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        """Feeder thread: wake a few times per queued period and top up."""
        try:
            while not self._stop.wait(self._period):
                self.pump()
        except Exception:  # noqa: BLE001 - reported, and the sink stops instead of playing silence
            log.exception("the resampling feeder failed")
            self._failed.set()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
