"""Counting and rate-limited logging of rejected control input.

A controller or a misconfigured OSC surface can send thousands of bad messages a
second; each is counted per reason, but the log gets at most one line per reason per
interval (with how many were suppressed), so the log never floods.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable

log = logging.getLogger(__name__)


class Reject(ValueError):
    """A control surface's message (an OSC datagram, a web page's JSON) refused; `reason` is
    the name it is counted under (`Rejects`), the message says what was wrong and where."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class Rejects:
    """Thread-safe reject counter with a rate-limited log line per reason."""

    def __init__(self, *, interval_s: float = 5.0, clock: Callable[[], float] = time.monotonic,
                 logger: logging.Logger = log) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._log = logger
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._last_log: dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()

    def reject(self, reason: str, detail: str, source: str) -> None:
        """Count one rejected input; log it unless this reason logged within the interval.

        Runs on whichever input thread saw the message (MIDI callback, OSC server thread).
        """
        now = self._clock()
        with self._lock:
            self._counts[reason] += 1
            last = self._last_log.get(reason)
            if last is not None and now - last < self.interval_s:
                self._suppressed[reason] += 1
                return
            self._last_log[reason] = now
            suppressed, self._suppressed[reason] = self._suppressed[reason], 0
        more = f" ({suppressed} more since last report)" if suppressed else ""
        self._log.warning("rejected %s from %s: %s%s", reason, source, detail, more)

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def refused(self) -> int:
        """Inputs that changed nothing (a clamped value was still applied, so it is not counted)."""
        with self._lock:
            return sum(n for reason, n in self._counts.items() if reason != "clamped")
