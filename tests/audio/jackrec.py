"""A JACK client that records two input ports into a preallocated buffer, for output tests."""

from __future__ import annotations

import numpy as np

from engine.jack import leave_jack


class Recorder:
    """Two inputs, `recorder:in_1` and `recorder:in_2`; a context manager (activate, then leave JACK)."""

    def __init__(self, seconds: float, *, rate: int = 48000) -> None:
        import jack

        self.client = jack.Client("recorder", no_start_server=True)
        self.ins = [self.client.inports.register(f"in_{i + 1}") for i in range(2)]
        self.buf = np.zeros((int(seconds * rate), 2), dtype=np.float32)
        self.pos = 0
        self.xrun_positions: list[int] = []
        self.client.set_process_callback(self._process)
        self.client.set_xrun_callback(self._xrun)

    def __enter__(self) -> "Recorder":
        self.client.activate()
        return self

    def __exit__(self, *exc: object) -> None:
        leave_jack(self.client)

    def _process(self, frames: int) -> None:
        """JACK's process thread: copy into the buffer and return."""
        n = min(frames, len(self.buf) - self.pos)
        for ch, port in enumerate(self.ins):
            self.buf[self.pos : self.pos + n, ch] = port.get_array()[:n]
        self.pos += n

    def _xrun(self, delay: float) -> None:
        """JACK's notification thread: note where in the recording the xrun happened."""
        self.xrun_positions.append(self.pos)
