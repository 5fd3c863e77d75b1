"""Send MIDI clock when backline leads: ticks and transport placed on the sink's sample clock.

`MidiClockOut` is pure: from the Timeline and a sample range of the output stream it
returns what falls in that range, with exact sample positions. `MidiClockSender` is the
thin thread that sends those messages to a mido port when the sink's sample clock says
their sample is playing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

import mido

from engine.clock.estimate import PPQN
from engine.midi import port_matches
from engine.errors import BacklineError
from engine.clock.sampleclock import SampleClock
from engine.timeline import Timeline, round_half_up

logger = logging.getLogger(__name__)

_SPP_MAX = 16383  # 14-bit song position, in sixteenth notes
_MIDO_API = {"alsa": "LINUX_ALSA", "jack": "UNIX_JACK"}


@dataclass(frozen=True, slots=True)
class ClockEvent:
    """`message` is due when output sample `sample` plays."""

    sample: int
    message: mido.Message


def tick_sample(timeline: Timeline, tick: int) -> int:
    """Sample of song tick `tick`: beat starts from the timeline, ticks spread evenly inside a beat."""
    beat, sub = divmod(tick, PPQN)
    start = timeline.beat_start(beat)
    return start + round_half_up(Fraction(sub * (timeline.beat_start(beat + 1) - start), PPQN))


class MidiClockOut:
    """Transport state of the clock we send, and the events for any sample range.

    `events` runs on the sender's thread; `stop` and `resume` come from the scheduling
    loop as the transport changes apply (ahead of playback, at their exact samples): they
    only append to a deque, which `events` takes from as it reaches each one's sample.
    """

    def __init__(self) -> None:
        self._from_tick: int | None = None  # first tick to send; None when stopped
        self._changes: deque[tuple[int, int | None]] = deque()  # (sample, beat to resume at, or None: stop)

    @property
    def playing(self) -> bool:
        return self._from_tick is not None

    def start(self, *, beat: int = 0) -> None:
        """Play from song beat `beat` now: Start for beat 0, else Song Position Pointer + Continue."""
        if not 0 <= beat * 4 <= _SPP_MAX:
            raise ValueError(f"start beat must be in 0..{_SPP_MAX // 4}, got {beat}")
        self._from_tick = beat * PPQN

    def stop(self, *, at_sample: int) -> None:
        """Send Stop at `at_sample`; no ticks from there on (until a resume)."""
        self._changes.append((at_sample, None))

    def resume(self, *, at_sample: int, timeline: Timeline) -> None:
        """Play again from the first beat at or after `at_sample` (a transport.play on its bar
        line): Song Position Pointer for that beat, then Continue, on its sample, so a slaved
        drum machine comes back on the same bar as the audio."""
        beat = timeline.beat_at(at_sample)
        if timeline.beat_start(beat) < at_sample:
            beat += 1
        if 0 <= beat * 4 <= _SPP_MAX:
            self._changes.append((timeline.beat_start(beat), beat))
        else:
            logger.warning("MIDI clock out: song position of beat %d is past what MIDI can say; not resumed", beat)

    def events(self, timeline: Timeline, a: int, b: int) -> list[ClockEvent]:
        """Messages due in output samples [a, b), in order."""
        out: list[ClockEvent] = []
        cursor = a
        while self._changes and self._changes[0][0] < b:
            at, beat = self._changes.popleft()
            at = max(at, cursor)
            out += self._span(timeline, cursor, at)
            if beat is None and self._from_tick is not None:
                out.append(ClockEvent(at, mido.Message("stop")))
                self._from_tick = None
            elif beat is not None and self._from_tick is None:
                self._from_tick = beat * PPQN
            cursor = at
        return out + self._span(timeline, cursor, b)

    def _span(self, timeline: Timeline, a: int, b: int) -> list[ClockEvent]:
        """Start (or Song Position Pointer and Continue) and ticks in [a, b), no transport change inside."""
        if self._from_tick is None or b <= a:
            return []
        out: list[ClockEvent] = []
        first = self._from_tick
        first_sample = tick_sample(timeline, first)
        if a <= first_sample < b:
            if first == 0:
                out.append(ClockEvent(first_sample, mido.Message("start")))
            else:
                out.append(ClockEvent(first_sample, mido.Message("songpos", pos=first // 6)))
                out.append(ClockEvent(first_sample, mido.Message("continue")))
        tick = max(first, timeline.beat_at(a) * PPQN)
        while (s := tick_sample(timeline, tick)) < b:
            if s >= a:
                out.append(ClockEvent(s, mido.Message("clock")))
            tick += 1
        return out


class MidiClockSender:
    """Sends a `MidiClockOut`'s events to a mido output port, timed by the sink's sample clock."""

    def __init__(
        self,
        port: mido.ports.BaseOutput,
        out: MidiClockOut,
        *,
        timeline: Callable[[], Timeline],
        sample_clock: Callable[[], SampleClock],
        lead: float = 0.01,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self._port = port
        self._out = out
        self._timeline = timeline
        self._sample_clock = sample_clock
        self._lead = lead
        self._now = now
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="midi-clock-out", daemon=True)
        self.sent = 0

    def __enter__(self) -> MidiClockSender:
        self.start()
        return self

    def start(self) -> None:
        """Start the sender thread (the sample clock must already be published)."""
        self._thread.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the thread; send Stop if the clock was playing."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        if self._out.playing:
            self._port.send(mido.Message("stop"))

    def _run(self) -> None:
        """Runs on the sender's own thread: compute events a little ahead, wait for each, send."""
        cursor: int | None = None
        while not self._stop.is_set():
            clock = self._sample_clock()
            now = self._now()
            if cursor is None:
                cursor = round(clock.sample_at(now))
            until = round(clock.sample_at(now + self._lead))
            try:
                events = self._out.events(self._timeline(), cursor, until)
            except Exception:  # a bad timeline must not kill the clock thread
                logger.exception("MIDI clock out: could not compute events for %d..%d", cursor, until)
                events = []
            for ev in events:
                if self._stop.wait(max(0.0, clock.time_of(ev.sample) - self._now())):
                    return
                self._port.send(ev.message)
                self.sent += 1
            cursor = max(cursor, until)
            self._stop.wait(max(0.0, clock.time_of(cursor) - self._now() - self._lead / 2))


def open_clock_output(pattern: str, *, api: Literal["alsa", "jack"] = "alsa") -> mido.ports.BaseOutput:
    """The first MIDI output port matching `pattern` (see `port_matches`), opened through rtmidi on `api`."""
    backend = mido.Backend(f"mido.backends.rtmidi/{_MIDO_API[api]}", load=True)
    names = backend.get_output_names()
    name = next((n for n in names if port_matches(n, pattern)), None)
    if name is None:
        raise BacklineError(f"MIDI clock output {pattern!r} not found on {api}; outputs: {', '.join(names) or 'none'}")
    logger.info("MIDI clock out to %r (%s)", name, api)
    return backend.open_output(name)
