"""The playback ring: bar-grid audio written ahead by the scheduler, read by the sink.

The writer (scheduler thread) appends audio at absolute output sample positions and
publishes bar lines. The reader asks for the stream block by block: the offline sink at its
playhead, on the loop thread; live, the feeder (engine/audio/feeder.py), which copies it into
the C ring the audio callback plays from, ahead of the playhead. The real-time thread never
touches this ring. Writer and feeder share `lock` (neither is real-time); the writer calls
`on_write` after each write, so the feeder copies new and rewritten audio at once.

Underrun policy: if the block at the playhead is not written yet, the reader replays
the last complete bar, bar-aligned (offset within the current bar = offset within the
replayed bar), crossfading from what was playing. It rejoins fresh audio at the first
bar line where fresh audio is ready, crossfading back. Each underrun and each rejoin is
counted. `freeze` uses the same replay on purpose: it loops the current bar from the next
bar line until released.

Rollback (`rewind`): the writer may go back to a position the reader has not reached and
write the stream again from there. `cursor` is where the writer writes next; `written`, what
the reader may play, never moves back, so audio not rewritten yet stays playable. The first
rewritten samples crossfade from the audio they replace, so the splice never clicks; the
scheduler keeps the splice a safety margin ahead of the playhead, so the reader never reads
where the writer writes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np

from engine.units import CHANNELS

DEFAULT_CAPACITY = 1 << 22  # ~87 s at 48 kHz: look-ahead plus the longest bar twice
MAX_BAR_LINES = 1 << 12
XFADE = 240  # 5 ms at 48 kHz


class PlaybackRing:
    """Single-writer, single-reader audio ring with the replay-a-bar underrun policy."""

    def __init__(self, *, capacity: int = DEFAULT_CAPACITY, channels: int = CHANNELS, crossfade: int = XFADE) -> None:
        self.capacity = capacity
        self.channels = channels
        self._buf = np.zeros((capacity, channels), dtype=np.float32)
        self._bars = np.zeros(MAX_BAR_LINES, dtype=np.int64)  # ring of published bar lines
        self._bar_count = 0
        self._xfade = crossfade
        self._fade_in = raised_cosine(crossfade)
        self._fade_out = 1.0 - self._fade_in
        self._tmp = np.zeros((crossfade, channels), dtype=np.float32)  # the reader's
        self._splice_tmp = np.zeros((crossfade, channels), dtype=np.float32)  # the writer's
        self._last = np.zeros(channels, dtype=np.float32)
        self.origin = 0  # first output sample of the stream (transport start)
        self.written = 0  # output samples [origin, written) are in the ring (the reader's limit)
        self.cursor = 0  # where the writer writes next: `written`, or less after a rewind
        self._splice_start = self._splice_end = 0  # a splice's crossfade covers [_splice_start, _splice_end)
        self._rewound = False  # written again after a rewind, the splice not behind us yet
        self._exact_until = 0
        self.splice_at: int | None = None  # where the latest rollback's new audio begins
        self.rewritten_from: int | None = None  # lowest sample written again since the feeder last looked
        self.lock = threading.Lock()  # writer and live reader (the feeder); never the audio thread
        self.on_write: Callable[[], None] | None = None  # the live reader, told after each write
        # Reader state (reader thread only).
        self.replaying = False
        self.rejoined_at = 0  # the bar line where the reader last rejoined fresh audio
        self._replay_start = 0
        self._replay_length = 0
        self._replay_anchor = 0
        self.freeze = False  # set by the engine; read by the reader
        self.underruns = 0
        self.rejoins = 0
        self.freezes = 0

    # -- writer side -------------------------------------------------------------------
    def reset(self, origin: int) -> None:
        """Start an empty stream at `origin` (writer thread, before its first write)."""
        with self.lock:
            self.origin = origin
            self.written = self.cursor = self._splice_start = self._splice_end = origin
            self._rewound = False
            self._bar_count = 0
            self.replaying = False
            self._last[:] = 0.0

    def publish_bar(self, start: int) -> None:
        """Announce a bar line (in order), before or while its audio is written; the line a
        rewind kept is announced again as a no-op."""
        if any(self._bar_line(i) == start for i in range(max(self._bar_count - 4, 0), self._bar_count)):
            return
        if self._bar_count and start < self._bars[(self._bar_count - 1) % MAX_BAR_LINES]:
            raise ValueError(f"bar line {start} is not after the last one")
        self._bars[self._bar_count % MAX_BAR_LINES] = start
        self._bar_count += 1

    def write(self, start: int, audio: np.ndarray) -> None:
        """Append audio that starts exactly at the cursor (after a rewind: see `rewind`)."""
        if start != self.cursor:
            raise ValueError(f"write at {start} but the stream ends at {self.cursor}")
        n = len(audio)
        if n > self.capacity:
            raise ValueError(f"{n} samples do not fit a ring of {self.capacity}")
        with self.lock:
            if self._rewound:
                audio = self._splice(start, audio)
            if start < self.written:
                self.rewritten_from = start if self.rewritten_from is None else min(self.rewritten_from, start)
            pos = start % self.capacity
            first = min(n, self.capacity - pos)
            self._buf[pos : pos + first] = audio[:first]
            self._buf[: n - first] = audio[first:]
            self.cursor = start + n
            self.written = max(self.written, self.cursor)  # publish after the samples are in place
        if self.on_write is not None:
            self.on_write()

    def _splice(self, start: int, audio: np.ndarray) -> np.ndarray:
        """Rewritten audio over audio already there: find the first sample that differs (the
        splice), and crossfade into it if the stream was not generated again exactly."""
        n = min(len(audio), self.written - start)
        if self._splice_end <= start:  # the splice is not found yet
            old = np.empty((max(n, 0), self.channels), dtype=np.float32)
            self._copy(old, start)
            differ = np.flatnonzero(np.any(old != audio[:n], axis=1)) if n > 0 else np.zeros(0, np.int64)
            if not len(differ):
                self._rewound = n > 0 and start + len(audio) < self.written  # all equal: keep looking
                return audio
            self.splice_at = start + int(differ[0])
            if self.splice_at >= self._exact_until:  # the new stream continues its own past: no seam
                self._rewound = False
                return audio
            self._splice_start, self._splice_end = self.splice_at, min(self.splice_at + self._xfade, self.written)
        fade = max(0, min(len(audio), self._splice_end - start))
        if fade:
            lo = start - self._splice_start
            w = raised_cosine(self._splice_end - self._splice_start)[max(lo, 0) : lo + fade]
            skip = max(-lo, 0)
            audio = audio.copy()
            self._copy(self._splice_tmp[: len(w)], start + skip)
            audio[skip : skip + len(w)] = w * audio[skip : skip + len(w)] + (1.0 - w) * self._splice_tmp[: len(w)]
        self._rewound = start + len(audio) < self._splice_end
        return audio

    def bar_mark(self) -> int:
        """How many bar lines are published (a rewind goes back to a mark)."""
        return self._bar_count

    def rewind(self, position: int, bar_mark: int, *, exact_until: int) -> None:
        """Writer thread: write the stream again from `position` (ahead of the reader), with the
        bar lines published after `bar_mark` withdrawn.

        Audio written again is compared with what is there: the first sample that differs is
        the splice (`splice_at`), and nothing before it changes. The writer promises the new
        audio equals the old before `exact_until` (a generator replayed from its snapshot):
        a splice at or after it continues the same past, so it is written as is; one before
        it (a generator that did not replay exactly) crossfades over 5 ms, so it never clicks.
        """
        if not self.origin <= position <= self.cursor:
            raise ValueError(f"rewind to {position} outside the stream [{self.origin}, {self.cursor}]")
        with self.lock:
            # lines after the mark are withdrawn, except those before `exact_until` (they stay where they
            # are: the reader may be at one)
            while self._bar_count > bar_mark and self._bar_line(self._bar_count - 1) >= exact_until:
                self._bar_count -= 1
            self.cursor = position
            self.splice_at = None
            self._exact_until = exact_until
            self._splice_end = position  # not found yet
            self._rewound = position < self.written

    def space(self, playhead: int) -> int:
        """Samples the writer may add without overwriting anything the reader may need.

        A quarter of the ring behind the playhead (or behind a bar being replayed) is
        kept, so the last complete bar stays available for the underrun policy.
        """
        oldest = min(playhead, self._replay_start) if self.replaying else playhead
        return max(0, self.capacity - self.capacity // 4 - (self.written - oldest))

    # -- bar lines ------------------------------------------------------------------------
    def _bar_line(self, i: int) -> int:
        return int(self._bars[i % MAX_BAR_LINES])

    def _last_complete_bar(self, limit: int) -> tuple[int, int] | None:
        """(start, length) of the latest published bar that ends at or before `limit`."""
        count = self._bar_count
        for i in range(count - 1, max(count - MAX_BAR_LINES, 0), -1):
            end = self._bar_line(i)
            start = self._bar_line(i - 1)
            if end <= limit and start >= self.origin:
                return start, end - start
        return None

    def _bar_line_at_or_before(self, position: int) -> int | None:
        count = self._bar_count
        for i in range(count - 1, max(count - MAX_BAR_LINES, -1), -1):
            line = self._bar_line(i)
            if line <= position:
                return line
        return None

    def first_bar_line(self, at: int) -> int | None:
        """The first published bar line at or after `at`."""
        return self._bar_line_in(at, 1 << 62)

    def _bar_line_in(self, lo: int, hi: int) -> int | None:
        """First published bar line in [lo, hi)."""
        count = self._bar_count
        for i in range(max(count - MAX_BAR_LINES, 0), count):
            line = self._bar_line(i)
            if lo <= line < hi:
                return line
            if line >= hi:
                return None
        return None

    # -- reader side ------------------------------------------------------------------------
    def read(self, out: np.ndarray, position: int) -> None:
        """Fill `out` (n, channels) with the stream at `position`. Reader thread only.

        Never blocks and never allocates beyond numpy views; called from the audio
        callback, so it must not log or raise for ordinary conditions.
        """
        n = len(out)
        if position < self.origin:  # before the stream starts: silence, then the stream from its origin
            before = min(n, self.origin - position)
            out[:before] = 0.0
            if before < n:
                self.read(out[before:], self.origin)
            return
        if self.replaying:
            self._read_replaying(out, position)
        elif self.freeze:
            line = self._bar_line_in(position, position + n)
            if line is None or self._start_replay(line, fresh_until=line) is False:
                self._copy(out, position)
            else:
                split = line - position
                self._copy(out[:split], position)
                self._read_replaying(out[split:], line)
                self.freezes += 1
        elif self.written >= position + n:
            self._copy(out, position)
        else:
            if not self._start_replay(position, fresh_until=self.written):
                self._copy_partial(out, position)
                return
            self.underruns += 1
            self._read_replaying(out, position, fresh_until=self.written)
        self._last[:] = out[-1]

    def replay_bar(self, position: int) -> tuple[int, int, int] | None:
        """(start, length, anchor) of the bar the reader would replay from `position` if the stream
        ended there: the bar being replayed, or the last complete bar (the feeder hands it to the
        audio callback for when it runs dry)."""
        if self.replaying:
            return self._replay_start, self._replay_length, self._replay_anchor
        bar = self._last_complete_bar(position)
        if bar is None:
            return None
        anchor = self._bar_line_at_or_before(position)
        return bar[0], bar[1], anchor if anchor is not None else bar[0] + bar[1]

    def resume_replay(self, bar: tuple[int, int, int]) -> None:
        """Reader: the audio callback looped `bar` (from `replay_bar`) while the reader was late;
        go on inside that replay, so what is read next continues what was heard."""
        if not self.replaying:
            self._replay_start, self._replay_length, self._replay_anchor = bar
            self.replaying = True
            self.underruns += 1

    def _start_replay(self, position: int, *, fresh_until: int) -> bool:
        bar = self._last_complete_bar(fresh_until)
        if bar is None:
            return False
        anchor = self._bar_line_at_or_before(position)
        self._replay_start, self._replay_length = bar
        self._replay_anchor = anchor if anchor is not None else bar[0] + bar[1]
        self.replaying = True
        return True

    def _read_replaying(self, out: np.ndarray, position: int, *, fresh_until: int | None = None) -> None:
        n = len(out)
        # Rejoin at the first bar line in this block where fresh audio is ready (with fade room).
        if not self.freeze and fresh_until is None:
            line = self._bar_line_in(position, position + n)
            if line is not None and self.written >= line + max(n, self._xfade):
                split = line - position
                self._replay_into(out[:split], position)
                self._replay_into(self._tmp, line)
                self._copy(out[split:], line)
                k = min(self._xfade, n - split)
                out[split : split + k] *= self._fade_in[:k]
                out[split : split + k] += self._tmp[:k] * self._fade_out[:k]
                self.replaying = False
                self.rejoined_at = line
                self.rejoins += 1
                return
        self._replay_into(out, position)
        # Entering: fade from fresh audio where it exists, else from the last sample played.
        if fresh_until is not None:
            k = min(self._xfade, n)
            fresh = max(0, min(fresh_until - position, k))
            if fresh:
                self._copy(self._tmp[:fresh], position)
            self._tmp[fresh:k] = self._last
            out[:k] *= self._fade_in[:k]
            out[:k] += self._tmp[:k] * self._fade_out[:k]

    def _replay_into(self, out: np.ndarray, position: int) -> None:
        n = len(out)
        done = 0
        while done < n:
            offset = (position + done - self._replay_anchor) % self._replay_length
            take = min(n - done, self._replay_length - offset)
            self._copy(out[done : done + take], self._replay_start + offset)
            done += take

    def peek(self, out: np.ndarray, position: int) -> None:
        """The stream as written at `position`, whatever the reader plays (the feeder's recopy)."""
        self._copy(out, position)

    def _copy(self, out: np.ndarray, position: int) -> None:
        n = len(out)
        pos = position % self.capacity
        first = min(n, self.capacity - pos)
        out[:first] = self._buf[pos : pos + first]
        out[first:] = self._buf[: n - first]

    def _copy_partial(self, out: np.ndarray, position: int) -> None:
        """Start-up before any complete bar exists: play what is there, then silence."""
        have = max(0, min(self.written - position, len(out)))
        self._copy(out[:have], position)
        out[have:] = 0.0


def raised_cosine(length: int) -> np.ndarray:
    """A raised-cosine fade-in of `length` samples, shaped (length, 1)."""
    return (0.5 - 0.5 * np.cos(np.pi * (np.arange(length) + 0.5) / max(length, 1))).astype(np.float32)[:, None]
