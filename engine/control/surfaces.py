"""One object that runs every control surface for the engine: mappings, MIDI, OSC and learn.

The engine builds it once with its ControlTarget, calls `drain()` once per generated frame
on its scheduler thread, and closes it on shutdown (MIDI outputs get All Notes Off).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from engine.control.dispatcher import ControlTarget, Dispatcher
from engine.control.learn import Learner
from engine.control.mapping import MappingError, MappingSet, load_file
from engine.control.midi_io import Api, MidiHub
from engine.control.osc_server import LOOPBACK, FeedbackMode, OscServer

log = logging.getLogger(__name__)


class ControlSurfaces:
    """Dispatcher + mapping files + optional MIDI hub + optional OSC server, started together."""

    def __init__(self, target: ControlTarget, *, mappings: Sequence[str | Path] = (),
                 learn_file: str | Path = "mappings/learned.yaml",
                 midi_api: Api | None = "alsa", midi_inputs: Sequence[str] = ("*",),
                 osc_host: str = "127.0.0.1", osc_port: int | None = 9000, osc_allow: Sequence[str] = LOOPBACK,
                 osc_feedback: FeedbackMode = "registered") -> None:
        files, self.errors = [], []
        for path in mappings:
            try:
                files.append(load_file(path))
            except MappingError as err:  # one bad file must not keep the others (or the show) from starting
                log.error("%s (file skipped)", err)
                self.errors.append(err)
        self.dispatcher = Dispatcher(target, MappingSet.of(files))
        self.learner = Learner(self.dispatcher, file=learn_file)
        self.midi = MidiHub(self.dispatcher, api=midi_api, inputs=midi_inputs) if midi_api else None
        self.osc = (OscServer(self.dispatcher, host=osc_host, port=osc_port, allow=osc_allow, feedback=osc_feedback,
                              learn=self.learner.arm) if osc_port is not None else None)

    def __enter__(self) -> ControlSurfaces:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        if self.midi is not None:
            self.midi.start()
        if self.osc is not None:
            self.osc.start()

    def drain(self) -> int:
        """Once per generated frame, on the engine's scheduler thread: submit what arrived."""
        return self.dispatcher.drain()

    def reload(self, path: str | Path) -> MappingError | None:
        """Reload one mapping file; a broken file is returned and the running mappings stay."""
        return self.dispatcher.reload(path)

    def close(self) -> None:
        if self.osc is not None:
            self.osc.close()
        if self.midi is not None:
            self.midi.close()
