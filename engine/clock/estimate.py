"""What every clock source reports: tempo and the time of any beat, in monotonic seconds.

A source (external MIDI clock, Ableton Link) is summarised by one straight line from
song position to time, valid near `ref_time`. The scheduler never talks to a source
directly; it reads an estimate and lets `TimelineFollower` turn it into bar lines.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

PPQN = 24
"""MIDI clock ticks per quarter note; song positions are counted in these ticks."""

ClockState = Literal["stopped", "running", "coasting", "lost"]
"""stopped: transport not playing. running: clock arriving. coasting: clock missing for a
moment, time kept from the last estimate. lost: missing past the grace period (status: `clock
lost`); the last tempo is kept until it comes back."""


@dataclass(frozen=True, slots=True)
class ClockEstimate:
    """A source's view of the song: tick `ref_tick` happens at `ref_time`, at `tempo_bpm`."""

    tempo_bpm: float
    ref_time: float
    ref_tick: float
    state: ClockState
    last_clock_age: float
    epoch: int
    """Counts transport (re)starts and relocations: a new epoch means a new song grid."""

    @property
    def running(self) -> bool:
        """True while the song advances (running or coasting)."""
        return self.state in ("running", "coasting")

    @property
    def tick_period(self) -> float:
        return 60.0 / (self.tempo_bpm * PPQN)

    def tick_time(self, tick: float) -> float:
        """Predicted monotonic time of song tick `tick` (24 per beat)."""
        return self.ref_time + (tick - self.ref_tick) * self.tick_period

    def beat_time(self, beat: float) -> float:
        """Predicted monotonic time of song beat `beat` (beat 0 is the first clock after Start)."""
        return self.tick_time(beat * PPQN)

    def beat_at(self, t: float) -> float:
        """Song position in beats (fractional) at monotonic time `t`."""
        return (self.ref_tick + (t - self.ref_time) / self.tick_period) / PPQN
