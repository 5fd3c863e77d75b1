"""The output gain envelope: master gain times the transport, by output sample.

A gain move or a transport stop/play starts on the sample its change applied at and ramps
over GAIN_RAMP_SAMPLES, so a bar-quantized stop begins exactly on its bar line and never
clicks. The scheduler owns it (its thread only) and applies it to fitted audio before the
audio goes into the ring.
"""

from __future__ import annotations

import numpy as np

GAIN_RAMP_SAMPLES = 2400  # 50 ms: gain moves and transport stop/play start on their sample and never click


class GainEnvelope:
    """Piecewise-linear gain over output samples, from (sample, gain) points."""

    def __init__(self, gain: float) -> None:
        self._points: list[tuple[int, float]] = [(0, gain)]

    def move(self, at: int, target: float) -> None:
        """Ramp to `target` from output sample `at` (a no-op when already heading there)."""
        if target == self._points[-1][1]:
            return
        now = float(self._envelope(at, 1)[0])
        self._points = [p for p in self._points if p[0] < at] + [(at, now), (at + GAIN_RAMP_SAMPLES, target)]

    def apply(self, start: int, audio: np.ndarray) -> np.ndarray:
        """`audio` (starting at output sample `start`) times the envelope; points before it are dropped."""
        while len(self._points) > 1 and self._points[1][0] <= start:
            self._points.pop(0)
        if len(self._points) == 1 and self._points[0][1] == 1.0:
            return audio
        return audio * self._envelope(start, len(audio))[:, None]

    def _envelope(self, start: int, length: int) -> np.ndarray:
        xs, ys = zip(*self._points)
        return np.interp(np.arange(start, start + length), xs, ys).astype(np.float32)
