"""MIDI controllers on JACK: rtmidi's input is polled, so no Python runs on JACK's process thread.
With the interpreter frozen for 400 ms (a C call that keeps the GIL) while a controller sends
CCs, every CC reaches the dispatcher once the GIL is back (rtmidi queued them in C++). With
rtmidi's Python callback each cycle carrying MIDI waits for the GIL on JACK's process thread:
checked once, 29 of the 30 CCs were lost. Messages drained late together keep the times they
reached JACK at: a tempo tapped while the interpreter was frozen is the tempo tapped, and a key
held 100 ms is held for the frames it was down."""

from __future__ import annotations

import ctypes
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mido
import pytest

jack = pytest.importorskip("jack", reason="JACK-Client is in the test extra")

from control_helpers import FrameLog, serving, wait_for  # noqa: E402
from jackserver import portaudio_fixture  # noqa: E402
from control_target import MemoryTarget  # noqa: E402

from engine.clock.jack_midi import CMidiPort  # noqa: E402
from engine.conditioning import NOTE_HELD, NOTE_MASK, NOTE_OFF, NOTE_ONSET  # noqa: E402
from engine.control.dispatcher import Dispatcher  # noqa: E402
from engine.control.mapping import MappingSet, load_file  # noqa: E402
from engine.control.midi_io import MidiHub  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
CCS = 30


@pytest.fixture(scope="module")
def jack() -> Iterator[str]:
    """This module's server: the engine's JACK output opens PortAudio in the test process."""
    yield from portaudio_fixture()


def freeze_interpreter(seconds: float) -> None:
    ctypes.PyDLL(None).usleep(round(seconds * 1e6))  # PyDLL: the GIL is held for the whole call


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
        freeze_interpreter(0.4)
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


@contextmanager
def engine_with_controller(tmp_path: Path, name: str, mapping: str, tempo: int) -> Iterator[tuple[Any, Any, Any, FrameLog]]:
    """The running engine on JACK (`serving`) with `mapping`, and a JACK MIDI controller `name`
    with no Python in its process callback (CMidiPort: events at exact frames), bound and
    playing: (service, controller, its queue, the frames the generator received)."""
    import jack as jackclient

    config = tmp_path / "config.yaml"
    (tmp_path / "p.yaml").write_text(f"name: p\ntempo: {tempo}\nmeter: 4\nseed: 1\nstyle:\n  - {{text: drums, weight: 1.0}}\n")
    config.write_text(f"output: jack\npatch: {tmp_path / 'p.yaml'}\nstate_file: null\nlookahead_ms: 200\nosc: {{port: 0}}\n"
                      f"midi: {{enabled: true, api: jack, inputs: ['*{name}*']}}\nmappings: [{REPO / 'mappings' / mapping}]\n")
    controller = jackclient.Client(name, no_start_server=True)
    queue = CMidiPort(controller, controller.midi_outports.register("out"), output=True)
    controller.activate()
    frames: list[FrameLog] = []
    try:
        with serving(config, listener=lambda service: frames.append(FrameLog(service.engine)) or (lambda *_: None)) as service:
            assert service.control.midi is not None
            assert wait_for(lambda: service.control.midi.inputs == [f"{name}:out"], 10), service.control.midi.inputs
            assert wait_for(lambda: service.engine.sink.playhead > 48_000, 10)
            yield service, controller, queue, frames[0]
    finally:
        controller.deactivate()
        controller.close()


def test_taps_drained_late_together_keep_the_tempo_they_were_tapped_at(jack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Four taps 500 ms apart (120 BPM) from a controller with no Python in its process callback,
    the nanoKONTROL2's "marker set" button (CC 60), into the running engine on JACK while its
    interpreter is frozen for all of them: the poll thread drains the four at once. Stamped
    when drained, they were one tap (and, before taps stamped alike were one tap, a division by
    zero that lost the rest of that drain); stamped by when they reached JACK, the tempo is 120."""
    with engine_with_controller(tmp_path, "bl-nanoKONTROL2", "korg-nanokontrol2.yaml", 100) as (service, controller, queue, _):
        engine = service.engine
        first = controller.frame_time + 4800
        for k in range(4):
            for value in (127, 0):  # press and release, 50 ms apart
                at = first + k * 24_000 + (2400 if value == 0 else 0)
                queue.put(at & 0xFFFFFFFF, bytes(mido.Message("control_change", control=60, value=value).bytes()))
        freeze_interpreter(1.8)  # over all four taps
        assert wait_for(lambda: engine.status()["tempo"] != 100.0, 10), engine.status()["tempo"]
        assert abs(engine.status()["tempo"] - 120.0) < 1.0, engine.status()["tempo"]
        assert engine.scheduler.errors == 0


def test_a_key_drained_late_with_its_release_is_held_as_long_as_it_was_down(jack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A key down for 100 ms (2.5 frames), pressed and released at exact JACK frames by a
    controller with no Python in its process callback, into the running engine while its
    interpreter is frozen over both: the press and release are drained and taken together.
    They landed in one frame (an onset, then off: a 100 ms note cut to a blip); now the release
    keeps its distance from the press, so the frames after the onset say held until it."""
    with engine_with_controller(tmp_path, "bl-keys", "midi-keyboard.yaml", 120) as (_, controller, queue, log):
        press = controller.frame_time + 4800
        queue.put(press & 0xFFFFFFFF, bytes(mido.Message("note_on", note=64, velocity=100).bytes()))
        queue.put((press + 4800) & 0xFFFFFFFF, bytes(mido.Message("note_off", note=64).bytes()))
        freeze_interpreter(0.6)  # over the press and the release
        assert wait_for(lambda: NOTE_OFF in [int(f.notes[64]) for f in list(log.frames)], 10)
        time.sleep(0.3)
        got = [int(f.notes[64]) for f in list(log.frames)]
    onset = got.index(NOTE_ONSET)
    assert set(got[:onset]) == {NOTE_MASK}
    held = got[onset + 1:].index(NOTE_OFF)
    assert held in (1, 2) and got[onset + 1:onset + 1 + held] == [NOTE_HELD] * held, got[onset:onset + 6]
