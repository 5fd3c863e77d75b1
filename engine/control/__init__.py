"""Control surfaces: MIDI and OSC mappings onto the parameter space (see engine/params.py)."""

from engine.control.dispatcher import ControlTarget, Dispatcher, OscInput
from engine.control.learn import Learner
from engine.control.mapping import MappingError, MappingSet, load_dir, load_file
from engine.control.midi_io import MidiHub
from engine.control.osc_server import OscServer
from engine.control.rejects import Rejects

__all__ = [
    "ControlTarget",
    "Dispatcher",
    "Learner",
    "MappingError",
    "MappingSet",
    "MidiHub",
    "OscInput",
    "OscServer",
    "Rejects",
    "load_dir",
    "load_file",
]
