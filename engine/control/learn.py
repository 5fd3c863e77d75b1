"""MIDI learn: the next moved control is bound to a chosen target and saved to a mapping file.

Armed from the CLI (`backline learn`) or over OSC (`/backline/learn s target`). The new
rule replaces any rule in that file with the same source, controls stay sorted by MIDI
number (as Mixxx keeps them), the file is validated before it is written, and it is
written atomically, then reloaded into the running dispatcher.
"""

from __future__ import annotations

import glob
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mido
import yaml

from engine.control.dispatcher import Dispatcher
from engine.control.mapping import MappingError, parse
from engine.params import lookup

log = logging.getLogger(__name__)


def match_for(msg: mido.Message, port: str) -> dict[str, Any]:
    """The `match.midi` entry for a message, bound to exactly this port and channel."""
    m: dict[str, Any] = {"port": glob.escape(port), "channel": msg.channel + 1}
    if msg.type == "control_change":
        m["cc"] = msg.control
    elif msg.type == "note_on":
        m["note"] = msg.note
    elif msg.type == "program_change":
        m["program"] = msg.program
    elif msg.type == "pitchwheel":
        m["pitchbend"] = True
    elif msg.type == "aftertouch":
        m["aftertouch"] = True
    else:
        raise ValueError(f"cannot learn from a {msg.type} message")
    return m


def _sort_key(control: dict[str, Any]) -> tuple:
    midi = control["match"].get("midi")
    if midi is None:
        return (1, control["match"]["osc"], 0)
    kind = next(k for k in ("cc", "cc14", "nrpn", "note", "notes", "program", "pitchbend", "aftertouch") if k in midi)
    number = midi[kind] if isinstance(midi[kind], int) and not isinstance(midi[kind], bool) else -1
    return (0, kind, number, midi.get("channel", 0))


def save_rule(path: str | Path, control: dict[str, Any]) -> None:
    """Add or replace `control` in the mapping file at `path` (created if missing); MappingError if invalid."""
    path = Path(path)
    if path.exists():
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as err:
            raise MappingError(path, "", f"not valid YAML: {err}") from err
    else:
        data = {"info": {"name": path.stem, "description": "made by MIDI learn"}, "controls": []}
    controls = [c for c in data.get("controls", []) if c.get("match") != control["match"]]
    data["controls"] = sorted(controls + [control], key=_sort_key)
    parse(data, file=str(path))
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    os.replace(tmp, path)


class Learner:
    """Arms the dispatcher's learn hook and turns the captured message into a saved rule."""

    def __init__(self, dispatcher: Dispatcher, *, file: str | Path) -> None:
        self.dispatcher = dispatcher
        self.file = Path(file)
        self.done = threading.Event()
        self.result: dict[str, Any] | None = None
        self.error: Exception | None = None
        self._on_done: Callable[[dict[str, Any] | None, Exception | None], None] | None = None

    def arm(self, target: str, *, options: dict[str, Any] | None = None,
            on_done: Callable[[dict[str, Any] | None, Exception | None], None] | None = None) -> str | None:
        """Arm learn for `target`; returns a problem string instead of arming if the target is unknown."""
        try:
            lookup(target)
        except ValueError as err:
            return str(err)
        self.done.clear()
        self.result, self.error, self._on_done = None, None, on_done
        self.dispatcher.arm_learn(lambda msg, port: self._captured(msg, port, target, options or {}))
        log.info("MIDI learn armed for %s: move a control", target)
        return None

    def _captured(self, msg: mido.Message, port: str, target: str, options: dict[str, Any]) -> None:
        """Runs on the MIDI input thread that saw the message."""
        try:
            control: dict[str, Any] = {"name": f"learned {target}", "match": {"midi": match_for(msg, port)}, "target": target}
            if options:
                control["options"] = options
            save_rule(self.file, control)
            err = self.dispatcher.reload(self.file)
            if err is not None:
                raise err
            self.result = control
            log.info("MIDI learn: %s on %s -> %s, saved to %s", msg.type, port, target, self.file)
        except (MappingError, ValueError, OSError) as err:
            self.error = err
            log.error("MIDI learn failed: %s", err)
        self.done.set()
        if self._on_done is not None:
            self._on_done(self.result, self.error)
