"""Mapping files: every shipped file loads; broken files give clear errors and keep the running set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from control_target import MemoryTarget
from engine.control.dispatcher import Dispatcher
from engine.control.mapping import MappingError, MappingSet, load_dir, load_file, parse
from engine.control.osc_space import describe_osc
from engine.params import lookup

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted((REPO / "mappings").glob("*.yaml"))


def test_there_are_shipped_mappings():
    names = {p.name for p in SHIPPED}
    assert {"korg-nanokontrol2.yaml", "akai-midimix.yaml", "novation-launch-control-xl.yaml",
            "generic-pedal-footswitch.yaml", "osc-generic.yaml"} <= names


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_mapping_validates_and_loads(path):
    f = load_file(path)
    assert f.rules, "a mapping without controls"
    for rule in f.rules:
        lookup("note.0" if rule.target == "note.*" else rule.target)
    raw = yaml.safe_load(path.read_text())
    numbers = [c["match"]["midi"].get("cc") for c in raw["controls"] if "midi" in c["match"] and "cc" in c["match"]["midi"]]
    assert numbers == sorted(numbers), "controls are kept sorted by MIDI number"
    sources = [json.dumps(c["match"], sort_keys=True) for c in raw["controls"]]
    assert len(sources) == len(set(sources)), "two rules on the same source"


def test_all_shipped_files_active_at_once():
    s = load_dir(REPO / "mappings")
    assert len(s.files) == len(SHIPPED)
    assert s.midi_rules("cc", 0)[0].target == "style.0.weight"  # nanoKONTROL2 fader 1
    assert s.osc_rules("/backline/surface/fader/3")[0].target == "style.2.weight"


def test_open_stage_control_session_addresses_are_mapped():
    session = json.loads((REPO / "mappings/open-stage-control/backline.json").read_text())
    assert session["type"] == "session" and session["content"]["type"] == "root"
    s = load_file(REPO / "mappings/osc-generic.yaml")
    addresses = []

    def walk(node):
        for w in node.get("widgets", []) + node.get("tabs", []):
            if w["type"] in ("fader", "knob", "button"):
                addresses.append(w["address"])
            walk(w)

    walk(session["content"])
    assert len(addresses) == 22
    mapped = {r.osc for r in s.rules}
    assert set(addresses) <= mapped


def test_osc_docs_are_generated_from_code():
    assert (REPO / "docs/osc.md").read_text() == describe_osc()


def _write(tmp_path: Path, name: str, data: object) -> Path:
    p = tmp_path / name
    p.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return p


GOOD = {"info": {"name": "t"}, "controls": [
    {"name": "fader", "match": {"midi": {"cc": 7}}, "target": "master.gain", "options": {"range": [0, 1]}}]}


@pytest.mark.parametrize(
    ("controls", "key", "problem"),
    [
        ([{"name": "knob", "match": {"midi": {"cc": 1}}, "target": "sampling.temprature"}], "controls[0] (knob).target",
         "unknown parameter"),
        ([GOOD["controls"][0], {"name": "bad curve", "match": {"midi": {"cc": 2}}, "target": "master.gain",
                                "options": {"curve": "cubic"}}], "controls[1] (bad curve).options.curve", "cubic"),
        ([{"name": "big", "match": {"midi": {"cc": 200}}, "target": "master.gain"}], "controls[0] (big).match.midi.cc",
         "200"),
        ([{"name": "range", "match": {"midi": {"cc": 3}}, "target": "master.gain", "options": {"range": [0, 5]}}],
         "controls[0] (range).options", "leaves master.gain's range 0..2"),
        ([{"name": "two", "match": {"midi": {"cc": 3, "note": 4}}, "target": "master.gain"}], "controls[0] (two).match",
         "exactly one"),
        ([{"match": {"osc": "/x"}, "target": "master.gain", "options": {"soft_takeover": "pickup", "switch": "toggle"}}],
         "controls[0].options", "soft_takeover"),
    ],
)
def test_broken_rule_names_file_rule_and_key(tmp_path, controls, key, problem):
    p = _write(tmp_path, "bad.yaml", {"info": {"name": "bad"}, "controls": controls})
    with pytest.raises(MappingError) as info:
        load_file(p)
    err = info.value
    assert err.file == str(p)
    assert err.key_path == key
    assert problem in err.problem
    assert str(p) in str(err) and key in str(err)


def test_broken_yaml_and_missing_file(tmp_path):
    with pytest.raises(MappingError, match="not valid YAML"):
        load_file(_write(tmp_path, "y.yaml", "info: [unclosed"))
    with pytest.raises(MappingError, match="cannot read"):
        load_file(tmp_path / "missing.yaml")


def test_reload_of_broken_file_keeps_running_mappings(tmp_path):
    p = _write(tmp_path, "live.yaml", GOOD)
    other = _write(tmp_path, "other.yaml", {"info": {"name": "o"}, "controls": [
        {"match": {"osc": "/o"}, "target": "mean.weight"}]})
    d = Dispatcher(MemoryTarget(), MappingSet.of([load_file(other)]))
    assert d.reload(p) is None
    before = d.mappings
    assert len(before.files) == 2
    _write(tmp_path, "live.yaml", {"info": {"name": "t"}, "controls": [{"match": {"midi": {"cc": 7}}, "target": "nope"}]})
    err = d.reload(p)
    assert isinstance(err, MappingError) and "controls[0].target" in str(err)
    assert d.mappings is before
    assert d.mappings.midi_rules("cc", 7)[0].target == "master.gain"


def test_keyboard_target_needs_a_notes_range():
    with pytest.raises(MappingError, match="notes"):
        parse({"info": {"name": "k"}, "controls": [{"match": {"midi": {"note": 60}}, "target": "note.*"}]}, file="k")
