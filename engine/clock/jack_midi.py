"""A JACK MIDI port whose process callback is C (engine/clock/jack_midi.c), seen from Python.

The callback only moves events between the port and a lock-free queue, stamped in JACK
frames, so a JACK cycle never waits for the interpreter. Output: `put` queues (frame, bytes)
in frame order, from one thread. Input: `take` returns the queued events, on one thread.
"""

from __future__ import annotations

from typing import Any

from engine import native
from engine.errors import BacklineError
from engine.jack import leave_jack

_CDEF = """
typedef struct bl_midi bl_midi;
bl_midi *bl_midi_new(void *client, void *port, int output, void *port_get_buffer, void *event_count, void *event_get,
                     void *clear_buffer, void *event_write, void *last_frame_time);
void bl_midi_free(bl_midi *m);
int bl_midi_put(bl_midi *m, uint32_t frame, const char *data, size_t size);
int bl_midi_take(bl_midi *m, uint32_t *frame, char *data, uint8_t *size);
int64_t bl_midi_pending(const bl_midi *m);
int64_t bl_midi_dropped(const bl_midi *m);
int bl_midi_process(uint32_t frames, void *arg);
"""
LIBJACK = ("jack_port_get_buffer", "jack_midi_get_event_count", "jack_midi_event_get", "jack_midi_clear_buffer",
           "jack_midi_event_write", "jack_last_frame_time")


def attach(client: Any, port: Any, *, output: bool) -> CMidiPort:
    """`port` served by the C callback; on failure (not built) `client` leaves JACK and the error
    goes on: the clock input's and output's constructors."""
    try:
        return CMidiPort(client, port, output=output)
    except BacklineError:
        leave_jack(client)
        raise


class CMidiPort:
    """`port` of the JACK-Client `client`, served by the C process callback; before `activate`."""

    def __init__(self, client: Any, port: Any, *, output: bool) -> None:
        import jack

        self._ffi, self._lib = native.load("engine.clock._jackmidi", "JACK MIDI callback (engine/clock/jack_midi.c)", _CDEF)
        ffi, jffi = self._ffi, jack._ffi
        pointers = [ffi.cast("void *", native.address(jffi, jffi.addressof(jack._lib, name))) for name in LIBJACK]
        ptr = self._lib.bl_midi_new(ffi.cast("void *", native.address(jffi, client._ptr)),
                                    ffi.cast("void *", native.address(jffi, port._ptr)), int(output), *pointers)
        if ptr == ffi.NULL:
            raise MemoryError("cannot allocate a JACK MIDI queue")
        self._ptr = ffi.gc(ptr, self._lib.bl_midi_free)  # lives as long as this object: close the client first
        callback = jffi.cast("JackProcessCallback", native.address(ffi, ffi.addressof(self._lib, "bl_midi_process")))
        jack._check(jack._lib.jack_set_process_callback(client._ptr, callback, jffi.cast("void *", native.address(ffi, ptr))),
                    "Error setting the process callback")
        self._frame = ffi.new("uint32_t *")
        self._data = ffi.new("char[3]")
        self._size = ffi.new("uint8_t *")

    def put(self, frame: int, data: bytes) -> bool:
        """Output: queue `data` (1..3 bytes) for 32-bit JACK frame `frame`; False if it was dropped."""
        return bool(self._lib.bl_midi_put(self._ptr, frame, data, len(data)))

    def take(self) -> list[tuple[int, bytes]]:
        """Input: every queued (32-bit JACK frame, bytes), oldest first."""
        out = []
        while self._lib.bl_midi_take(self._ptr, self._frame, self._data, self._size):
            out.append((int(self._frame[0]), bytes(self._ffi.buffer(self._data, self._size[0]))))
        return out

    @property
    def pending(self) -> int:
        return int(self._lib.bl_midi_pending(self._ptr))

    @property
    def dropped(self) -> int:
        """Events the queue had no room for (or, in, longer than 3 bytes)."""
        return int(self._lib.bl_midi_dropped(self._ptr))
