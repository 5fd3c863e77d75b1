"""The splice margin: how far ahead of the playhead a rollback may change the audio.

A rollback restores the snapshot of a chunk of the look-ahead and generates it again; the
new audio must be in the ring before the audio callback reaches the first sample that
changed. The margin covers one audio block (the callback reads a block ahead of the
playhead it reports), the loop's wake-up, and the generator's recent chunk time (restore
included) at its 99th percentile, times SAFETY. It is held at its peak: it rises at once when
chunk times jitter, and decays towards the present need with a half-life of DECAY_HALF_LIFE_S,
so a quiet minute does not leave it too short for the next stall. It stays within the config's
`lookahead: {min_ms, max_ms}`.

Offline (render) the margin is `min` (at least a block), fixed: a render must not depend on the machine's speed.
Scheduler thread only.
"""

from __future__ import annotations

import math
from collections import deque

from engine.units import SAMPLE_RATE

SAFETY = 1.5
RECENT_CHUNKS = 200  # the p99 is over the latest 200 chunks (16 s at 2 frames a chunk)
DECAY_HALF_LIFE_S = 120.0
LOOP_WAKE_S = 0.005  # the engine loop waits at most this long for the next turn
DEFAULT_MIN_MS = 10.0
DEFAULT_MAX_MS = 400.0


class SpliceMargin:
    """Samples between the playhead and the earliest sample a rollback may change."""

    def __init__(self, *, min_ms: float = DEFAULT_MIN_MS, max_ms: float = DEFAULT_MAX_MS, block: int = 0,
                 adaptive: bool = True) -> None:
        if not 0 <= min_ms <= max_ms:
            raise ValueError(f"lookahead margin bounds need 0 <= min_ms <= max_ms, got {min_ms:g} and {max_ms:g}")
        self.min = round(min_ms * SAMPLE_RATE / 1000)
        self.max = round(max_ms * SAMPLE_RATE / 1000)
        self.block = block
        self.adaptive = adaptive
        self._recent: deque[float] = deque(maxlen=RECENT_CHUNKS)
        self._held = float(self.min)
        self._held_at: float | None = None

    def observe(self, seconds: float, now: float) -> None:
        """A chunk took `seconds` to generate (restore included, after a rollback); `now` is monotonic."""
        if not self.adaptive:
            return
        self._recent.append(seconds)
        need = self._need()
        if self._held_at is not None and self._held > need:
            self._held = need + (self._held - need) * 0.5 ** ((now - self._held_at) / DECAY_HALF_LIFE_S)
        self._held, self._held_at = max(self._held, need), now

    def _need(self) -> float:
        ordered = sorted(self._recent)
        p99 = ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]
        return (SAFETY * p99 + LOOP_WAKE_S) * SAMPLE_RATE + self.block

    @property
    def samples(self) -> int:
        if not self.adaptive:
            return max(self.min, self.block)
        return int(max(min(max(math.ceil(self._held), self.min), self.max), self.block))  # never inside a block
