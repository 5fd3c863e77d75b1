"""The C output ring (engine/audio/rtout.c) seen from Python: write, publish, read counters.

The audio thread runs `bl_callback`, in C; nothing here runs on it. The writer side (the
feeder, engine/audio/feeder.py) writes frames through a NumPy view of the C buffer, then
publishes the new limit; counters are read with plain calls (cffi releases the GIL for each).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from engine import native
from engine.errors import OutputError

_CDEF = """
typedef struct bl_out bl_out;
bl_out *bl_out_new(int64_t capacity, int channels, int64_t fade_len);
void bl_out_free(bl_out *s);
float *bl_out_buffer(bl_out *s);
void bl_publish(bl_out *s, int64_t limit);
int64_t bl_read_position(const bl_out *s);
void bl_arm(bl_out *s);
void bl_fade(bl_out *s);
void bl_designate(bl_out *s, int64_t start, int64_t length, int64_t anchor);
void bl_frame_lock(bl_out *s, void *frame_time, const void *client);
int64_t bl_stat(const bl_out *s, int which);
int64_t bl_place(bl_out *s, uint32_t frame, int64_t frames, int64_t playhead);
int64_t bl_skips(const bl_out *s, int64_t *at, int64_t *len, int64_t max);
int bl_callback(const void *input, void *output, unsigned long frames, const void *time_info,
                unsigned long status, void *user);
"""
(_CALLBACKS, _XRUNS, _GAPS, _GAP_FRAMES, _SKIPPED, _TID, _FINISHED, _ORIGIN, _LOCKED, _BUSY_NS, _MAX_NS, _DRY_FRAMES,
 _DRY_ENTRIES) = range(13)
_SKIP_LOG = 16  # BL_SKIP_LOG: the newest skips the callback keeps


class OutputRing:
    """One stream's C ring: `capacity` frames (a power of two) of `channels` float32."""

    def __init__(self, capacity: int, channels: int, *, fade_frames: int) -> None:
        self._ffi, self._lib = native.load("engine.audio._rtout", "audio callback (engine/audio/rtout.c)", _CDEF)
        ptr = self._lib.bl_out_new(capacity, channels, fade_frames)
        if ptr == self._ffi.NULL:
            raise OutputError(f"cannot allocate the {capacity}-frame output ring")
        self._ptr = self._ffi.gc(ptr, self._lib.bl_out_free)
        self.capacity = capacity
        raw = self._ffi.buffer(self._lib.bl_out_buffer(ptr), capacity * channels * 4)
        self.frames = np.frombuffer(raw, dtype=np.float32).reshape(capacity, channels)

    # -- what PortAudio is handed -------------------------------------------------------
    @property
    def callback(self) -> Any:
        """The C callback's address (a PaStreamCallback)."""
        return self._ffi.addressof(self._lib, "bl_callback")

    @property
    def userdata(self) -> Any:
        return self._ptr

    @property
    def address(self) -> int:
        """Start of the sample buffer (for mlock)."""
        return native.address(self._ffi, self._lib.bl_out_buffer(self._ptr))

    # -- writer side (the feeder) --------------------------------------------------------
    def write(self, position: int, audio: np.ndarray) -> None:
        """Put frames at absolute `position` (not published until `publish`)."""
        for at, view in self.views(position, len(audio)):
            view[:] = audio[at - position : at - position + len(view)]

    def views(self, position: int, n: int) -> list[tuple[int, np.ndarray]]:
        """The ring's frames for [position, position + n): one or two (position, view) pairs."""
        pos = position % self.capacity
        first = min(n, self.capacity - pos)
        parts = [(position, self.frames[pos : pos + first])]
        if n > first:
            parts.append((position + first, self.frames[: n - first]))
        return parts

    def publish(self, limit: int) -> None:
        """Frames below `limit` are in place (a release store: the callback sees them before it)."""
        self._lib.bl_publish(self._ptr, limit)

    def designate(self, start: int, length: int, anchor: int) -> None:
        """The bar the callback loops if it runs dry: frames [start, start + length), already in
        the ring; frame p plays its frame (p - anchor) mod length. Length 0: none (zeros)."""
        self._lib.bl_designate(self._ptr, start, length, anchor)

    # -- controls and counters -----------------------------------------------------------
    def arm(self) -> None:
        """From the next block on, play the ring from frame 0."""
        self._lib.bl_arm(self._ptr)

    def fade(self) -> None:
        self._lib.bl_fade(self._ptr)

    def lock_to(self, frame_time: int, client: int) -> None:
        """Place blocks by JACK's frame clock: `frame_time` is jack_last_frame_time's address."""
        self._lib.bl_frame_lock(self._ptr, self._ffi.cast("void *", frame_time), self._ffi.cast("void *", client))

    def place(self, frame: int, frames: int, playhead: int) -> int:
        """The frame lock's placement, as the callback does it (for tests)."""
        return int(self._lib.bl_place(self._ptr, frame, frames, playhead))

    @property
    def read_position(self) -> int:
        """The frame the callback plays next."""
        return int(self._lib.bl_read_position(self._ptr))

    def _stat(self, which: int) -> int:
        return int(self._lib.bl_stat(self._ptr, which))

    @property
    def callbacks(self) -> int:
        return self._stat(_CALLBACKS)

    @property
    def xruns(self) -> int:
        """Blocks PortAudio flagged as output underflow while playing."""
        return self._stat(_XRUNS)

    @property
    def gaps(self) -> int:
        """Blocks the callback found not (wholly) written with no bar to loop: zeros played."""
        return self._stat(_GAPS)

    @property
    def gap_frames(self) -> int:
        return self._stat(_GAP_FRAMES)

    @property
    def dry_frames(self) -> int:
        """Frames the callback looped from the designated bar because the feeder was late."""
        return self._stat(_DRY_FRAMES)

    @property
    def dry_entries(self) -> int:
        """Times the callback ran dry and began looping."""
        return self._stat(_DRY_ENTRIES)

    @property
    def skipped(self) -> int:
        """Frames JACK advanced without a block from us (frame lock)."""
        return self._stat(_SKIPPED)

    @property
    def skips(self) -> list[tuple[int, int]]:
        """The newest skips (up to `_SKIP_LOG`), oldest first: (JACK frame, 32 bits, where JACK's frames
        moved on without a block from us, how many frames). Empty until frame-locked. Lets a
        listener's silence be matched to the cycles the audio server did not run this client."""
        origin = self.origin
        if origin is None:
            return []
        at, length = self._ffi.new("int64_t[]", _SKIP_LOG), self._ffi.new("int64_t[]", _SKIP_LOG)
        n = int(self._lib.bl_skips(self._ptr, at, length, _SKIP_LOG))
        return [((origin + int(at[i])) & 0xFFFFFFFF, int(length[i])) for i in range(n)]

    @property
    def busy_ns(self) -> int:
        """Time spent inside the callback, all blocks together (armed ones)."""
        return self._stat(_BUSY_NS)

    @property
    def max_ns(self) -> int:
        """The longest armed callback."""
        return self._stat(_MAX_NS)

    @property
    def tid(self) -> int | None:
        """The audio thread's kernel id, from its first block."""
        return self._stat(_TID) or None

    @property
    def finished(self) -> bool:
        """The stop's fade has reached silence."""
        return bool(self._stat(_FINISHED))

    @property
    def origin(self) -> int | None:
        """JACK frame (32 bits) where frame 0 plays, once frame-locked and playing."""
        return self._stat(_ORIGIN) if self._stat(_LOCKED) else None

    def pull(self, out: np.ndarray, *, status: int = 0) -> None:
        """Run the callback on `out` from this thread: the real-time WAV writer and tests."""
        buf = self._ffi.from_buffer("float[]", out)
        self._lib.bl_callback(self._ffi.NULL, buf, len(out), self._ffi.NULL, status, self._ptr)
