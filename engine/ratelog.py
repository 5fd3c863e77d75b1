"""Rate-limited warnings for bad input that can arrive many times a second (clock streams, control floods)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class RateLimitedLog:
    """Log a warning per key at most once per `interval` seconds, with a count of the rest."""

    def __init__(
        self, logger: logging.Logger, *, interval: float = 5.0, now: Callable[[], float] = time.monotonic
    ) -> None:
        self._logger = logger
        self._interval = interval
        self._now = now
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self.counts: dict[str, int] = {}

    def warn(self, key: str, message: str, *args: object) -> None:
        self.counts[key] = self.counts.get(key, 0) + 1
        t = self._now()
        last = self._last.get(key)
        if last is not None and t - last < self._interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        extra = self._suppressed.pop(key, 0)
        self._last[key] = t
        suffix = f" ({extra} more like this suppressed)" if extra else ""
        self._logger.warning(message + suffix, *args)
