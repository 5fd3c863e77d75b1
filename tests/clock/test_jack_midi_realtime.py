"""The JACK MIDI clock ports run their process callbacks in C (engine/clock/jack_midi.c): with
the interpreter frozen for 300 ms (a C call that keeps the GIL), a clock queued on our output
still leaves at its frames and our input still stamps it with them. A Python process callback
would wait for the GIL through those cycles: its events late or lost, the JACK graph stalled."""

from __future__ import annotations

import ctypes
import time

import mido
import pytest

pytest.importorskip("jack", reason="JACK-Client is in the test extra")

from engine.clock.jack_in import FrameTimebase, JackClockInput  # noqa: E402
from engine.clock.jack_out import JackClockOutput  # noqa: E402

TICKS = 48
SPACING = 1000  # frames: 120 BPM at 24 ppqn and 48 kHz


@pytest.mark.jack
def test_clock_ports_keep_their_frames_while_python_holds_the_gil(jack: str) -> None:
    inp = JackClockInput("bl-gil-out:clock out", client_name="bl-gil-in")
    out = JackClockOutput("bl-gil-in:clock in", client_name="bl-gil-out")
    try:
        inp.timebase = FrameTimebase(origin=0, rate=48_000, frame_time=inp.frame_time)
        inp.poll()  # binds to our output
        assert inp.bound == "bl-gil-out:clock out"
        first = inp.frame_time() + 2400  # 50 ms from now: all but the first few fall inside the hold
        for k in range(TICKS):
            out.put(first + k * SPACING, mido.Message("clock"))
        ctypes.PyDLL(None).usleep(300_000)  # PyDLL: the GIL is held for the whole call
        time.sleep((TICKS * SPACING) / 48_000 + 0.2)
        got = [round(t * 48_000) for msg, t in inp.poll() if msg.type == "clock"]
    finally:
        out.close()
        inp.close()
    want = [first + k * SPACING for k in range(TICKS)]
    exact = sum(g == w for g, w in zip(got, want))
    assert len(got) == TICKS, (len(got), got[:5])
    assert exact >= TICKS - 2, ([g - w for g, w in zip(got, want)])  # a dummy-driver xrun may move one or two
