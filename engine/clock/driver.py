"""The clock source the engine follows, driven from the engine loop: internal, MIDI clock or Link.

`ClockDriver` owns whatever the chosen source needs (a MIDI input and follower, or a
Link peer) and, once per loop iteration, turns the source's estimate into Timeline
changes for the scheduler. It runs on the engine loop thread only.

Lost clock: the follower coasts for its grace period, then reports `lost` (status: clock lost); the timeline
keeps the last tempo and grid meanwhile (the audio plays on), and when the clock comes
back the next re-fit puts the bar lines back on it. A MIDI Stop is reported as
`stopped` the same way; Start (a new epoch) re-grids from the next bar.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from engine.clock.estimate import ClockEstimate
from engine.clock.midi_follower import FollowerConfig, MidiClockFollower
from engine.clock.jack_in import FrameTimebase, JackClockInput
from engine.clock.midi_in import MidiClockInput
from engine.clock.sampleclock import SampleClock
from engine.clock.source import ClockSource, health, open_link_source
from engine.clock.timeline_follow import Refit, TimelineFollower
from engine.midi import MidiApi
from engine.timeline import Timeline

logger = logging.getLogger(__name__)
SETTLE_BEATS = 1.0
"""A new song grid is taken only after this many beats of a (re)started clock: a tempo
from a few ticks is too rough to place bar lines seconds ahead."""


class ClockDriver:
    """Feeds one clock source into the scheduler's timeline."""

    def __init__(
        self,
        source: ClockSource,
        *,
        beats_per_bar: int,
        midi_input: MidiClockInput | JackClockInput | None = None,
        follower: MidiClockFollower | None = None,
        link: Any = None,
    ) -> None:
        self.source = source
        self.midi_input = midi_input
        self.follower = follower
        self.link = link
        self.timeline_follower = TimelineFollower(beats_per_bar=beats_per_bar)
        self._last_state: str | None = None

    @classmethod
    def open(cls, source: ClockSource, *, bpm: float, beats_per_bar: int, midi_api: MidiApi = "alsa",
             grace: float | None = None, jack_output: bool = False) -> ClockDriver:
        """Open what `source` needs. Link missing: runs internal and says so (`open_link_source`).

        A MIDI clock on JACK with the audio on JACK is read in JACK frames (`JackClockInput`):
        the clock and the sink's playhead then share JACK's frame clock, and the engine loop
        follows it through `frames` instead of the monotonic clock.
        """
        if source.kind == "midi":
            assert source.port is not None
            config = FollowerConfig() if grace is None else FollowerConfig(grace=grace)
            midi_input: MidiClockInput | JackClockInput
            if midi_api == "jack" and jack_output:
                midi_input = JackClockInput(source.port)
            else:
                midi_input = MidiClockInput(source.port, api=midi_api)
            return cls(source, beats_per_bar=beats_per_bar, midi_input=midi_input,
                       follower=MidiClockFollower(config=config))
        return cls(source, beats_per_bar=beats_per_bar, link=open_link_source(source, bpm=bpm, beats_per_bar=beats_per_bar))

    @property
    def jack_frames(self) -> JackClockInput | None:
        """The JACK clock input when the clock is stamped in JACK frames, else None."""
        return self.midi_input if isinstance(self.midi_input, JackClockInput) else None

    def use_frames(self, *, origin: int, rate: int, frame_clock: Callable[[], int] | None) -> FrameTimebase | None:
        """From now on, clock times are JACK frame seconds with frame `origin` (the sink's playhead 0)
        at 0 s, where the source can be read on JACK's frames; else None (the monotonic clock stays).

        A MIDI clock read on a JACK port is stamped in frames already. A Link session's times are
        converted through `frame_clock` (JACK's current frame, which JACK interpolates within its
        cycle from its own delay-locked loop), sampled beside Link's clock on every estimate, its
        tempo by the rate of JACK's frames against Link's clock measured from those samples
        (`ClockRate`), so its beats land on the sample that plays at their JACK frame.
        """
        frames = self.jack_frames
        if frames is not None:
            frames.timebase = FrameTimebase(origin=origin, rate=rate, frame_time=frames.frame_time)
            return frames.timebase
        if self.link is not None and frame_clock is not None:
            timebase = FrameTimebase(origin=origin, rate=rate, frame_time=frame_clock)
            self.link.use_clock(timebase.now)
            return timebase
        return None

    @property
    def external(self) -> bool:
        """True when a MIDI clock or a Link session leads (the timeline follows it)."""
        return self.follower is not None or self.link is not None

    def estimate(self, t: float) -> ClockEstimate | None:
        """Take new clock input and return the source's view at monotonic `t` (None: internal or no tempo yet)."""
        if self.follower is not None:
            if self.midi_input is not None:
                for message, stamp in self.midi_input.poll():
                    self.follower.feed(message, stamp)
            return self.follower.estimate(t)
        if self.link is not None:
            return self.link.estimate(t)
        return None

    def _settled(self, t: float) -> ClockEstimate | None:
        est = self.estimate(t)
        self._report(est)
        if est is None or not est.running:
            return None
        if est.epoch != self.timeline_follower.epoch and est.beat_at(t) < SETTLE_BEATS:
            return None
        return est

    def follow(self, timeline: Timeline, *, planned_until: int, replan_from: int | None = None, clock: SampleClock,
               t: float) -> Refit | None:
        """A re-fit of the scheduler's bars from `planned_until` (or `replan_from`, see
        `TimelineFollower.update`) when the clock moved, else None."""
        est = self._settled(t)
        return self.timeline_follower.update(est, timeline, planned_until=planned_until, replan_from=replan_from,
                                             time_to_sample=clock.sample_at)

    def song_start(self, *, after: int, clock: SampleClock, t: float) -> tuple[Timeline, int] | None:
        """(the clock's grid, its first bar starting at or after sample `after`) once the clock runs, else None.

        Called every loop iteration while waiting; the caller commits when that bar is close,
        so its position comes from the freshest estimate.
        """
        est = self._settled(t)
        if est is None:
            return None
        grid = self.timeline_follower.song_grid(est, time_to_sample=clock.sample_at)
        bar = grid.bar_at(after)
        return grid, bar if grid.bar_start(bar) >= after else bar + 1

    def start_transport(self, t: float) -> None:
        """The engine starts playing: a Link session with start/stop sync starts with it."""
        if self.link is not None:
            self.link.set_playing(True, t)

    def health(self, t: float, *, tempo: float) -> dict[str, object]:
        """Status view: source, state, tempo and last clock age (plus the source's counters)."""
        if self.follower is not None:
            est = self.follower.estimate(t)
            return health(self.source, est, port=self.midi_input.bound if self.midi_input else None,
                          **self.follower.counters)
        if self.link is not None:
            view = health(self.source, self.link.estimate(t), peers=self.link.peers)
            return {**view, "tempo_bpm": round(self.link.session_tempo, 2)}  # the session's, not JACK's frames
        state = "unavailable" if self.source.wants_link else "running"
        return {"source": str(self.source), "state": state, "tempo_bpm": round(tempo, 2), "last_clock_age": None}

    def _report(self, est: ClockEstimate | None) -> None:
        state = est.state if est is not None else "waiting"
        if state != self._last_state:
            level = logging.WARNING if state == "lost" else logging.INFO
            logger.log(level, "clock %s: %s%s", self.source, state,
                       f" at {est.tempo_bpm:.2f} BPM" if est is not None and state != "lost" else
                       " (missing past its grace period: holding the last tempo until it returns)" if state == "lost" else "")
            self._last_state = state

    def close(self) -> None:
        if self.midi_input is not None:
            self.midi_input.close()
        if self.link is not None:
            self.link.close()

