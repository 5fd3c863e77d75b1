"""An in-memory ControlTarget for tests: records events, applies them on request, notifies listeners.

The real engine (engine lead's Engine) applies events on its scheduler thread; here a test
calls `apply()` to play that part, so the order of events is deterministic.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from engine.params import ControlEvent


class MemoryTarget:
    def __init__(self, status: dict[str, object] | None = None) -> None:
        self.events: list[ControlEvent] = []
        self.values: dict[str, object] = {}
        self._status = status or {"bar": 12, "beat": 2.5, "tempo": 121.0, "patch": "verse", "lookahead_ms": 160.0,
                                  "xruns": 3, "speed": 1.75, "underruns": 1, "playing": True,
                                  "clock": {"source": "midi:x", "state": "lost"}}
        self._listeners: list[Callable[[str, object, str], None]] = []
        self._lock = threading.Lock()
        self._applied = 0

    def submit(self, event: ControlEvent) -> None:
        with self._lock:
            self.events.append(event)

    def status(self) -> dict[str, object]:
        return dict(self._status)

    def add_listener(self, fn: Callable[[str, object, str], None]) -> None:
        self._listeners.append(fn)

    def value_of(self, path: str) -> object:
        return self.values.get(path)

    def playhead(self) -> int:
        return 0

    def apply(self) -> list[ControlEvent]:
        """Apply every event submitted since the last call and notify listeners (the engine's job)."""
        with self._lock:
            new, self._applied = self.events[self._applied:], len(self.events)
        for event in new:
            self.change(event.target, event.value, event.source)
        return new

    def change(self, path: str, value: object, source: str) -> None:
        """A parameter changed (from an event, or from elsewhere such as a patch load)."""
        self.values[path] = value
        for fn in self._listeners:
            fn(path, value, source)
