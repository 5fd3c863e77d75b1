"""The feeder: moves the playback ring's stream into the C ring the audio callback plays.

The audio callback (engine/audio/rtout.c) only copies what the feeder put there, so every
decision about what plays is made here, ahead of the playhead, in Python but off the
real-time thread:

- **The look-ahead, all of it.** At 48 kHz every sample the scheduler writes is copied at
  once (`PlaybackRing.on_write` calls `feed` on the loop thread), so the callback has the
  whole look-ahead in hand and a stalled interpreter (a garbage collection, a busy thread)
  costs nothing until the look-ahead runs out. Audio written again by a rollback is copied
  again over what it replaces (never within `in_flight` of the playhead, a block or a JACK
  period: the scheduler's splice margin keeps it further out).
- **Underrun: replay a bar.** When the generator is late and the playhead comes within
  `lead` of the end of the stream, the feeder reads on through the ring's reader, which
  replays the last complete bar and rejoins fresh audio at a bar line (ring.py). Before any
  bar exists it feeds silence, which fresh audio overwrites as soon as it is written (faded
  in from zero where the silence already played; never over frames fed from a replay). The
  silence that plays is the status's `silence_ms`.
- **Freeze** loops from the first bar line at least `lead` past the playhead: the feeder
  goes back to that line and feeds the loop from there, `lead` ahead of the playhead.
- **The feeder itself late** (the interpreter frozen by a long garbage collection, a stuck
  thread): after every feed it designates the bar the ring's reader would replay from the end
  of what it fed (`PlaybackRing.replay_bar`), and the callback loops that bar when it runs
  dry (rtout.c). Back, the feeder finds the callback past what it fed, puts the reader into
  that same replay (`resume_replay`) and feeds on a block past the playhead: what it feeds
  continues what was heard, and fresh audio rejoins at a bar line as after any underrun.
- **Another device rate**: the stream is resampled with soxr's streaming resampler and fed
  `lead` ahead only, since resampled audio cannot be rewritten; the sink's `read_ahead`
  tells the scheduler so (its splice margin grows by as much).

Threads: `feed` runs on the engine loop (after each write) and on the `audio-feeder` thread
every WAKE_S; the ring's lock makes them one writer of the C ring.
"""

from __future__ import annotations

import logging
import threading
from typing import Literal

import numpy as np
import soxr

from engine.audio.ring import XFADE, PlaybackRing, raised_cosine
from engine.audio.rtout import OutputRing
from engine.units import CHANNELS, SAMPLE_RATE

log = logging.getLogger(__name__)
Quality = Literal["QQ", "LQ", "MQ", "HQ", "VHQ"]  # soxr's
WAKE_S = 0.005  # how often the feeder thread looks, when nothing is written
LEAD_S = 0.02  # how far ahead of the playhead replayed, frozen and resampled audio is fed
CHUNK = 256  # 48 kHz samples resampled per step


class OutputFeeder:
    """Keeps the C ring filled from the playback ring."""

    def __init__(self, ring: PlaybackRing, out: OutputRing, *, blocksize: int, finished: threading.Event,
                 device_rate: int = SAMPLE_RATE, quality: Quality = "HQ") -> None:
        self.ring = ring
        self.out = out
        self.blocksize = blocksize
        self.in_flight = blocksize  # frames the callback may take at once: a JACK period holding several blocks
        self.device_rate = device_rate
        self.lead = max(4 * blocksize, round(LEAD_S * device_rate))
        self.fed = 0  # C ring frames [0, fed) are fed (device frames; 48 kHz samples at 48 kHz)
        self.late_writes = 0  # rewritten audio that arrived within `in_flight` of the playhead (not copied there)
        self._fresh_from = 0  # frames before it may hold a replayed bar: a rewrite does not reach them
        self._silent_from: int | None = None  # silence fed since here: fresh audio overwrites it
        self.silence_played = 0  # of that silence, frames the callback played (or holds in flight)
        self._silence_counted = 0
        self._ramp = raised_cosine(XFADE)
        self._frozen = False
        self._designated: tuple[int, int, int] | None = None  # the bar the callback loops if it runs dry
        self._dry_seen = 0  # the callback's dry entries already answered
        self._finished = finished  # set when the C side's fade reaches silence, or when the feeder fails
        self._resampler = None if device_rate == SAMPLE_RATE else soxr.ResampleStream(
            SAMPLE_RATE, device_rate, CHANNELS, dtype="float32", quality=quality)
        self.position = 0  # 48 kHz samples read from the ring (resampling)
        self._chunk = np.zeros((CHUNK, CHANNELS), dtype=np.float32)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def read_ahead(self) -> int:
        """48 kHz samples past the playhead already committed to the C ring that a rewrite cannot
        change: what is in flight, and, resampling, the fed lead and soxr's own latency."""
        if self._resampler is None:
            return self.in_flight
        return (self.in_flight + self.lead) * SAMPLE_RATE // self.device_rate + 8 * CHUNK

    def start(self) -> None:
        """Loop thread, before the stream is armed: fill what is written, then follow the writer."""
        self.feed()
        self.ring.on_write = self.feed
        self._thread = threading.Thread(target=self._run, name="audio-feeder", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.ring.on_write = None
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)

    def _run(self) -> None:
        """Feeder thread: top up (replay, freeze, resampling), and report the fade's end."""
        try:
            while not self._stop.wait(WAKE_S):
                self.feed()
                if self.out.finished:
                    self._finished.set()
        except Exception:  # noqa: BLE001 - reported, and the sink stops instead of playing silence
            log.exception("the audio feeder failed")
            self._finished.set()

    def feed(self) -> None:
        """Loop or feeder thread: bring the C ring up to date with the playback ring."""
        with self.ring.lock:
            played = self.out.read_position
            if self._silent_from is not None:
                self._count_silence(self._silent_from, min(played, self.fed))
            if self._resampler is not None:
                self._feed_resampled(played)
            else:
                self._catch_up(played)
                self._rewrite(played)
                self._feed_direct(played)
                self._designate()
            self.out.publish(self.fed)

    # -- at 48 kHz --------------------------------------------------------------------------
    def _catch_up(self, played: int) -> None:
        """The callback played past what was fed (this feeder was late): go on a block past it,
        inside the replay it looped, if it looped one."""
        if played <= self.fed:
            return
        dry = self.out.dry_entries
        if dry > self._dry_seen and self._designated is not None:
            self.ring.resume_replay(self._designated)
        self._dry_seen = dry
        self.fed = played + self.in_flight  # what is in flight plays on as the callback chose
        self._fresh_from = self.fed
        self._silent_from = None

    def _designate(self) -> None:
        bar = self.ring.replay_bar(self.fed)
        if bar != self._designated:
            self.out.designate(*(bar or (0, 0, 0)))
            self._designated = bar

    def _rewrite(self, played: int) -> None:
        """Copy audio written again (a rollback), or fresh audio over fed silence; never over
        frames fed from a replay (`_fresh_from`: the reader rejoins fresh audio at a bar line)."""
        ring = self.ring
        safe = played + self.in_flight  # what the callback may be reading now
        lo = None
        if ring.rewritten_from is not None:
            lo = ring.rewritten_from
            ring.rewritten_from = None
            if max(lo, self._fresh_from, ring.origin) < safe:
                self.late_writes += 1
        fade_at = None
        if self._silent_from is not None and ring.written > self._silent_from:
            silent_from = max(self._silent_from, ring.origin)
            self._count_silence(silent_from, min(safe, ring.written, self.fed))  # committed: it plays as silence
            if silent_from < safe < ring.written:
                fade_at = safe  # silence played up to here: fresh audio fades in, no click
            lo = silent_from if lo is None else min(lo, silent_from)
            self._silent_from = ring.written if ring.written < self.fed else None
        if lo is None:
            return
        lo = max(lo, self._fresh_from, ring.origin, safe)
        hi = min(self.fed, ring.written)
        if lo >= hi:
            return
        for at, view in self.out.views(lo, hi - lo):
            ring.peek(view, at)
        if fade_at == lo:
            self._fade_in(lo, hi)

    def _fade_in(self, lo: int, hi: int) -> None:
        """Scale C ring frames [lo, lo + XFADE) ∩ [lo, hi) by a raised-cosine fade from zero."""
        n = min(XFADE, hi - lo)
        done = 0
        for _, view in self.out.views(lo, n):
            view *= self._ramp[done : done + len(view)]
            done += len(view)

    def _count_silence(self, lo: int, hi: int) -> None:
        """Zeros fed for want of audio and of a bar to loop, [lo, hi), that play: the status's
        silence, each frame once. Only once the stream has begun (a clock's pre-roll is not)."""
        lo = max(lo, self._silence_counted, self.ring.origin)
        if hi > lo and self.ring.written > self.ring.origin:
            self.silence_played += hi - lo
            self._silence_counted = hi

    def _feed_direct(self, played: int) -> None:
        ring = self.ring
        if ring.freeze and not self._frozen:
            line = ring.first_bar_line(played + self.lead)
            if line is not None and line < self.fed:
                self.fed = line  # the loop starts there: feed it again from the line
        self._frozen = ring.freeze
        room = played + self.out.capacity - self.blocksize
        while True:
            n = 0
            if not ring.replaying:
                n = ring.written - self.fed
                if ring.freeze:  # fresh audio up to the next bar line; the loop begins on it
                    line = ring.first_bar_line(self.fed)
                    if line is not None:
                        n = self.blocksize if line == self.fed else min(n, line - self.fed)
            if n <= 0 and self.fed < played + self.lead:
                n = self.blocksize  # the deadline: the ring replays a bar (or plays silence)
            n = min(n, room - self.fed)
            if n <= 0:
                return
            for at, view in self.out.views(self.fed, n):
                ring.read(view, at)
            start = self.fed + n
            if ring.replaying:
                self._fresh_from = start
            else:
                self._fresh_from = max(self._fresh_from, ring.rejoined_at)
                if start > ring.written and self._silent_from is None:
                    self._silent_from = max(ring.written, self.fed)
            self.fed = start

    # -- at another device rate -------------------------------------------------------------
    def _feed_resampled(self, played: int) -> None:
        assert self._resampler is not None
        ring = self.ring
        while self.fed < played + self.lead:
            short = self.position + CHUNK - max(ring.written, self.position, ring.origin)
            ring.read(self._chunk, self.position)
            if short > 0 and not ring.replaying and ring.written > ring.origin:  # zeros: nothing to play
                self.silence_played += short * self.device_rate // SAMPLE_RATE
            self.position += CHUNK
            out = self._resampler.resample_chunk(self._chunk)
            if len(out):
                self.out.write(self.fed, out)
                self.fed += len(out)
