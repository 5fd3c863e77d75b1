"""The control layer (MIDI, OSC, mappings) as the service runs it, if it is installed.

`engine.control` provides the parts; this module only builds them from the config,
drains them from the scheduling loop, and reloads mappings on SIGHUP, file by file, so a
broken file keeps its running version and the others still update.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

from engine.errors import BacklineError
from engine.service.config import ServiceConfig

if TYPE_CHECKING:
    from engine.engine import Engine

log = logging.getLogger(__name__)


class Control:
    """Dispatcher + OSC server + MIDI hub for one engine."""

    def __init__(self, config: ServiceConfig, engine: Engine, parts: Any) -> None:
        self._parts = parts
        self.dispatcher = parts.Dispatcher(engine)
        for path in config.mappings:
            self.dispatcher.reload(path)  # logs and skips a broken file
        self.osc = None
        if config.osc_enabled:
            self.osc = parts.OscServer(self.dispatcher, host=config.osc_host, port=config.osc_port, allow=config.osc_allow)
            self.osc.start()
        self.midi = None
        try:
            self.midi = parts.MidiHub(self.dispatcher, api=config.midi_api, inputs=config.midi_inputs)
            self.midi.start()
        except (OSError, RuntimeError, SystemError, ValueError) as err:  # rtmidi raises SystemError without a MIDI API
            log.error("MIDI input is off: cannot open the %s MIDI API (%s); OSC still works", config.midi_api, err)
            self.midi = None
        self.mappings = config.mappings

    @classmethod
    def start(cls, config: ServiceConfig, engine: Engine) -> Control | None:
        """The control layer for `engine`, or None (logged) when `engine.control` is not installed."""
        try:
            parts = importlib.import_module("engine.control")
        except ModuleNotFoundError as err:
            log.warning("no control layer in this build (%s): MIDI, OSC and /backline/status are off", err)
            return None
        return cls(config, engine, parts)

    def drain(self) -> None:
        """Scheduling-loop thread: submit what arrived since the last tick."""
        self.dispatcher.drain()

    def reload(self, config: ServiceConfig) -> None:
        """`signals` thread: reload every mapping file, drop removed ones, update MIDI port patterns."""
        dropped = [p for p in self.mappings if p not in config.mappings]
        current = self.dispatcher.mappings
        for path in dropped:
            current = current.without_file(path)
        self.dispatcher.set_mappings(current)
        failed = [path for path in config.mappings if self.dispatcher.reload(path) is not None]
        self.mappings = config.mappings
        if self.midi is not None and tuple(config.midi_inputs) != self.midi.patterns:
            self.midi.patterns = tuple(config.midi_inputs)
            self.midi.scan()
        log.info("mappings reloaded: %d files, %d kept at their running version", len(config.mappings), len(failed))

    def close(self) -> None:
        for part in (self.midi, self.osc):
            if part is not None:
                try:
                    part.close()
                except (OSError, BacklineError) as err:
                    log.warning("closing %s: %s", type(part).__name__, err)
