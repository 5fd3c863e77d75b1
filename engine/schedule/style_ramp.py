"""A style ramp: the style mix gliding from one embedding to another over output samples.

The scheduler starts one when a style change applies with `style.ramp_beats` > 0 and reads
it once per frame (its thread only).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(slots=True)
class StyleRamp:
    """From `old` at output sample `start` to `new` `length` samples later, linear or equal-power."""

    start: int
    length: int
    old: np.ndarray
    new: np.ndarray
    curve: str

    def at(self, sample: int) -> np.ndarray:
        x = 1.0 if self.length <= 0 else min(max((sample - self.start) / self.length, 0.0), 1.0)
        if self.curve == "equal_power":
            a, b = math.cos(x * math.pi / 2), math.sin(x * math.pi / 2)
        else:
            a, b = 1.0 - x, x
        return (a * self.old + b * self.new).astype(np.float32)

    def done(self, sample: int) -> bool:
        return sample >= self.start + self.length
