"""Crash-recovery state: the current patch, parameter values and tempo, saved atomically.

Whenever the engine reports a change, `mark_dirty()` wakes a writer thread that takes a
fresh snapshot and writes it to a temporary file in the same folder, fsyncs it, renames
it over the state file and fsyncs the folder: a crash at any moment leaves either the old
or the new file, never half of one. Writes are coalesced to at most one per
`min_interval_s`, so a fader sweep costs a few writes a second, not hundreds.

A state file that cannot be read back (bad JSON, wrong shape) is moved aside with a
timestamp in its name and reported; the engine then starts from its start patch.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema

log = logging.getLogger(__name__)

STATE_VERSION = 2  # 2: the engine snapshot is {"patch", "values": show-state path -> value}
_SCHEMA = {
    "type": "object",
    "required": ["version", "engine"],
    "properties": {"version": {"enum": [1, STATE_VERSION]}, "engine": {"type": "object"}, "saved_at": {"type": "string"}},
}


def upgrade_v1(engine: dict[str, Any]) -> dict[str, Any]:
    """A version 1 snapshot (tempo, meter, weights, sampling, gain, playing as keys) as version 2."""
    values: dict[str, Any] = {}
    for key, path in (("tempo", "tempo.bpm"), ("meter", "meter.beats_per_bar"), ("mean_weight", "mean.weight"),
                      ("gain", "master.gain"), ("playing", "transport.playing")):
        if key in engine:
            values[path] = engine[key]
    for key, pattern in (("style_weights", "style.{}.weight"), ("centroid_weights", "centroid.{}.weight")):
        values.update((pattern.format(i), w) for i, w in enumerate(engine.get(key, [])))
    values.update((f"sampling.{k}", v) for k, v in dict(engine.get("sampling", {})).items())
    return {"patch": engine.get("patch"), "values": values}


class StateStore:
    """Loads the saved state once and keeps the file up to date from a writer thread."""

    def __init__(self, path: str | Path, *, snapshot: Callable[[], dict[str, Any]], min_interval_s: float = 0.25) -> None:
        self.path = Path(path)
        self._snapshot = snapshot
        self.min_interval_s = min_interval_s
        self._dirty = threading.Event()
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self.writes = 0
        self.set_aside: Path | None = None

    def load(self) -> dict[str, Any] | None:
        """The engine's saved snapshot, or None (no file, or a corrupt one, which is moved aside)."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as err:
            log.error("cannot read state file %s: %s (starting from the configured patch)", self.path, err)
            return None
        try:
            data = json.loads(text)
            jsonschema.validate(data, _SCHEMA)
        except (json.JSONDecodeError, jsonschema.ValidationError) as err:
            reason = err.msg if isinstance(err, json.JSONDecodeError) else err.message
            self.set_aside = self._move_aside()
            log.error("state file %s is corrupt (%s): moved to %s, starting from the configured patch",
                      self.path, reason, self.set_aside)
            return None
        if data["version"] == 1:
            log.info("state file %s is version 1: read as version 2 (it will be written as 2)", self.path)
            return upgrade_v1(data["engine"])
        return data["engine"]

    def _move_aside(self) -> Path:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        n = 1
        while target.exists():
            target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
            n += 1
        os.replace(self.path, target)
        return target

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="state-writer", daemon=True)
        self._thread.start()

    def mark_dirty(self) -> None:
        """Something changed. Thread-safe and cheap: may run on any thread except the audio callback."""
        self._dirty.set()

    def close(self) -> None:
        """Write the newest state once more, then stop the writer."""
        self._closing.set()
        self._dirty.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        """Writer thread: one snapshot per wake-up, then a pause that coalesces further changes."""
        while True:
            self._dirty.wait()
            self._dirty.clear()
            self.save_now()
            if self._closing.is_set():
                return
            self._closing.wait(self.min_interval_s)

    def save_now(self) -> None:
        """Snapshot and write atomically; an error is logged, the old file stays."""
        try:
            data = {"version": STATE_VERSION, "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "engine": self._snapshot()}
            write_atomic(self.path, json.dumps(data, indent=1, sort_keys=True) + "\n")
        except Exception as err:  # the show goes on without crash recovery rather than stopping
            log.error("cannot save state to %s: %s", self.path, err)
            return
        self.writes += 1


def write_atomic(path: Path, text: str) -> None:
    """Temporary file in the same folder, fsync, rename over `path`, fsync the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
