"""Feedback off the generation thread: a surface's own thread sends what the engine changed.

The scheduler notifies its listeners on its own thread, between two frames. A surface that
sends feedback (OSC to its clients, MIDI to LEDs and motor faders) must never make it wait:
a slow network path, a full socket buffer or a MIDI rescan holding the hub's lock would
stall generation. `Feed.put` is the listener: it appends to a bounded deque and sets an
event, never taking a lock of the surface; the feed's thread hands each change to the
surface's handler.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable

log = logging.getLogger(__name__)
FEED_LIMIT = 4096  # changes waiting for a handler that fell behind; the oldest go first

Handler = Callable[[str, object, str], None]


class Feed:
    """One surface's feedback thread and the bounded queue in front of it."""

    def __init__(self, name: str, handler: Handler, *, limit: int = FEED_LIMIT) -> None:
        self.name = name
        self._handler = handler
        self._items: deque[tuple[str, object, str]] = deque(maxlen=limit)
        self._ready = threading.Event()
        self._closed = False
        self.dropped = 0  # changes a slow handler never saw (the queue was full)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def put(self, path: str, value: object, source: str) -> None:
        """Engine listener, on the scheduler thread: queue and return (no surface lock, no I/O)."""
        if len(self._items) == self._items.maxlen:
            self.dropped += 1
        self._items.append((path, value, source))
        self._ready.set()

    def _run(self) -> None:
        """The feed's own thread: hand every queued change to the handler, in order."""
        while True:
            self._ready.wait()
            self._ready.clear()
            while self._items:
                path, value, source = self._items.popleft()
                try:
                    self._handler(path, value, source)
                except Exception:  # noqa: BLE001 - a failing surface must not end its feedback
                    log.exception("%s: feedback for %s failed", self.name, path)
            if self._closed:
                return

    def close(self) -> None:
        """Send what is queued, then stop the thread (waits at most a second)."""
        self._closed = True
        self._ready.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(1.0)
