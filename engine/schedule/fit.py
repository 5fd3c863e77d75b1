"""How generated frames meet the output's grid: `stretch` puts every beat on its exact sample
(`stretch_fit.py`); `resample` puts only bar lines there, its beats up to half a frame (20 ms)
off and up to a frame spliced out per bar (`fitter.py`: for a box too slow to stretch, or one
without the compiled stretcher). Scheduler thread.
"""

from __future__ import annotations

from engine.schedule.fitter import BarFitter, BarPlan
from engine.schedule.stretch_fit import BeatPlan, StretchFitter
from engine.timeline import Timeline
from engine.units import FIT_MODES

Fitter = BarFitter | StretchFitter
Plan = BarPlan | BeatPlan


def make_fitter(mode: str | None) -> Fitter:
    """The fitter for `mode`; None: stretch."""
    if mode not in (None, *FIT_MODES):
        raise ValueError(f"fit must be one of {', '.join(FIT_MODES)}, got {mode!r}")
    if mode in (None, "stretch"):
        return StretchFitter()
    return BarFitter()


def frame_starts(mode: str | None, timeline: Timeline, bars: int) -> list[int]:
    """The output sample each of the first `bars` bars' frames starts on, as the scheduler
    rounds it: where a frame-quantized change is heard (tests and bench)."""
    fitter, starts = make_fitter(mode), []
    for bar in range(bars):
        plan = fitter.plan(timeline, bar)
        fitter.add_bar(plan)
        starts += [round(plan.frame_out_start(i)) for i in range(plan.frames)]
    return starts
