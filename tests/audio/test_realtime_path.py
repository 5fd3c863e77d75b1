"""The real-time path has no Python in it: with the interpreter frozen (a C call that keeps the
GIL, as a long garbage collection or a busy extension does), the JACK callback keeps playing
the look-ahead from the C ring. A Python callback could not run at all until the GIL came back:
the playhead would stand still and JACK would report the lost cycles."""

from __future__ import annotations

import ctypes
import time

import numpy as np
import pytest

pytest.importorskip("jack", reason="JACK-Client is in the test extra")

from engine.audio.ring import PlaybackRing  # noqa: E402
from engine.audio.sinks import DeviceSink, OutputSpec  # noqa: E402

HOLD_S = 0.3


def test_the_callback_plays_on_while_python_holds_the_gil(jack48) -> None:
    ring = PlaybackRing(capacity=1 << 18)
    ring.reset(0)
    seconds = 3
    ring.publish_bar(0)
    ring.publish_bar(seconds * 48_000)
    t = np.arange(seconds * 48_000) / 48_000
    ring.write(0, np.repeat(0.1 * np.sin(2 * np.pi * 440 * t)[:, None], 2, axis=1).astype(np.float32))
    sink = DeviceSink(ring, OutputSpec("jack", autoconnect=False))
    sink.start()
    try:
        give_up = time.monotonic() + 10
        while sink.playhead < 9600 and time.monotonic() < give_up:
            time.sleep(0.01)
        assert sink.playhead >= 9600, "the stream did not start"
        playhead, gaps = sink.playhead, sink.out.gaps
        ctypes.PyDLL(None).usleep(int(HOLD_S * 1e6))  # PyDLL: the GIL is held for the whole call
        moved = sink.playhead - playhead
    finally:
        sink.close()
    assert moved >= 0.8 * HOLD_S * 48_000, f"the playhead moved {moved} samples while Python was frozen"
    assert sink.out.gaps == gaps  # every block was in the C ring: nothing played short
    assert sink.audio_tid is not None and sink.memory is not None
