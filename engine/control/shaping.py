"""Exact value shaping between a control's raw value and a parameter's native value.

Pure functions and small state machines, no I/O and no clocks, so every option can be
tested with exact expected values. A control value travels: raw MIDI/OSC number ->
normalised 0..1 (`normalise_*`, 14-bit/NRPN assembly, relative decoding) -> `Shaper`
(invert, curve, range) -> soft takeover -> switch behaviour -> smoothing -> ControlEvent.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass
from typing import Literal

CurveName = Literal["linear", "exponential", "logarithmic"]
RelativeMode = Literal["twos_complement", "binary_offset", "signed_bit"]
Takeover = Literal["jump", "pickup", "scale"]
SwitchMode = Literal["momentary", "toggle", "trigger"]

#: Ratio of the exponential and logarithmic curves: the exponential curve is
#: (B**x - 1) / (B - 1), so at x = 0.5 it gives 1/11; the logarithmic curve is its inverse.
CURVE_BASE = 100.0


@dataclass(frozen=True, slots=True)
class Shaper:
    """Maps a normalised control position (0..1) to a native value and back (for feedback).

    `points` is a curve given as (x, y) pairs, x strictly increasing from 0 to 1, y in 0..1,
    linearly interpolated; it replaces `curve`.
    """

    low: float = 0.0
    high: float = 1.0
    invert: bool = False
    curve: CurveName = "linear"
    points: tuple[tuple[float, float], ...] = ()

    def __post_init__(self) -> None:
        if self.points:
            xs = [p[0] for p in self.points]
            if len(xs) < 2 or xs[0] != 0.0 or xs[-1] != 1.0 or any(b <= a for a, b in zip(xs, xs[1:])):
                raise ValueError(f"curve points need x strictly increasing from 0 to 1, got {list(self.points)}")
            if any(not 0.0 <= p[1] <= 1.0 for p in self.points):
                raise ValueError(f"curve point y values must be in 0..1, got {list(self.points)}")

    @property
    def monotonic(self) -> bool:
        """True when the curve can be inverted (needed for soft takeover and feedback)."""
        ys = [p[1] for p in self.points]
        return not ys or all(b > a for a, b in zip(ys, ys[1:])) or all(b < a for a, b in zip(ys, ys[1:]))

    def to_native(self, x: float) -> float:
        """Normalised control position -> native parameter value."""
        x = min(1.0, max(0.0, x))
        if self.invert:
            x = 1.0 - x
        return self.low + _apply_curve(self, x) * (self.high - self.low)

    def to_control(self, value: float) -> float | None:
        """Native value -> normalised control position; None where the curve is not invertible."""
        if not self.monotonic or self.high == self.low:
            return None
        y = min(1.0, max(0.0, (value - self.low) / (self.high - self.low)))
        x = _invert_curve(self, y)
        return 1.0 - x if self.invert else x


def _apply_curve(shaper: Shaper, x: float) -> float:
    if shaper.points:
        return _interpolate(shaper.points, x)
    if shaper.curve == "exponential":
        return (CURVE_BASE**x - 1.0) / (CURVE_BASE - 1.0)
    if shaper.curve == "logarithmic":
        return math.log1p((CURVE_BASE - 1.0) * x) / math.log(CURVE_BASE)
    return x


def _invert_curve(shaper: Shaper, y: float) -> float:
    if shaper.points:
        pts = shaper.points
        if pts[-1][1] < pts[0][1]:
            return _interpolate(tuple((py, px) for px, py in reversed(pts)), y)
        return _interpolate(tuple((py, px) for px, py in pts), y)
    if shaper.curve == "exponential":
        return math.log1p((CURVE_BASE - 1.0) * y) / math.log(CURVE_BASE)
    if shaper.curve == "logarithmic":
        return (CURVE_BASE**y - 1.0) / (CURVE_BASE - 1.0)
    return y


def _interpolate(points: tuple[tuple[float, float], ...], x: float) -> float:
    xs = [p[0] for p in points]
    x = min(xs[-1], max(xs[0], x))
    i = min(len(points) - 2, max(0, bisect_right(xs, x) - 1))
    (x0, y0), (x1, y1) = points[i], points[i + 1]
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0)


def normalise_7bit(value: int) -> float:
    """MIDI data byte 0..127 -> 0..1 (127 is exactly 1)."""
    return value / 127.0


def normalise_14bit(value: int) -> float:
    """14-bit value 0..16383 (14-bit CC, NRPN, pitch bend offset by 8192) -> 0..1."""
    return value / 16383.0


def decode_relative(value: int, mode: RelativeMode) -> int:
    """A relative encoder's 7-bit value -> signed tick count.

    two's complement: 1..63 up, 127 = -1 .. 64 = -64; binary offset: 64 = 0, 65 = +1, 63 = -1;
    signed bit: bit 6 is the sign, 1 = +1, 65 = -1.
    """
    if not 0 <= value <= 127:
        raise ValueError(f"relative encoder value must be in 0..127, got {value}")
    if mode == "twos_complement":
        return value - 128 if value >= 64 else value
    if mode == "binary_offset":
        return value - 64
    if mode == "signed_bit":
        return -(value & 0x3F) if value & 0x40 else value
    raise ValueError(f"relative mode must be twos_complement, binary_offset or signed_bit, got {mode!r}")


class Cc14Assembler:
    """Pairs 14-bit CC halves: MSB on CC n (0..31), LSB on CC n+32.

    The MSB is held; the value is complete when its LSB arrives (the order controllers
    send), so a fader never jumps to MSB<<7 with a stale LSB. Keyed by channel.
    """

    def __init__(self) -> None:
        self._msb: dict[tuple[int, int], int] = {}

    def feed(self, channel: int, control: int, value: int) -> tuple[int, int] | None:
        """Feed one CC; return (msb controller number, 14-bit value) when a pair completes."""
        if control < 32:
            self._msb[(channel, control)] = value
            return None
        if 32 <= control < 64 and (channel, control - 32) in self._msb:
            return control - 32, (self._msb[(channel, control - 32)] << 7) | value
        return None


class NrpnAssembler:
    """Assembles NRPN from CC 99 (parameter MSB), 98 (parameter LSB), 6 (data MSB), 38 (data LSB).

    The data MSB completes a 7-bit value and the data LSB after it a 14-bit value; a rule
    says which it wants (`bits`). State is per channel; the parameter stays selected for
    further data entries, and a new parameter select forgets the data MSB.
    """

    def __init__(self) -> None:
        self._param: dict[int, list[int | None]] = {}
        self._data_msb: dict[int, int] = {}

    def feed(self, channel: int, control: int, value: int) -> tuple[int, int, Literal[7, 14]] | None:
        """Feed one CC; return (parameter number, value, bits) when a data entry completes."""
        param = self._param.setdefault(channel, [None, None])
        if control in (99, 98):
            param[0 if control == 99 else 1] = value
            if control == 99:
                param[1] = None
            self._data_msb.pop(channel, None)
        elif control == 6 and None not in param:
            self._data_msb[channel] = value
            return (param[0] << 7) | param[1], value, 7
        elif control == 38 and None not in param and channel in self._data_msb:
            return (param[0] << 7) | param[1], (self._data_msb[channel] << 7) | value, 14
        return None

    @staticmethod
    def is_nrpn_cc(control: int) -> bool:
        return control in (99, 98, 6, 38)


class SoftTakeover:
    """Keeps a physical control from yanking a parameter that changed elsewhere.

    Positions are normalised control positions (0..1). `jump` always follows the control.
    `pickup` ignores the control until it comes within `threshold` of the parameter or
    crosses it between two messages (so a fast move that skips the pickup point still
    catches it). `scale` moves the parameter proportionally towards the end the control is
    heading for, so both meet at that end; it locks once they are within `threshold`.
    An unknown parameter position (None) takes over at once.
    """

    def __init__(self, mode: Takeover, *, threshold: float = 3 / 127) -> None:
        self.mode = mode
        self.threshold = threshold
        self._param: float | None = None
        self._control: float | None = None
        self._locked = True

    def parameter_changed(self, position: float | None) -> None:
        """The parameter moved elsewhere (patch load, another control): unlock if it differs."""
        self._param = position
        if position is not None:
            self._locked = self._control is not None and abs(position - self._control) <= self.threshold

    def move(self, control: float) -> float | None:
        """The control moved to `control`; return the position to apply, or None to ignore."""
        prev, self._control = self._control, control
        param = self._param
        if self.mode == "jump" or param is None or self._locked:
            return self._accept(control)
        if abs(control - param) <= self.threshold:
            return self._accept(control)
        if prev is not None and (prev - param) * (control - param) <= 0:
            return self._accept(control)
        if self.mode == "scale" and prev is not None and control != prev:
            if control > prev:
                out = param + (control - prev) * (1.0 - param) / (1.0 - prev)
            else:
                out = param - (prev - control) * param / prev
            out = min(1.0, max(0.0, out))
            self._param = out
            self._locked = abs(out - control) <= self.threshold
            return out
        return None

    def _accept(self, control: float) -> float:
        self._locked = True
        self._param = control
        return control


class Switch:
    """Button behaviour. A press is a value >= 0.5 (note on, CC >= 64), a release below.

    momentary: press -> 1, release -> 0. toggle: each press flips, releases are ignored.
    trigger: each press fires once (returns 1), releases are ignored.
    """

    def __init__(self, mode: SwitchMode) -> None:
        self.mode = mode
        self.state = False
        self._down = False

    def set_state(self, on: bool) -> None:
        """The target changed elsewhere (toggle state follows it, so the next press flips from there)."""
        self.state = on

    def press(self, x: float) -> float | None:
        """A new normalised button value; return 0/1 to apply, or None to ignore."""
        down = x >= 0.5
        edge, self._down = down != self._down, down
        if self.mode == "momentary":
            if not edge:
                return None
            self.state = down
            return 1.0 if down else 0.0
        if not (down and edge):
            return None
        if self.mode == "toggle":
            self.state = not self.state
            return 1.0 if self.state else 0.0
        return 1.0


class Ramp:
    """Linear smoothing towards a target over `time_s`, advanced once per generated frame.

    A new target restarts the ramp from the current value; a ramp of zero time jumps.
    """

    def __init__(self, time_s: float, *, frame_s: float) -> None:
        self.steps_total = max(1, round(time_s / frame_s))
        self.current: float | None = None
        self._target: float | None = None
        self._step = 0.0
        self._left = 0

    def set_target(self, value: float) -> None:
        if self.current is None:
            self.current = value
        self._target = value
        self._left = self.steps_total
        self._step = (value - self.current) / self.steps_total

    def advance(self) -> float | None:
        """One frame on; the new value, or None when already at the target."""
        if self._left <= 0 or self._target is None:
            return None
        self._left -= 1
        self.current = self._target if self._left == 0 else self.current + self._step
        return self.current

    @property
    def active(self) -> bool:
        return self._left > 0
