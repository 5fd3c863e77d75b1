"""The engine's coupling to time: the clock it follows, its output's sample clock, the clock
it sends, tap tempo, and a local tempo while an external clock leads.

`Engine` owns one and calls it from its scheduling loop (`begin`, `follow`, `close`); `tap`
and `tempo` may come from any control thread. Everything here was the engine loop's
clock code; it lives beside the clocks it couples.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Literal, Protocol

from engine.clock.driver import ClockDriver
from engine.clock.jack_in import FrameTimebase
from engine.clock.jack_out import JackClockOutput, JackClockSender
from engine.clock.midi_clock_out import MidiClockOut, MidiClockSender
from engine.clock.sampleclock import SampleClock, SampleClockTracker
from engine.clock.tap import TapTempo
from engine.ratelog import RateLimitedLog
from engine.timeline import Timeline
from engine.units import SAMPLE_RATE

log = logging.getLogger(__name__)
START_COMMIT_S = 0.1  # --start-on bar: the start bar is fixed this long before generation must begin
CLOCK_OUT_LEAD_S = 0.1  # silence before bar 0 when sending MIDI clock, so Start goes out on bar 0's first sample
StartOn = Literal["now", "bar"]


class _Sink(Protocol):
    name: str
    playhead: int
    blocksize: int


class _Scheduler(Protocol):
    timeline: Timeline
    lookahead: int

    @property
    def planned_until(self) -> int: ...

    @property
    def replan_from(self) -> int: ...

    def start_at(self, timeline: Timeline, bar: int) -> None: ...

    def retime(self, timeline: Timeline, *, at: int | None = None) -> None: ...


class ClockCoupling:
    """Follows `driver` onto the scheduler's timeline and sends MIDI clock to `clock_out`."""

    def __init__(self, driver: ClockDriver, *, start_on: StartOn = "now", clock_out: Any = None) -> None:
        if start_on not in ("now", "bar"):
            raise ValueError(f"start_on must be now or bar, got {start_on!r}")
        self.driver = driver
        self.start_on: StartOn = start_on
        self.sample_clock = SampleClockTracker()
        self.frame_time: FrameTimebase | None = None  # set when the clock and the sink share JACK's frames
        self._frames_asked = False
        self.waiting_for_bar = False  # --start-on bar: silence until the external clock's next bar line
        self._out_port = clock_out
        self._sender: MidiClockSender | JackClockSender | None = None
        self._out: MidiClockOut | None = None  # the clock we send, once the sink plays
        self._taps = TapTempo()
        self._tap_lock = threading.Lock()
        self._log = RateLimitedLog(log, interval=10.0)

    # -- the loop thread ---------------------------------------------------------------------
    def begin(self, scheduler: _Scheduler) -> None:
        """Before the first fill: wait for an external clock's bar, or leave room for Start."""
        self.waiting_for_bar = self.start_on == "bar" and self.driver.external
        if self._out_port is not None and not self.waiting_for_bar:
            first = scheduler.timeline.segments[0]
            scheduler.start_at(Timeline.start(first.bpm, first.beats_per_bar,
                                              origin=round(CLOCK_OUT_LEAD_S * SAMPLE_RATE)), 0)

    def follow(self, playhead: int, sink: _Sink, scheduler: _Scheduler) -> None:
        """Update the sink's sample clock, then the timeline from the clock source.

        A clock stamped in JACK frames (a JACK MIDI clock) or converted onto them (Link) with the
        sink locked to them is followed on JACK's frame clock (sample p plays at origin + p
        exactly); any other pairing through the
        monotonic clock and the tracker's estimate of when the sink plays what.
        """
        now = time.monotonic()
        clock = self.sample_clock.observe(playhead, now, block=sink.blocksize)
        if self.frame_time is None and self.driver.external and not self._frames_asked:
            origin = getattr(sink, "frame_origin", None)
            if origin is not None:
                self._frames_asked = True  # asked once: the source either can be read on JACK's frames or not
                self.frame_time = self.driver.use_frames(origin=origin, rate=SAMPLE_RATE,
                                                         frame_clock=getattr(sink, "frame_clock", None))
                if self.frame_time is not None:
                    log.info("clock %s and the %s sink run on JACK's frame clock", self.driver.source, sink.name)
        if self.frame_time is not None:
            now, clock = self._now(), SampleClock(sample=0, time=0.0)
        if clock is None:
            return
        if self._out_port is not None and self._sender is None and self.sample_clock.clock is not None:
            self._start_clock_out(sink, scheduler)
        if not self.driver.external:
            return
        if self.waiting_for_bar:
            start = self.driver.song_start(after=playhead + scheduler.lookahead + sink.blocksize, clock=clock, t=now)
            if start is not None and start[0].bar_start(start[1]) <= playhead + scheduler.lookahead + round(START_COMMIT_S * SAMPLE_RATE):
                scheduler.start_at(*start)
                self.waiting_for_bar = False
                log.info("clock %s runs: audio starts at its bar %d (sample %d)", self.driver.source, start[1] + 1,
                         start[0].bar_start(start[1]))
            return
        refit = self.driver.follow(scheduler.timeline, planned_until=scheduler.planned_until,
                                   replan_from=scheduler.replan_from,  # with rollback, bars generated may be planned again
                                   clock=clock, t=now)
        if refit is not None:
            scheduler.retime(refit.timeline, at=refit.at)

    def _start_clock_out(self, sink: _Sink, scheduler: _Scheduler) -> None:
        """Once the sink plays: send our clock from bar 0. A JACK port with the sink frame-locked
        gets each message at its frame; any other port is timed by the sample clock."""
        out = MidiClockOut()
        out.start(beat=0)
        self._out = out
        timeline = lambda: scheduler.timeline  # noqa: E731
        origin = getattr(sink, "frame_origin", None)
        if isinstance(self._out_port, JackClockOutput) and origin is not None:
            self._sender = JackClockSender(self._out_port, out, timeline=timeline, playhead=lambda: sink.playhead,
                                           origin=origin, sample_rate=SAMPLE_RATE)
        else:
            if isinstance(self._out_port, JackClockOutput):
                log.error("MIDI clock out on JACK needs the output frame-locked to JACK (see the sink's log); not sent")
                self._out_port = None
                return
            tracker = self.sample_clock
            self._sender = MidiClockSender(self._out_port, out, timeline=timeline,
                                           sample_clock=lambda: tracker.clock)  # type: ignore[arg-type, return-value]
        self._sender.start()

    def transport(self, playing: bool, at: int, timeline: Timeline) -> None:
        """Scheduling loop, as a transport change applies at sample `at`: the clock we send
        stops there, or resumes with Song Position Pointer and Continue on that bar line."""
        if self._out is None:
            return
        if playing:
            self._out.resume(at_sample=at, timeline=timeline)
        else:
            self._out.stop(at_sample=at)

    def health(self, *, tempo: float) -> dict[str, object]:
        """The followed clock's health now (on JACK's frame clock where the sink runs on it)."""
        return self.driver.health(self._now(), tempo=tempo)

    def close(self) -> None:
        """The loop ended: our MIDI clock sends Stop. JACK's frame clock is read one last time and
        kept: the sink closes its JACK clients next, and the last status is read after that."""
        if self._sender is not None:
            self._sender.close()
        if self.frame_time is not None:
            self.frame_time.freeze()

    def _now(self) -> float:
        """The time every clock estimate here is on: JACK's frame clock in seconds once the source
        and the sink share it, else the monotonic clock."""
        return self.frame_time.now() if self.frame_time is not None else time.monotonic()

    # -- any control thread ------------------------------------------------------------------
    def tap(self, at_s: float | None = None) -> float | None:
        """A tap at `at_s` seconds of output (when it was heard; None: now): the tempo of the last
        taps (BPM, 2 decimals), or None until there are enough."""
        with self._tap_lock:
            bpm = self._taps.tap(time.monotonic() if at_s is None else at_s)
        return None if bpm is None else round(bpm, 2)

    def tempo(self, bpm: float, source: str) -> bool:
        """A local tempo (tempo.bpm or a tap). False: no external clock leads, the caller plays it.

        Link takes proposals (every peer moves, the engine follows the session); a MIDI clock
        cannot be told, so the change is dropped with a rate-limited line instead of fighting it.
        """
        if not self.driver.external:
            return False
        if self.driver.link is not None:
            self.driver.link.propose_tempo(bpm, self._now())
            log.info("tempo %.2f BPM from %s proposed to the Link session", bpm, source)
        else:
            self._log.warn("tempo", "tempo %.2f BPM from %s ignored: the tempo follows clock %s", bpm, source,
                           self.driver.source)
        return True
