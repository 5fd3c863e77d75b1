"""Every shaping option with exact expected values."""

from __future__ import annotations

import pytest

from engine.control.shaping import (
    Cc14Assembler,
    NrpnAssembler,
    Ramp,
    Shaper,
    SoftTakeover,
    Switch,
    decode_relative,
    normalise_7bit,
    normalise_14bit,
)


def test_range_and_invert():
    s = Shaper(low=20.0, high=220.0)
    assert s.to_native(0.0) == 20.0
    assert s.to_native(1.0) == 220.0
    assert s.to_native(0.25) == 70.0
    inv = Shaper(low=20.0, high=220.0, invert=True)
    assert inv.to_native(0.0) == 220.0
    assert inv.to_native(0.25) == 170.0
    assert inv.to_control(170.0) == pytest.approx(0.25, abs=1e-12)


def test_curves_exact():
    exp, log = Shaper(curve="exponential"), Shaper(curve="logarithmic")
    assert exp.to_native(0.5) == pytest.approx(1 / 11, abs=1e-12)  # (100**0.5 - 1) / 99
    assert log.to_native(1 / 11) == pytest.approx(0.5, abs=1e-12)
    assert exp.to_native(0.0) == 0.0 and exp.to_native(1.0) == pytest.approx(1.0)
    assert exp.to_control(1 / 11) == pytest.approx(0.5, abs=1e-12)
    assert log.to_control(0.5) == pytest.approx(1 / 11, abs=1e-12)


def test_curve_points_and_inverse():
    s = Shaper(low=0.0, high=2.0, points=((0.0, 0.0), (0.5, 0.8), (1.0, 1.0)))
    assert s.to_native(0.25) == pytest.approx(0.8)  # y 0.4 * 2
    assert s.to_native(0.75) == pytest.approx(1.8)  # y 0.9 * 2
    assert s.to_control(1.8) == pytest.approx(0.75)
    falling = Shaper(points=((0.0, 1.0), (1.0, 0.0)))
    assert falling.to_native(0.2) == pytest.approx(0.8)
    assert falling.to_control(0.8) == pytest.approx(0.2)
    vee = Shaper(points=((0.0, 1.0), (0.5, 0.0), (1.0, 1.0)))
    assert vee.monotonic is False and vee.to_control(0.5) is None
    with pytest.raises(ValueError, match="strictly increasing"):
        Shaper(points=((0.0, 0.0), (0.0, 1.0), (1.0, 1.0)))


def test_normalise():
    assert normalise_7bit(127) == 1.0 and normalise_7bit(0) == 0.0
    assert normalise_14bit(16383) == 1.0 and normalise_14bit(8192) == 8192 / 16383


@pytest.mark.parametrize(
    ("mode", "value", "ticks"),
    [
        ("twos_complement", 1, 1), ("twos_complement", 63, 63), ("twos_complement", 127, -1),
        ("twos_complement", 64, -64), ("twos_complement", 120, -8),
        ("binary_offset", 64, 0), ("binary_offset", 65, 1), ("binary_offset", 63, -1), ("binary_offset", 0, -64),
        ("binary_offset", 127, 63),
        ("signed_bit", 1, 1), ("signed_bit", 65, -1), ("signed_bit", 127, -63), ("signed_bit", 64, 0),
        ("signed_bit", 10, 10),
    ],
)
def test_relative_encodings(mode, value, ticks):
    assert decode_relative(value, mode) == ticks


def test_relative_rejects_bad_values():
    with pytest.raises(ValueError, match="0..127"):
        decode_relative(128, "binary_offset")
    with pytest.raises(ValueError, match="relative mode"):
        decode_relative(1, "gray")


def test_cc14_pairs_msb_then_lsb():
    a = Cc14Assembler()
    assert a.feed(0, 1, 64) is None  # MSB held
    assert a.feed(0, 33, 5) == (1, 64 * 128 + 5)
    assert a.feed(0, 33, 6) == (1, 8198)  # new LSB with the held MSB
    assert a.feed(1, 33, 6) is None  # no MSB on channel 2 yet
    assert a.feed(0, 7, 127) is None and a.feed(0, 39, 127) == (7, 16383)


def test_nrpn_assembly_7_and_14_bit():
    n = NrpnAssembler()
    assert n.feed(0, 99, 2) is None
    assert n.feed(0, 98, 10) is None
    assert n.feed(0, 6, 100) == (2 * 128 + 10, 100, 7)
    assert n.feed(0, 38, 3) == (266, 100 * 128 + 3, 14)
    # data entry without a selected parameter on another channel: nothing
    assert n.feed(3, 6, 1) is None and n.feed(3, 38, 1) is None
    # a new parameter MSB forgets the LSB until it is sent again
    assert n.feed(0, 99, 1) is None and n.feed(0, 6, 5) is None
    assert n.feed(0, 98, 0) is None and n.feed(0, 38, 9) is None  # LSB without data MSB
    assert n.feed(0, 6, 5) == (128, 5, 7)


def test_soft_takeover_pickup():
    t = SoftTakeover("pickup", threshold=0.02)
    t.parameter_changed(0.6)
    assert t.move(0.1) is None
    assert t.move(0.3) is None
    assert t.move(0.59) == 0.59  # within threshold: picked up
    assert t.move(0.2) == 0.2  # locked now, follows


def test_soft_takeover_fast_move_skips_pickup_point():
    t = SoftTakeover("pickup", threshold=0.02)
    t.parameter_changed(0.6)
    assert t.move(0.1) is None
    assert t.move(0.9) == 0.9  # jumped over 0.6 between two messages: crossed, so picked up
    t.parameter_changed(0.3)  # patch load moves the parameter
    assert t.move(0.8) is None  # no cross (0.9 -> 0.8 both above 0.3)
    assert t.move(0.05) == 0.05  # crossed 0.3 downwards


def test_soft_takeover_scale_and_jump():
    t = SoftTakeover("scale", threshold=0.01)
    t.parameter_changed(0.5)
    assert t.move(0.2) is None  # first message only locates the control
    assert t.move(0.6) is not None  # crossed 0.5: takes over
    t.parameter_changed(0.8)  # parameter above the control now
    assert t.move(0.4) == pytest.approx(0.8 - 0.2 * 0.8 / 0.6)  # moving down, scaled towards 0
    # moving up scales towards 1: from param p and control c, p + dx * (1 - p) / (1 - c)
    p = 0.8 - 0.2 * 0.8 / 0.6
    assert t.move(0.5) == pytest.approx(p + 0.1 * (1 - p) / (1 - 0.4))  # 0.5 stays below p: no cross
    j = SoftTakeover("jump")
    j.parameter_changed(0.9)
    assert j.move(0.0) == 0.0


def test_soft_takeover_unknown_parameter_takes_over():
    assert SoftTakeover("pickup").move(0.3) == 0.3


def test_switch_behaviours():
    m = Switch("momentary")
    assert [m.press(v) for v in (1.0, 1.0, 0.0, 0.0)] == [1.0, None, 0.0, None]
    t = Switch("toggle")
    assert [t.press(v) for v in (1.0, 0.0, 1.0, 0.0, 1.0)] == [1.0, None, 0.0, None, 1.0]
    t.set_state(False)
    assert t.press(0.0) is None and t.press(0.9) == 1.0
    g = Switch("trigger")
    assert [g.press(v) for v in (0.6, 0.7, 0.1, 0.5)] == [1.0, None, None, 1.0]


def test_smoothing_ramp_exact_steps():
    r2 = Ramp(0.2, frame_s=0.04)
    r2.current = 0.0
    r2.set_target(1.0)
    steps = [r2.advance() for _ in range(6)]
    assert steps[:5] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0]) and steps[5] is None
    r2.set_target(0.0)  # restarts from the current value
    assert r2.advance() == pytest.approx(0.8)
    jump = Ramp(0.0, frame_s=0.04)
    jump.set_target(3.0)
    assert jump.advance() == 3.0 and jump.advance() is None
