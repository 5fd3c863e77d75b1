"""Scheduling: the look-ahead scheduler and its parts (bar fitting, notes, gain, style ramp)."""

from engine.schedule.fitter import BarFitter, BarPlan, plan_bar
from engine.schedule.gain import GainEnvelope
from engine.schedule.notes import RELEASE_FRAMES, NoteTracker
from engine.schedule.scheduler import Scheduler
from engine.schedule.style_ramp import StyleRamp

__all__ = ["RELEASE_FRAMES", "BarFitter", "BarPlan", "GainEnvelope", "NoteTracker", "Scheduler", "StyleRamp", "plan_bar"]
