"""The running engine with its web page on, as the web tests play it.

`stage` starts the service the way `backline run --web-port` does (the service runner),
writing to a WAV file in real time on the synth, with a patch set of two, OSC on a free port,
MIDI on the test's JACK server (a virtual "test knob" controller: CC 21 drives the
temperature with pickup soft takeover, CC 20 is the temperature's LED), and every frame's
conditioning kept (FrameLog). `changes` records every change with the frame it applied in.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import mido
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "control"))
from control_helpers import FrameLog, led_monitor, serving, wait_for  # noqa: E402
from web_helpers import JACK_BACKEND, Stage, stage_config  # noqa: E402

from engine.service.runner import Service  # noqa: E402


@pytest.fixture
def stage(jack, tmp_path: Path) -> Iterator[Stage]:
    config = stage_config(tmp_path)
    knob = mido.Backend(JACK_BACKEND).open_output("test knob", virtual=True, client_name="test knob")
    frames: list[FrameLog] = []
    changes: list[tuple[str, object, str, int]] = []

    def record(service: Service):
        frames.append(FrameLog(service.engine))
        return lambda path, value, source: changes.append((path, value, source, service.engine.scheduler.next_frame_time()))

    try:
        with led_monitor("test leds", "test leds") as leds, serving(config, listener=record) as service:
            assert service.web is not None, "the web page did not start"
            assert wait_for(lambda: service.control.midi.inputs, 10), "the engine did not open the test knob"
            assert wait_for(lambda: any("test leds" in n for n in service.control.midi.outputs), 10)
            assert wait_for(lambda: len(frames[0].frames) > 20, 10)
            yield Stage(service, frames[0], changes, knob, leds, tmp_path)
    finally:
        knob.close()
