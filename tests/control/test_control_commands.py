"""CLI subcommands and MIDI learn armed over OSC."""

from __future__ import annotations

import argparse
import socket
from pathlib import Path

import mido
import yaml
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder

from control_target import MemoryTarget
from engine.control.commands import add_commands
from engine.control.surfaces import ControlSurfaces
from engine.params import PARAMETERS

REPO = Path(__file__).resolve().parents[2]


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="backline")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_params_prints_every_parameter(capsys):
    assert run(["params"]) == 0
    out = capsys.readouterr().out
    assert all(spec.pattern in out for spec in PARAMETERS)


def test_mappings_check(capsys, tmp_path):
    assert run(["mappings", *map(str, sorted((REPO / "mappings").glob("*.yaml")))]) == 0
    assert "Korg nanoKONTROL2: 24 controls, 1 outputs" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text("info: {name: b}\ncontrols: [{match: {osc: /a}, target: nope}]\n")
    assert run(["mappings", str(bad)]) == 1
    assert "controls[0].target" in capsys.readouterr().err


def test_osc_docs_command(capsys):
    assert run(["osc-docs"]) == 0
    assert capsys.readouterr().out.strip() == (REPO / "docs/osc.md").read_text().strip()


def test_learn_armed_over_osc(tmp_path):
    target = MemoryTarget()
    with ControlSurfaces(target, learn_file=tmp_path / "learned.yaml", midi_api=None, osc_port=0) as cs, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        dispatcher, learner, server = cs.dispatcher, cs.learner, cs.osc
        s.bind(("127.0.0.1", 0))
        s.settimeout(5)
        b = OscMessageBuilder("/backline/learn")
        b.add_arg("master.gain")
        s.sendto(b.build().dgram, server.address)
        reply = OscMessage(s.recv(65536))
        assert reply.params == ["master.gain", "armed"]
        b = OscMessageBuilder("/backline/learn")
        b.add_arg("no.such")
        s.sendto(b.build().dgram, server.address)
        assert "unknown parameter" in OscMessage(s.recv(65536)).params[1]
    # arming for an unknown target left the earlier arm in place
    dispatcher.handle(mido.Message("pitchwheel", channel=2, pitch=8191), "Pedal Box:out [1]")
    assert learner.done.is_set() and learner.error is None
    saved = yaml.safe_load((tmp_path / "learned.yaml").read_text())
    assert saved["controls"][0]["match"]["midi"] == {"port": "Pedal Box:out [[]1]", "channel": 3, "pitchbend": True}
    dispatcher.handle(mido.Message("pitchwheel", channel=2, pitch=8191), "Pedal Box:out [1]")
    dispatcher.drain()
    assert (target.events[-1].target, target.events[-1].value) == ("master.gain", 2.0)


def test_control_surfaces_start_with_a_bad_file_skipped(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("info: {name: b}\ncontrols: [{match: {osc: /a}, target: nope}]\n")
    target = MemoryTarget()
    files = [REPO / "mappings/osc-generic.yaml", bad]
    with ControlSurfaces(target, mappings=files, midi_api=None, osc_port=0) as cs:
        assert [e.file for e in cs.errors] == [str(bad)]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            s.settimeout(5)
            b = OscMessageBuilder("/backline/surface/fader/4")
            b.add_arg(1.0)
            s.sendto(b.build().dgram, cs.osc.address)
            b = OscMessageBuilder("/backline/status")
            s.sendto(b.build().dgram, cs.osc.address)
            s.recv(65536)  # handled in order: the fader message came first
        assert cs.drain() == 1
    assert (target.events[0].target, target.events[0].value) == ("style.3.weight", 1.0)
