"""Automation files: timed control events for offline renders.

    events:
      - bar: 3          # musicians' count: bar 1 is the first bar
        beat: 2.5       # optional, from 1; fractions allowed
        target: style.0.weight
        value: 0.2
        quantize: bar   # optional; default is the parameter's own

Each event is issued when the simulated playhead reaches its position, exactly as a
control moved at that moment would be; its quantize then decides where it lands.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import jsonschema

from engine.errors import AutomationError
from engine.params import QUANTIZE_VALUES, ControlEvent
from engine.timeline import Timeline
from engine.yamlfile import key_path, read_yaml

AUTOMATION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["events"],
    "properties": {
        "events": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["bar", "target"],
                "properties": {
                    "bar": {"type": "integer", "minimum": 1},
                    "beat": {"type": "number", "minimum": 1},
                    "target": {"type": "string"},
                    "value": {"type": ["number", "string", "boolean", "null"]},
                    "quantize": {"enum": list(QUANTIZE_VALUES)},
                },
            },
        }
    },
}


@dataclass(frozen=True, slots=True)
class TimedEvent:
    bar: int  # 0-based engine bar
    beat: Fraction  # 0-based beat offset within the bar
    event: ControlEvent

    def sample(self, timeline: Timeline) -> int:
        """Where the event is issued on the current timeline."""
        first = timeline.bar_first_beat(self.bar)
        whole = int(self.beat)
        start = timeline.beat_start(first + whole)
        frac = self.beat - whole
        return start + round((timeline.beat_start(first + whole + 1) - start) * frac) if frac else start


def load_automation(path: str | Path) -> list[TimedEvent]:
    """Read and validate an automation file; events come back in time order."""
    file = Path(path)
    data = read_yaml(file, AutomationError)
    errors = sorted(jsonschema.Draft202012Validator(AUTOMATION_SCHEMA).iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        raise AutomationError(file, key_path(errors[0].absolute_path), errors[0].message)
    events = []
    for i, entry in enumerate(data["events"]):
        try:
            event = ControlEvent(entry["target"], entry.get("value"), source="automation", quantize=entry.get("quantize"))
        except ValueError as err:
            raise AutomationError(file, f"events[{i}]", str(err)) from err
        events.append(TimedEvent(entry["bar"] - 1, Fraction(str(entry.get("beat", 1))) - 1, event))
    return sorted(events, key=lambda e: (e.bar, e.beat))


class AutomationInput:
    """Automation as a control input (scheduler thread, once per generated frame, like a
    surface's drain): each event goes to `submit` once the playhead has reached it."""

    def __init__(self, events: Sequence[TimedEvent], submit: Callable[[ControlEvent], None], *,
                 playhead: Callable[[], int], timeline: Callable[[], Timeline]) -> None:
        self._events = list(events)
        self._submit = submit
        self._playhead = playhead
        self._timeline = timeline

    def drain(self, *, step: bool = True) -> int:
        """Submit every event due at the playhead (per frame or between frames alike); returns how many."""
        count, now = 0, self._playhead()
        while self._events and (at := self._events[0].sample(self._timeline())) <= now:
            self._submit(replace(self._events.pop(0).event, heard=at))  # heard where it is written
            count += 1
        return count
