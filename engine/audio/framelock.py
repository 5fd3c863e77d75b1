"""Keep an audio sink's playhead on JACK's frame clock, whatever cycles JACK skips.

JACK skips a client's cycles when the graph overruns (an xrun) while its frame counter runs
on, and now and then runs a cycle twice. A playhead that counts callbacks then falls behind
the frames every other client (a MIDI clock, a recorder, the sound card) uses. `FrameLock`
places each block at (its cycle's frame - origin) instead: skipped audio is lost, a repeated
block is played again, and the bar grid stays on JACK's clock.
"""

from __future__ import annotations

from engine.jack import frame_delta


class FrameLock:
    """Block positions from JACK frame times; runs on the audio thread (ints only, no locks)."""

    def __init__(self) -> None:
        self.origin: int | None = None
        """JACK frame (32 bits) where playhead 0 plays; set by the first block."""
        self.skipped = 0  # frames JACK advanced without a block from us
        self._cycle_frame = 0  # JACK frame of the cycle the last block was in
        self._cycle_start = 0  # playhead at that cycle's first frame
        self._in_cycle = 0  # frames taken from that cycle so far

    def place(self, frame: int, frames: int, playhead: int) -> int:
        """The playhead where a block of `frames` taken in the cycle at JACK frame `frame` starts.

        `playhead` is where the last block ended. Several blocks per cycle (a period that is a
        multiple of the block size) follow each other within it; a block size that is a
        multiple of the period sees every n-th cycle.
        """
        if self.origin is None:
            self.origin, self._cycle_frame, self._cycle_start = frame - playhead, frame, playhead
        elif frame != self._cycle_frame:
            self._cycle_start += frame_delta(frame, self._cycle_frame)
            self._cycle_frame, self._in_cycle = frame, 0
        start = self._cycle_start + self._in_cycle
        self._in_cycle += frames
        if start > playhead:
            self.skipped += start - playhead
        return start
