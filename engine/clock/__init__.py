"""Tempo clocks: tap tempo, external MIDI clock, MIDI clock out, Ableton Link, source choice.

Every source reports a `ClockEstimate`; `TimelineFollower` turns estimates into Timeline
changes for the scheduler. Link is imported lazily (`engine.clock.link`) so that it stays
optional and is only enabled when a clock source asks for it.
"""

from engine.clock.estimate import PPQN, ClockEstimate, ClockState
from engine.clock.midi_clock_out import ClockEvent, MidiClockOut, MidiClockSender, tick_sample
from engine.clock.midi_follower import FollowerConfig, MidiClockFollower
from engine.clock.sampleclock import SampleClock, SampleClockTracker
from engine.clock.source import ClockSource, health, open_link_source, parse_clock_source
from engine.clock.tap import TapTempo, ramp
from engine.clock.timeline_follow import Refit, TimelineFollower

__all__ = [
    "PPQN",
    "ClockEstimate",
    "ClockEvent",
    "ClockSource",
    "ClockState",
    "FollowerConfig",
    "MidiClockFollower",
    "MidiClockOut",
    "MidiClockSender",
    "Refit",
    "SampleClock",
    "SampleClockTracker",
    "TapTempo",
    "TimelineFollower",
    "health",
    "open_link_source",
    "parse_clock_source",
    "ramp",
    "tick_sample",
]
