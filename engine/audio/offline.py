"""The offline sink: the live engine's loop on an offline clock, writing a file.

supriya runs its clock code offline by swapping the clock; backline swaps the sink. Each
turn of the engine loop the offline sink takes the next block from the ring (its playhead
is the clock of record, as a device's is) and writes it, instead of waiting for a device
to ask. It stops at `end()` (re-read every block: a tempo change moves the last bar line),
so the file holds exactly the samples up to it and no fade.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from engine.audio.file_sink import FileSink
from engine.audio.ring import PlaybackRing
from engine.audio.sinks import DEFAULT_BLOCKSIZE, Sink
from engine.units import CHANNELS


class OfflineSink(Sink):
    """Renders the stream to a WAV file as fast as the generator allows. Loop thread only."""

    name = "file"
    live = False  # no audio thread (blocks are taken on the loop thread); finishing is the end, not a failure

    def __init__(self, ring: PlaybackRing, path: str | Path, *, end: Callable[[], int],
                 blocksize: int = DEFAULT_BLOCKSIZE) -> None:
        super().__init__(ring, blocksize=blocksize, fade_s=0.0)
        self._file = FileSink(path)
        self._end = end
        self._block = np.zeros((blocksize, CHANNELS), dtype=np.float32)
        self._playhead = 0

    @property
    def playhead(self) -> int:
        return self._playhead

    @property
    def path(self) -> Path:
        return self._file.path

    def start(self) -> None:
        self.armed = True

    def fade_out(self) -> None:
        """A file ends at its last bar line, without a fade."""
        self.finished.set()

    def tick(self, wake: threading.Event, timeout: float) -> None:
        """Loop thread: the next block, straight away (the loop filled the look-ahead first)."""
        n = min(self.blocksize, self._end() - self.playhead)
        if n <= 0:
            self.finished.set()
            return
        self.ring.read(self._block[:n], self._playhead)
        self._playhead += n
        self._file.write(self._block[:n])

    def close(self) -> None:
        self._file.close()
