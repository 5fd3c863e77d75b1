"""How generated frames meet the output's grid: `stretch` puts every beat on its exact sample
(`stretch_fit.py`); `resample` puts only bar lines there, its beats up to half a frame (20 ms)
off and up to a frame spliced out per bar (`fitter.py`: for a box too slow to stretch, or one
without the compiled stretcher). Scheduler thread.
"""

from __future__ import annotations

from engine.schedule.fitter import BarFitter, BarPlan
from engine.schedule.stretch_fit import BeatPlan, StretchFitter
from engine.units import FIT_MODES

Fitter = BarFitter | StretchFitter
Plan = BarPlan | BeatPlan


def make_fitter(mode: str | None) -> Fitter:
    """The fitter for `mode`; None: resample (stretch is opt-in until its live JACK tests pass, issue #15)."""
    if mode not in (None, *FIT_MODES):
        raise ValueError(f"fit must be one of {', '.join(FIT_MODES)}, got {mode!r}")
    if mode == "stretch":
        return StretchFitter()
    return BarFitter()
