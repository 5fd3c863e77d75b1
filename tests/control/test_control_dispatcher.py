"""The transport-agnostic dispatcher: MIDI/OSC in, shaped and coalesced ControlEvents out."""

from __future__ import annotations

import logging

import mido
import pytest

from control_target import MemoryTarget
from engine.control.dispatcher import Dispatcher, OscInput
from engine.control.mapping import MappingSet, parse
from engine.control.rejects import Rejects


def make(controls, *, outputs=None, target=None, **kw):
    data = {"info": {"name": "t"}, "controls": controls}
    if outputs:
        data["outputs"] = outputs
    t = target or MemoryTarget()
    return t, Dispatcher(t, MappingSet.of([parse(data, file="t.yaml")]), **kw)


def cc(control, value, channel=0):
    return mido.Message("control_change", channel=channel, control=control, value=value)


def test_cc_range_and_coalescing_to_latest():
    t, d = make([{"match": {"midi": {"cc": 7, "channel": 2}}, "target": "sampling.temperature",
                  "options": {"range": [0.5, 1.5]}}])
    for v in range(128):
        d.handle(cc(7, v, channel=1), "dev")
    d.handle(cc(7, 0, channel=0), "dev")  # wrong channel: ignored
    assert d.pending == 1
    assert d.drain() == 1
    assert [(e.target, e.value, e.source) for e in t.events] == [("sampling.temperature", 1.5, "midi:dev")]
    assert d.drain() == 0


def test_port_pattern_selects_device():
    t, d = make([{"match": {"midi": {"cc": 1, "port": "*nano*"}}, "target": "mean.weight", "options": {"range": [0, 1]}}])
    d.handle(cc(1, 127), "Launch Control XL")
    d.drain()
    assert t.events == []
    d.handle(cc(1, 127), "nanoKONTROL2 MIDI 1")
    d.drain()
    assert t.events[0].value == 1.0


def test_cc14_and_nrpn_through_dispatcher():
    t, d = make([
        {"match": {"midi": {"cc14": 1}}, "target": "master.gain", "options": {"range": [0, 2]}},
        {"match": {"midi": {"nrpn": 266}}, "target": "mean.weight", "options": {"range": [0, 1]}},
        {"match": {"midi": {"nrpn": 3, "channel": 1}}, "target": "sampling.top_k", "options": {"range": [1, 128], "bits": 7}},
    ])
    d.handle(cc(1, 127), "p")
    d.handle(cc(33, 127), "p")
    for control, value in ((99, 2), (98, 10), (6, 64), (38, 0)):
        d.handle(cc(control, value), "p")
    for control, value in ((99, 0), (98, 3), (6, 42)):
        d.handle(cc(control, value), "p")
    d.drain()
    got = {e.target: e.value for e in t.events}
    assert got["master.gain"] == 2.0
    assert got["mean.weight"] == pytest.approx(8192 / 16383)
    assert got["sampling.top_k"] == 43


def test_relative_encoder_accumulates_from_engine_value():
    t, d = make([{"match": {"midi": {"cc": 20}}, "target": "mean.weight",
                  "options": {"range": [0, 1], "relative": "twos_complement", "step": 0.01}}])
    t.change("mean.weight", 0.5, "patch")
    d.handle(cc(20, 3), "enc")  # +3 ticks
    d.handle(cc(20, 127), "enc")  # -1 tick
    d.drain()
    assert t.events[-1].value == pytest.approx(0.52)


def test_soft_takeover_through_listener():
    t, d = make([{"match": {"midi": {"cc": 0}}, "target": "style.0.weight",
                  "options": {"range": [0, 1], "soft_takeover": "pickup", "threshold": 0.02}}])
    t.change("style.0.weight", 0.75, "patch")  # patch load from elsewhere
    d.handle(cc(0, 10), "f")
    d.drain()
    assert t.events == []  # far from 0.75: ignored
    d.handle(cc(0, 127), "f")  # fast move past 0.75 (95 -> 127 never sent) picks up
    d.drain()
    assert [e.value for e in t.events] == [1.0]


def test_switch_modes_and_actions():
    t, d = make([
        {"match": {"midi": {"note": 36}}, "target": "drum.hit"},
        {"match": {"midi": {"cc": 46}}, "target": "safety.freeze", "options": {"switch": "toggle"}},
        {"match": {"midi": {"cc": 47}}, "target": "safety.freeze", "options": {"switch": "momentary"}},
        {"match": {"midi": {"cc": 41}}, "target": "patch.load", "options": {"value": "chorus", "quantize": "bar"}},
    ])
    for _ in range(3):
        d.handle(mido.Message("note_on", note=36, velocity=90), "pads")
        d.handle(mido.Message("note_off", note=36), "pads")
    d.handle(cc(41, 127), "x")
    d.handle(cc(41, 0), "x")
    d.drain()
    assert [e.target for e in t.events] == ["drum.hit"] * 3 + ["patch.load"]  # hits are not coalesced
    assert (t.events[-1].value, t.events[-1].quantize) == ("chorus", "bar")
    t.events.clear()
    d.handle(cc(46, 127), "x")
    d.drain()
    d.handle(cc(46, 0), "x")
    d.handle(cc(46, 127), "x")
    d.drain()
    assert [e.value for e in t.events] == [True, False]
    t.events.clear()
    d.handle(cc(47, 127), "x")
    d.drain()
    d.handle(cc(47, 0), "x")
    d.drain()
    assert [e.value for e in t.events] == [True, False]


def test_keyboard_notes_velocity_and_release():
    t, d = make([{"match": {"midi": {"notes": [48, 72]}}, "target": "note.*"}])
    d.handle(mido.Message("note_on", note=60, velocity=127), "kb")
    d.handle(mido.Message("note_on", note=64, velocity=0), "kb")  # running-status release
    d.handle(mido.Message("note_off", note=60, velocity=40), "kb")
    d.handle(mido.Message("note_on", note=30, velocity=100), "kb")  # outside the range
    d.drain()
    assert [(e.target, e.value) for e in t.events] == [("note.60", 1.0), ("note.64", 0.0), ("note.60", 0.0)]


def test_program_change_pitchbend_and_pressure():
    t, d = make([
        {"match": {"midi": {"program": "any"}}, "target": "patch.load"},
        {"match": {"midi": {"program": 5}}, "target": "patch.next"},
        {"match": {"midi": {"pitchbend": True}}, "target": "mean.weight", "options": {"range": [-1, 1]}},
        {"match": {"midi": {"aftertouch": True}}, "target": "master.gain", "options": {"range": [0, 1]}},
    ])
    d.handle(mido.Message("program_change", program=5), "p")
    d.handle(mido.Message("pitchwheel", pitch=8191), "p")
    d.handle(mido.Message("aftertouch", value=127), "p")
    d.drain()
    got = [(e.target, e.value) for e in t.events]
    assert ("patch.load", 5) in got and ("patch.next", None) in got
    assert ("mean.weight", 1.0) in got and ("master.gain", 1.0) in got


def test_smoothing_ramps_one_step_per_drain():
    t, d = make([{"match": {"osc": "/g"}, "target": "master.gain", "options": {"range": [0, 1], "smoothing": 0.16}}],
                frame_s=0.04)
    t.change("master.gain", 0.0, "patch")
    d.handle(OscInput("/g", (1.0,)), "osc:x")
    values = []
    for _ in range(5):
        d.drain()
        values.append(t.events[-1].value if t.events else None)
    assert values == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0])
    assert len(t.events) == 4


def test_quantize_passes_through_and_defaults():
    t, d = make([{"match": {"osc": "/gain"}, "target": "master.gain", "options": {"range": [0, 2], "quantize": "beat"}},
                 {"match": {"osc": "/next"}, "target": "patch.next"}])
    d.handle(OscInput("/gain", (0.5,)), "osc:x")
    d.handle(OscInput("/next", (1.0,)), "osc:x")
    d.handle(OscInput("/backline/patch/load", ("verse", "bar")), "osc:x")
    d.handle(OscInput("/backline/patch/load", ("chorus", "now")), "osc:x")  # bar only: refused, not moved
    d.drain()
    got = {e.target: (e.value, e.quantize) for e in t.events}
    assert got == {"master.gain": (1.0, "beat"), "patch.next": (None, "bar"), "patch.load": ("verse", "bar")}
    assert d.rejects.counts() == {"bad_value": 1}


def test_osc_space_clamps_and_rejects_with_counts(caplog):
    t, d = make([])
    msgs = [("/backline/sampling/temperature", (9.0,)), ("/backline/sampling/temperature", (float("nan"),)),
            ("/backline/sampling/temperature", ("hot",)), ("/backline/sampling/temperature", ()),
            ("/backline/nope", (1.0,)), ("/backline/tempo/lock", ("sideways",)), ("/backline/sampling/top_k", (7.6,))]
    for address, args in msgs:
        d.handle(OscInput(address, args), "osc:x")
    d.drain()
    assert {e.target: e.value for e in t.events} == {"sampling.temperature": 4.0, "sampling.top_k": 8}
    assert d.rejects.counts() == {"clamped": 1, "not_finite": 1, "wrong_type": 1, "wrong_count": 1,
                                  "unknown_address": 1, "bad_value": 1}


def test_rejects_are_logged_rate_limited(caplog):
    now = [0.0]
    r = Rejects(interval_s=5.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="engine.control.rejects"):
        for _ in range(1000):
            r.reject("wrong_type", "x", "osc:a")
        now[0] = 6.0
        r.reject("wrong_type", "x", "osc:a")
        r.reject("not_finite", "y", "osc:a")
    assert r.counts() == {"wrong_type": 1001, "not_finite": 1}
    lines = [rec.getMessage() for rec in caplog.records]
    assert len(lines) == 3
    assert "999 more since last report" in lines[1]


def test_flood_memory_is_bounded():
    t, d = make([{"match": {"osc": f"/f/{i}"}, "target": f"centroid.{i}.weight", "options": {"range": [0, 1]}}
                 for i in range(8)], max_queued=16)
    for n in range(20000):
        d.handle(OscInput(f"/f/{n % 8}", (n % 100 / 100,)), "osc:x")
        d.handle(OscInput("/backline/drum/hit", ()), "osc:x")
    assert d.pending == 8 + 16
    assert d.rejects.counts()["queue_full"] == 20000 - 16
    assert d.drain() == 24


def test_failing_handler_is_logged_and_survives(monkeypatch):
    t, d = make([{"match": {"osc": "/a"}, "target": "mean.weight"}])

    def boom(*a, **k):
        raise RuntimeError("boom")

    monkeypatch.setattr(d, "_apply", boom)
    d.handle(OscInput("/a", (0.5,)), "osc:x")
    assert d.rejects.counts() == {"handler_error": 1}
    monkeypatch.undo()
    d.handle(OscInput("/a", (0.5,)), "osc:x")
    assert d.drain() == 1


def test_malformed_midi_bytes_counted():
    t, d = make([])
    d.handle_bytes([0xB0, 200, 1], "p")
    d.handle_bytes([0x90, 60], "p")
    d.handle_bytes([0xF8], "p")
    assert d.rejects.counts()["malformed_midi"] == 2


def test_a_mapping_asking_a_bar_only_target_for_beat_names_file_and_key():
    """A patch (or tempo) changes only at a bar line: `quantize: beat` on it is a mapping error
    naming the control, not a change silently moved to the next bar."""
    from engine.control.mapping import MappingError, parse

    with pytest.raises(MappingError, match=r"pedal: at controls\[0\].*options: patch.load changes only at a bar line"):
        parse({"info": {"name": "p"}, "controls": [
            {"match": {"midi": {"cc": 41}}, "target": "patch.load", "options": {"quantize": "beat"}}]}, file="pedal")
