"""MIDI controllers on JACK: rtmidi's input is polled, so no Python runs on JACK's process thread.
With the interpreter frozen for 400 ms (a C call that keeps the GIL) while a controller sends
CCs, every CC reaches the dispatcher once the GIL is back (rtmidi queued them in C++). With
rtmidi's Python callback each cycle carrying MIDI waits for the GIL on JACK's process thread:
checked once, 29 of the 30 CCs were lost."""

from __future__ import annotations

import ctypes
import time
from pathlib import Path

import mido
import pytest

jack = pytest.importorskip("jack", reason="JACK-Client is in the test extra")

from control_helpers import wait_for  # noqa: E402
from control_target import MemoryTarget  # noqa: E402

from engine.clock.jack_midi import CMidiPort  # noqa: E402
from engine.control.dispatcher import Dispatcher  # noqa: E402
from engine.control.mapping import MappingSet, load_file  # noqa: E402
from engine.control.midi_io import MidiHub  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
CCS = 30


def test_a_frozen_interpreter_loses_no_cc_from_jack_midi(jack) -> None:  # type: ignore[no-untyped-def]
    import jack as jackclient

    dispatcher = Dispatcher(MemoryTarget(), MappingSet.of([load_file(REPO / "mappings/korg-nanokontrol2.yaml")]))
    watcher = jackclient.Client("bl-xrun-watch", no_start_server=True)
    xruns = [0]
    watcher.set_xrun_callback(lambda _delay: xruns.__setitem__(0, xruns[0] + 1))
    watcher.activate()
    controller = jackclient.Client("bl-gil-cc", no_start_server=True)  # a controller with no Python in its
    queue = CMidiPort(controller, controller.midi_outports.register("out"), output=True)  # process callback
    controller.activate()
    hub = MidiHub(dispatcher, api="jack", inputs=["bl-gil-cc*"])
    try:
        hub.start()
        assert wait_for(lambda: hub.inputs == ["bl-gil-cc:out"], 10), hub.inputs
        time.sleep(0.3)
        before, received = xruns[0], dispatcher.received
        first = controller.frame_time + 2400
        for k in range(CCS):  # a fader moving for 300 ms: a CC every 10 ms
            queue.put((first + k * 480) & 0xFFFFFFFF, bytes(mido.Message("control_change", control=0, value=k).bytes()))
        ctypes.PyDLL(None).usleep(400_000)  # PyDLL: the GIL is held for the whole call
        time.sleep(0.5)  # the xrun callback (Python, on JACK's notification thread) catches up
        during = xruns[0] - before
        assert wait_for(lambda: dispatcher.received - received == CCS, 5), dispatcher.received - received
    finally:
        hub.close()
        for client in (controller, watcher):
            client.deactivate()
            client.close()
    # JACK's xruns are printed, not asserted: this VM's dummy server has bursts of its own (and any
    # Python JACK client another test left in this process stalls with the GIL held). The CCs are
    # the check: with rtmidi's Python callback, 29 of the 30 were lost.
    print(f"\n{during} JACK xruns while the interpreter was frozen")
