"""A pitch-preserving, streaming time-stretcher: Signalsmith Stretch through backline's binding.

`process(audio, out_frames)` stretches the next `len(audio)` input frames onto exactly
`out_frames` output frames, carrying its state from call to call, so the ratio may step beat
by beat with no seam at call edges. The stretcher delays audio by `latency` frames (its
analysis window; choose `block` for the latency budget). Its whole state is copied (`copy`)
for rollback. Scheduling loop only. See engine/schedule/stretch.cpp for why this binding and
not a Python package.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from engine import native
from engine.units import CHANNELS

_CDEF = """
typedef struct bl_stretch bl_stretch;
bl_stretch *bl_stretch_new(int channels, int block, int interval, long seed);
void bl_stretch_free(bl_stretch *s);
bl_stretch *bl_stretch_copy(const bl_stretch *s);
int bl_stretch_input_latency(const bl_stretch *s);
int bl_stretch_output_latency(const bl_stretch *s);
void bl_stretch_process(bl_stretch *s, const float *in, int in_frames, float *out, int out_frames);
"""


class Stretcher:
    """One stream's stretcher: `block` samples of analysis window, a new spectrum every `interval`."""

    def __init__(self, *, block: int, interval: int, channels: int = CHANNELS, seed: int = 1) -> None:
        self._ffi, self._lib = native.load("engine.schedule._stretch", "time-stretch (engine/schedule/stretch.cpp)", _CDEF)
        self.channels = channels
        self._ptr = self._own(self._lib.bl_stretch_new(channels, block, interval, seed))

    def copy(self) -> Stretcher:
        """An independent stretcher in exactly this one's state: rollback keeps one per chunk."""
        twin = object.__new__(Stretcher)
        twin._ffi, twin._lib, twin.channels = self._ffi, self._lib, self.channels
        twin._ptr = twin._own(self._lib.bl_stretch_copy(self._ptr))
        return twin

    def _own(self, ptr: Any) -> Any:
        if ptr == self._ffi.NULL:
            raise MemoryError("cannot allocate a time-stretcher")
        return self._ffi.gc(ptr, self._lib.bl_stretch_free)

    @property
    def input_latency(self) -> int:
        """Input frames the stretcher must be fed ahead of what it synthesises."""
        return int(self._lib.bl_stretch_input_latency(self._ptr))

    @property
    def latency(self) -> int:
        """Frames between an input sample and where it comes out (input + output latency)."""
        return int(self._lib.bl_stretch_input_latency(self._ptr) + self._lib.bl_stretch_output_latency(self._ptr))

    def process(self, audio: np.ndarray, out_frames: int) -> np.ndarray:
        """The next `out_frames` frames of output from the next `len(audio)` frames of input."""
        audio = np.ascontiguousarray(audio, dtype=np.float32)
        out = np.empty((out_frames, self.channels), dtype=np.float32)
        self._lib.bl_stretch_process(self._ptr, self._ffi.from_buffer("float[]", audio), len(audio),
                                     self._ffi.from_buffer("float[]", out), out_frames)
        return out
