"""MIDI learn on the ControlSurfaces the engine builds: armed over OSC or from `backline learn`,
through real JACK MIDI ports, saved, used at once, and loaded again on the next start."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mido
import pytest
import yaml
from pythonosc.osc_message import OscMessage

from control_helpers import client_socket, send, serving, wait_for
from engine.service.runner import Service

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.jack
JACK_BACKEND = "mido.backends.rtmidi/UNIX_JACK"


@pytest.fixture
def pedal(jack):
    """A fake expression pedal: a virtual JACK MIDI output."""
    out = mido.Backend(JACK_BACKEND).open_output("Pedal Box out", virtual=True, client_name="Pedal Box")
    yield out
    out.close()


def write_config(tmp_path: Path) -> Path:
    config = tmp_path / "config.yaml"
    config.write_text(
        f"output: wav:{tmp_path / 'out.wav'}\npatch: {REPO / 'patches/default.yaml'}\nstate_file: null\n"
        f"lookahead_ms: 120\nfade_s: 0.05\nosc: {{port: 0}}\nmidi: {{api: jack, inputs: ['*Pedal*']}}\n"
        f"learn_file: {tmp_path / 'learned.yaml'}\n"
    )
    return config


def cfg_drums(service: Service) -> float:
    return service.engine.scheduler.state.sampling.cfg_drums


def move_until(pedal, service: Service, value: int, expected: float) -> bool:
    """Move the pedal until the engine applied `expected` (the first move can race the port binding)."""
    return wait_for(lambda: pedal.send(mido.Message("control_change", channel=2, control=11, value=value))
                    or cfg_drums(service) == expected, 10)


def test_learn_over_osc_binds_saves_and_is_loaded_on_the_next_start(pedal, tmp_path):
    config = write_config(tmp_path)
    learned = tmp_path / "learned.yaml"
    with serving(config) as service, client_socket() as s:
        assert wait_for(lambda: service.control.midi.inputs == ["Pedal Box:Pedal Box out"])
        assert cfg_drums(service) == 1.0  # the patch's value
        send(s, service.control.osc.address, "/backline/learn", "sampling.cfg_drums")
        assert OscMessage(s.recv(65536)).params == ["sampling.cfg_drums", "armed"]
        pedal.send(mido.Message("control_change", channel=2, control=11, value=64))
        assert service.control.learner.done.wait(5) and service.control.learner.error is None
        saved = yaml.safe_load(learned.read_text())
        assert saved["controls"][0]["match"]["midi"] == {"port": "Pedal Box:Pedal Box out", "channel": 3, "cc": 11}
        assert move_until(pedal, service, 127, 7.0)  # bound at once in the running engine
    with serving(config) as service:  # the next start loads the learned file
        assert learned in service.control.mappings
        assert wait_for(lambda: service.control.midi.inputs == ["Pedal Box:Pedal Box out"])
        assert move_until(pedal, service, 0, -1.0)


def test_cli_learn_saves_to_the_configs_learn_file_which_the_engine_loads(pedal, tmp_path, jack):
    config = write_config(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(REPO), "JACK_DEFAULT_SERVER": jack}
    proc = subprocess.Popen([sys.executable, "-m", "engine", "learn", "sampling.cfg_drums", "--config", str(config),
                             "--timeout", "20"], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        for line in proc.stderr:
            if "move a control" in line:
                break
        pedal.send(mido.Message("control_change", channel=2, control=11, value=64))
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert f"saved to {tmp_path / 'learned.yaml'}" in out
    with serving(config) as service:
        assert tmp_path / "learned.yaml" in service.control.mappings
        assert wait_for(lambda: service.control.midi.inputs == ["Pedal Box:Pedal Box out"])
        assert move_until(pedal, service, 127, 7.0)
