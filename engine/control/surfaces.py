"""One object that runs every control surface for the engine: mappings, MIDI, OSC and learn.

The runner builds it once with the engine as its ControlTarget, hands `drain()` to the
scheduler (which calls it once per generated frame, on its own thread), reloads it on SIGHUP, and closes it on shutdown
(MIDI outputs get All Notes Off). A surface that cannot start (no MIDI API, an OSC port in
use) is logged and left off: the show plays on with the others.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from engine.control.dispatcher import ControlTarget, Dispatcher
from engine.control.learn import Learner
from engine.control.mapping import MappingError
from engine.control.midi_io import MidiHub
from engine.control.osc_server import LOOPBACK, FeedbackMode, OscServer
from engine.midi import MidiApi, no_sequencer_hint

log = logging.getLogger(__name__)


class ControlSurfaces:
    """Dispatcher + mapping files + optional MIDI hub + optional OSC server, started together."""

    def __init__(self, target: ControlTarget, *, mappings: Sequence[str | Path] = (),
                 learn_file: str | Path = "mappings/learned.yaml",
                 midi_api: MidiApi | None = "alsa", midi_inputs: Sequence[str] = ("*",),
                 osc_host: str = "127.0.0.1", osc_port: int | None = 9000, osc_allow: Sequence[str] = LOOPBACK,
                 osc_feedback: FeedbackMode = "registered") -> None:
        self.dispatcher = Dispatcher(target)
        self.learner = Learner(self.dispatcher, file=learn_file)
        self.mappings: tuple[Path, ...] = ()
        self.errors: list[MappingError] = self.load_mappings(mappings)
        self.midi: MidiHub | None = None
        if midi_api:
            try:
                self.midi = MidiHub(self.dispatcher, api=midi_api, inputs=midi_inputs)
            except (OSError, RuntimeError, SystemError, ValueError) as err:  # rtmidi raises SystemError without an API
                log.error("MIDI input is off: cannot open the %s MIDI API (%s)%s; OSC still works", midi_api, err,
                          no_sequencer_hint(midi_api))
        self.osc: OscServer | None = None
        if osc_port is not None:
            try:
                self.osc = OscServer(self.dispatcher, host=osc_host, port=osc_port, allow=osc_allow,
                                     feedback=osc_feedback, learn=self.learner.arm)
            except OSError as err:
                log.error("OSC is off: cannot listen on %s:%d (%s); pick another port with --osc-port or osc.port",
                          osc_host, osc_port, err)

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

    def drain(self, *, step: bool = True) -> int:
        """On the scheduler thread, per new frame (`step`: a ramp step each) and between frames: submit what arrived."""
        return self.dispatcher.drain(wait=False, step=step)

    def load_mappings(self, paths: Sequence[str | Path]) -> list[MappingError]:
        """Make `paths` (plus the learn file, once it exists) the active mapping files.

        Removed files are dropped and the rest (re)loaded one by one. A broken file is logged
        and returned, and its running version (if any) stays, so one typo never takes the
        other surfaces (or the show) down. Runs on the caller's thread.
        """
        wanted = tuple(Path(p) for p in paths)
        if self.learner.file.exists() and self.learner.file not in wanted:
            wanted += (self.learner.file,)
        current = self.dispatcher.mappings
        for path in self.mappings:
            if path not in wanted:
                current = current.without_file(path)
        self.dispatcher.set_mappings(current)
        failed = [err for err in (self.dispatcher.reload(path) for path in wanted) if err is not None]
        self.mappings = wanted
        return failed

    def set_midi_inputs(self, patterns: Sequence[str]) -> None:
        """Rebind MIDI inputs to new port patterns (a config reload)."""
        if self.midi is not None and tuple(patterns) != self.midi.patterns:
            self.midi.patterns = tuple(patterns)
            self.midi.scan()

    def close(self) -> None:
        for part in (self.osc, self.midi):
            if part is not None:
                try:
                    part.close()
                except OSError as err:
                    log.warning("closing %s: %s", type(part).__name__, err)
