"""JACK helpers shared by the audio sinks, the clocks, tests and benches (a bottom module:
it imports nothing of the engine): JACK's wrapping frame counter, and leaving JACK safely
from a client whose process callback is Python code."""

from __future__ import annotations

import ctypes
import ctypes.util
import time

FRAME_MASK = 0xFFFFFFFF  # JACK's frame counter is 32 bits and wraps (24.8 hours at 48 kHz)
LEAVE_PAUSE_S = 0.05


def frame_delta(frame: int, base: int) -> int:
    """Signed frames from `base` to `frame` on JACK's wrapping counter (within +/- 2**31)."""
    delta = (frame - base) & FRAME_MASK
    return delta - (1 << 32) if delta >= 1 << 31 else delta


def leave_jack(client) -> None:  # type: ignore[no-untyped-def]
    """Deactivate and close a JACK client, safely when its process callback is Python code
    (the tests' receivers, rtmidi's JACK input with its Python callback).

    JACK2 ends a client's process thread with pthread_cancel on deactivation. A thread
    cancelled while it waits for the GIL (a cancellation point inside CPython) dies holding
    the GIL's mutex, and the whole process hangs: seen once in CI, the main thread stuck in
    take_gil after deactivate(). Releasing the GIL for a few periods first lets the callback
    finish and the thread park in JACK's own wait, where cancelling it is safe. It narrows
    the window; it cannot close it while other Python threads may hold the GIL.
    """
    time.sleep(LEAVE_PAUSE_S)
    client.deactivate()
    client.close()


def use_system_libjack() -> str | None:
    """Load the system libjack with RTLD_GLOBAL, before rtmidi is imported; returns its name.

    python-rtmidi's wheel bundles a libjack of its own, while JACK-Client (the sinks' port
    routing, the clocks, MIDI replug checks) and PortAudio use the system's. Two libjacks
    in one process are two clients' worth of state for one server: gdb showed a CI run
    hung in the system libjack's jack_client_close while the bundled one's threads waited
    in their own futexes. Loaded globally first, the system library is what rtmidi's JACK
    calls bind to (checked with LD_DEBUG=bindings), so the process talks to JACK through
    one library. Without a system libjack (no JACK installed) nothing is loaded.
    """
    name = ctypes.util.find_library("jack")
    if name is None:
        return None
    try:
        ctypes.CDLL(name, mode=ctypes.RTLD_GLOBAL)
    except OSError:
        return None
    return name
