"""BarFitter: generated 40 ms frames onto the exact bar grid.

Each bar k gets a whole number of frames N, starting on a frame boundary, so bar k's
first frame (its downbeat drum hit, its quantized changes) begins exactly at the bar's
first output sample. The bar's L output samples read the N*1920 generated samples at a
constant ratio rho (generated samples per output sample), which is held within
`max_cents` of 1 so the pitch stays put. N is the fewest frames that can cover the bar
at that ratio, so there is never too little audio; what is left over (under one frame,
usually nothing) is spliced out at the next bar line with a short crossfade from the
stream's own continuation, so the seam has no click.

Reading at fractional positions uses scipy's cubic-spline interpolation
(`scipy.ndimage.map_coordinates`), with enough context on both sides that chunks join
seamlessly. At rho == 1 the samples are copied unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from engine.timeline import Timeline
from engine.units import CHANNELS, FRAME_SAMPLES

MARGIN = 16  # spline context on each side; the prefilter's influence decays as 0.27**n
DEFAULT_MAX_CENTS = 4.0
DEFAULT_CROSSFADE = 240  # 5 ms at 48 kHz


@dataclass(frozen=True, slots=True)
class BarPlan:
    """Where bar `bar` sits in output samples and in generated samples."""

    bar: int
    out_start: int
    out_length: int
    gen_start: int
    frames: int
    ratio: float

    @property
    def out_end(self) -> int:
        return self.out_start + self.out_length

    @property
    def gen_end(self) -> int:
        return self.gen_start + self.frames * FRAME_SAMPLES

    @property
    def read_end(self) -> float:
        """Generated position where this bar's reading stops; the rest is spliced out."""
        return self.gen_start + self.out_length * self.ratio

    @property
    def cents(self) -> float:
        return 1200.0 * math.log2(self.ratio)

    def frame_out_start(self, frame_in_bar: int) -> float:
        """Output sample where the bar's `frame_in_bar`-th frame starts."""
        return self.out_start + frame_in_bar * FRAME_SAMPLES / self.ratio

    def frame_for(self, out_sample: int) -> int:
        """Index within the bar of the frame whose start is nearest `out_sample` (halfway: the later
        one, as the scheduler applies changes: see Scheduler._apply_due)."""
        index = math.floor((out_sample - self.out_start) * self.ratio / FRAME_SAMPLES + 0.5)
        return min(max(index, 0), self.frames - 1)


def plan_bar(bar: int, *, out_start: int, out_length: int, gen_start: int, max_cents: float = DEFAULT_MAX_CENTS) -> BarPlan:
    """The fewest whole frames that cover `out_length` samples with |pitch| <= max_cents."""
    if out_length <= 0:
        raise ValueError(f"bar {bar} has no length ({out_length} samples)")
    lowest = 2.0 ** (-max_cents / 1200.0)
    highest = 2.0 ** (max_cents / 1200.0)
    frames = max(1, math.ceil(out_length * lowest / FRAME_SAMPLES - 1e-9))
    exact = frames * FRAME_SAMPLES / out_length
    ratio = 1.0 if frames * FRAME_SAMPLES == out_length else min(exact, highest)
    return BarPlan(bar, out_start, out_length, gen_start, frames, ratio)


class BarFitter:
    """Streams generated audio in, bar-grid audio out. Owned by the scheduler thread."""

    mode = "resample"
    reach = 64  # output samples before a changed generated sample that the spline (and a splice's fade) may touch

    def __init__(self, *, crossfade: int = DEFAULT_CROSSFADE, channels: int = CHANNELS,
                 max_cents: float = DEFAULT_MAX_CENTS) -> None:
        self._max_cents = max_cents
        self._crossfade = crossfade
        fade = 0.5 - 0.5 * np.cos(np.pi * (np.arange(crossfade) + 0.5) / crossfade)
        self._fade_in = fade.astype(np.float32)[:, None]
        self._channels = channels
        self._material = np.zeros((0, channels), dtype=np.float32)
        self._material_base = 0  # generated sample index of _material[0]
        self._plans: list[BarPlan] = []
        self._done_in_bar = 0  # output samples of _plans[0] already emitted
        self._splice_from: float | None = None  # read_end of the bar before _plans[0] if it spliced
        self._splice_ratio = 1.0

    @property
    def generated_end(self) -> int:
        return self._material_base + len(self._material)

    @property
    def planned_gen_end(self) -> int:
        return self._plans[-1].gen_end if self._plans else self.generated_end

    def plan(self, timeline: Timeline, bar: int) -> BarPlan:
        """The next bar's plan, continuing the generated stream."""
        return plan_bar(bar, out_start=timeline.bar_start(bar), out_length=timeline.bar_length(bar),
                        gen_start=self.planned_gen_end, max_cents=self._max_cents)

    def snapshot(self) -> tuple:
        """Position, queued bars, splice and the material kept (never written in place, so
        shared, not copied): `restore` puts the fitter back exactly (rollback)."""
        return (self._material, self._material_base, tuple(self._plans), self._done_in_bar, self._splice_from,
                self._splice_ratio)

    def restore(self, snapshot: tuple) -> None:
        material, self._material_base, plans, self._done_in_bar, self._splice_from, self._splice_ratio = snapshot
        self._material, self._plans = material, list(plans)

    def add_bar(self, plan: BarPlan) -> None:
        """Queue the next bar; it must follow the previous one in both time bases."""
        if self._plans:
            last = self._plans[-1]
            if plan.out_start != last.out_end or plan.gen_start != last.gen_end:
                raise ValueError(f"bar {plan.bar} does not follow bar {last.bar}")
        self._plans.append(plan)

    def push(self, audio: np.ndarray) -> None:
        """Append generated audio (continuing the generated stream)."""
        self._material = np.concatenate([self._material, audio.astype(np.float32, copy=False)])

    def pull(self, *, flush: bool = False) -> tuple[int, np.ndarray]:
        """Emit every output sample whose source audio (with context) is available.

        Returns (first output sample, audio). With `flush`, missing context past the end
        of the generated stream is taken as the last sample (end of a render).
        """
        chunks: list[np.ndarray] = []
        start = self._plans[0].out_start + self._done_in_bar if self._plans else 0
        while self._plans:
            plan = self._plans[0]
            chunk = self._emit(plan, flush)
            if chunk is None:
                break
            chunks.append(chunk)
            if self._done_in_bar == plan.out_length:
                self._finish_bar(plan)
            else:
                break
        self._trim()
        if not chunks:
            return start, np.zeros((0, self._channels), dtype=np.float32)
        return start, np.concatenate(chunks)

    def _finish_bar(self, plan: BarPlan) -> None:
        self._plans.pop(0)
        self._done_in_bar = 0
        splice = plan.gen_end - plan.read_end
        self._splice_from = plan.read_end if splice > 1e-6 else None
        self._splice_ratio = plan.ratio

    def _emit(self, plan: BarPlan, flush: bool) -> np.ndarray | None:
        first = self._done_in_bar
        if flush:
            end = plan.out_length
        else:
            # Largest i with every position the output sample needs (plus context) available.
            available = self.generated_end - MARGIN - 1
            last_ok = (available - plan.gen_start) / plan.ratio
            if self._splice_from is not None and first < self._crossfade:
                last_ok = min(last_ok, self._crossfade - 1 + (available - self._splice_from) / self._splice_ratio)
            end = min(plan.out_length, math.floor(last_ok) + 1)
        if end <= first:
            return None
        idx = np.arange(first, end, dtype=np.float64)
        audio = self._read(plan.gen_start + idx * plan.ratio, exact=plan.ratio == 1.0)
        if self._splice_from is not None and first < self._crossfade:
            n = min(end, self._crossfade) - first
            old = self._read(self._splice_from + idx[:n] * self._splice_ratio, exact=False)
            w = self._fade_in[first : first + n]
            audio[:n] = w * audio[:n] + (1.0 - w) * old
        self._done_in_bar = end
        return audio

    def _read(self, positions: np.ndarray, *, exact: bool) -> np.ndarray:
        """Generated audio at (fractional) absolute positions."""
        local = positions - self._material_base
        if exact and float(local[0]).is_integer():
            lo = int(local[0])
            hi = lo + len(local)
            if hi <= len(self._material):
                return self._material[lo:hi].copy()
        lo = max(int(math.floor(local[0])) - MARGIN, 0)
        hi = min(int(math.ceil(local[-1])) + MARGIN + 1, len(self._material))
        window = self._material[lo:hi]
        coords = (local - lo)[None, :]
        out = np.empty((len(local), self._channels), dtype=np.float32)
        for ch in range(self._channels):
            out[:, ch] = ndimage.map_coordinates(window[:, ch], coords, order=3, mode="nearest")
        return out

    def _trim(self) -> None:
        """Drop generated audio no pending output can need any more."""
        if self._plans:
            keep_from = self._plans[0].gen_start + self._done_in_bar * self._plans[0].ratio
            if self._splice_from is not None:
                keep_from = min(keep_from, self._splice_from)
        else:
            keep_from = self.generated_end
        drop = int(math.floor(keep_from)) - MARGIN - 1 - self._material_base
        if drop > 0:
            self._material = self._material[drop:]
            self._material_base += drop
