"""Mapping files (`mappings/*.yaml`): which control drives which parameter, and how.

The shape follows Mixxx's controller mappings, in YAML: `info`, optional `settings`
(default port pattern and channel), `controls` (each a `match` -> `target` with
`options`) and declarative `outputs` for LED and motor-fader feedback. Files are checked
with jsonschema and against the parameter space (`engine.params.lookup`); an error names
the file, the rule (index and name) and the key. A `MappingSet` is immutable: reloading
builds a new one, so a broken file never replaces a set that is playing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import jsonschema
import yaml

from engine.control.shaping import Shaper
from engine.errors import ConfigFileError
from engine.midi import port_matches
from engine.params import QUANTIZE_VALUES, Quantize, lookup, route_of

MidiKind = Literal["cc", "cc14", "nrpn", "note", "notes", "program", "pitchbend", "aftertouch"]
MIDI_KINDS: tuple[MidiKind, ...] = ("cc", "cc14", "nrpn", "note", "notes", "program", "pitchbend", "aftertouch")
KEYBOARD_TARGET = "note.*"


class MappingError(ConfigFileError):
    kind = "mapping"


_NUM = {"type": "number"}
_OPTIONS = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "range": {"type": "array", "items": _NUM, "minItems": 2, "maxItems": 2},
        "invert": {"type": "boolean"},
        "curve": {
            "oneOf": [
                {"enum": ["linear", "exponential", "logarithmic"]},
                {"type": "array", "minItems": 2, "items": {"type": "array", "items": _NUM, "minItems": 2, "maxItems": 2}},
            ]
        },
        "relative": {"enum": ["twos_complement", "binary_offset", "signed_bit"]},
        "step": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
        "soft_takeover": {"enum": ["jump", "pickup", "scale"]},
        "threshold": {"type": "number", "minimum": 0, "maximum": 1},
        "smoothing": {"type": "number", "minimum": 0, "maximum": 60},
        "quantize": {"enum": list(QUANTIZE_VALUES)},
        "switch": {"enum": ["momentary", "toggle", "trigger"]},
        "value": {"type": ["string", "number", "boolean", "null"]},
        "velocity": {"type": "boolean"},
        "bits": {"enum": [7, 14]},
    },
}
_MIDI_NUMBER = {"type": "integer", "minimum": 0, "maximum": 127}
_PORT_AND_CHANNEL = {"port": {"type": "string", "minLength": 1}, "channel": {"type": "integer", "minimum": 1, "maximum": 16}}
_MIDI_MATCH = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        **_PORT_AND_CHANNEL,
        "cc": _MIDI_NUMBER,
        "cc14": {"type": "integer", "minimum": 0, "maximum": 31},
        "nrpn": {"type": "integer", "minimum": 0, "maximum": 16383},
        "note": _MIDI_NUMBER,
        "notes": {"type": "array", "items": _MIDI_NUMBER, "minItems": 2, "maxItems": 2},
        "program": {"oneOf": [_MIDI_NUMBER, {"const": "any"}]},
        "pitchbend": {"const": True},
        "aftertouch": {"const": True},
    },
    "minProperties": 1,
}
_OUTPUT_MIDI = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        **_PORT_AND_CHANNEL,
        "cc": _MIDI_NUMBER,
        "note": _MIDI_NUMBER,
    },
    "oneOf": [{"required": ["cc"]}, {"required": ["note"]}],
}
SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["info", "controls"],
    "properties": {
        "info": {
            "type": "object",
            "required": ["name"],
            "additionalProperties": False,
            "properties": {k: {"type": "string"} for k in ("name", "device", "author", "description", "url")},
        },
        "settings": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "port": {"type": "string", "minLength": 1},
                "output_port": {"type": "string", "minLength": 1},
                "channel": {"type": "integer", "minimum": 1, "maximum": 16},
            },
        },
        "controls": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["match", "target"],
                "properties": {
                    "name": {"type": "string"},
                    "match": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {"midi": _MIDI_MATCH, "osc": {"type": "string", "pattern": "^/"}},
                        "oneOf": [{"required": ["midi"]}, {"required": ["osc"]}],
                    },
                    "target": {"type": "string"},
                    "options": _OPTIONS,
                },
            },
        },
        "outputs": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["target"],
                "properties": {
                    "name": {"type": "string"},
                    "target": {"type": "string"},
                    "midi": _OUTPUT_MIDI,
                    "osc": {"type": "string", "pattern": "^/"},
                    "options": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {k: _OPTIONS["properties"][k] for k in ("range", "invert", "curve")},
                    },
                },
                "oneOf": [{"required": ["midi"]}, {"required": ["osc"]}],
            },
        },
    },
}
_VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


@dataclass(frozen=True, slots=True)
class MidiMatch:
    """A MIDI source. `channel` is 0-based (files use 1..16); None matches any channel."""

    kind: MidiKind
    port: str = "*"
    channel: int | None = None
    number: int | None = None
    notes: tuple[int, int] | None = None

    def port_matches(self, port: str) -> bool:
        return port_matches(port, self.port)


@dataclass(frozen=True, slots=True)
class Options:
    shaper: Shaper = Shaper()
    relative: str | None = None
    step: float = 1 / 127
    soft_takeover: str = "jump"
    threshold: float = 3 / 127
    smoothing: float = 0.0
    quantize: Quantize | None = None
    switch: str | None = None
    value: object = None
    velocity: bool = True
    bits: int = 14


@dataclass(frozen=True, slots=True)
class Rule:
    """One `controls` entry: where it came from, what it matches, what it drives."""

    file: str
    index: int
    name: str
    target: str
    options: Options
    midi: MidiMatch | None = None
    osc: str | None = None

    @property
    def key(self) -> tuple[str, int]:
        return self.file, self.index

    @property
    def continuous(self) -> bool:
        """True for values that may be coalesced to the latest: not notes, hits, actions or triggers."""
        if route_of(self.target) == "notes" or self.options.switch == "trigger":
            return False
        return lookup(self.target)[0].kind in ("float", "int", "bool")


@dataclass(frozen=True, slots=True)
class Output:
    """One `outputs` entry: a parameter's value sent back to a controller (LED, motor fader) or surface."""

    file: str
    target: str
    shaper: Shaper
    midi: MidiMatch | None = None
    osc: str | None = None


@dataclass(frozen=True, slots=True)
class MappingFile:
    path: str
    name: str
    rules: tuple[Rule, ...]
    outputs: tuple[Output, ...]


@dataclass(frozen=True, slots=True)
class MappingSet:
    """The active mapping files, with indexes built once for fast matching."""

    files: tuple[MappingFile, ...] = ()
    _midi: dict[tuple[str, int | None], tuple[Rule, ...]] = field(default_factory=dict, compare=False)
    _osc: dict[str, tuple[Rule, ...]] = field(default_factory=dict, compare=False)

    @classmethod
    def of(cls, files: Iterable[MappingFile]) -> MappingSet:
        files = tuple(files)
        midi: dict[tuple[str, int | None], list[Rule]] = {}
        osc: dict[str, list[Rule]] = {}
        for f in files:
            for rule in f.rules:
                if rule.midi is not None:
                    number = None if rule.midi.kind in ("notes", "pitchbend", "aftertouch") else rule.midi.number
                    midi.setdefault((rule.midi.kind, number), []).append(rule)
                else:
                    osc.setdefault(rule.osc, []).append(rule)
        return cls(files, {k: tuple(v) for k, v in midi.items()}, {k: tuple(v) for k, v in osc.items()})

    def with_file(self, path: str | Path) -> MappingSet:
        """A new set with `path` loaded (replacing an older version of it); raises MappingError."""
        new = load_file(path)
        return MappingSet.of([f for f in self.files if f.path != new.path] + [new])

    def without_file(self, path: str | Path) -> MappingSet:
        """A new set without `path` (a file dropped from the config)."""
        return MappingSet.of(f for f in self.files if f.path != str(Path(path)))

    def midi_rules(self, kind: MidiKind, number: int | None) -> tuple[Rule, ...]:
        return self._midi.get((kind, number), ())

    def osc_rules(self, address: str) -> tuple[Rule, ...]:
        return self._osc.get(address, ())

    @property
    def rules(self) -> tuple[Rule, ...]:
        return tuple(r for f in self.files for r in f.rules)

    @property
    def outputs(self) -> tuple[Output, ...]:
        return tuple(o for f in self.files for o in f.outputs)

    def has_nrpn(self) -> bool:
        return any(k[0] == "nrpn" for k in self._midi)

    def cc14_numbers(self) -> frozenset[int]:
        return frozenset(k[1] for k in self._midi if k[0] == "cc14")


def load_dir(directory: str | Path) -> MappingSet:
    """Every `*.yaml` in a directory, sorted by name; the first broken file raises MappingError."""
    return MappingSet.of(load_file(p) for p in sorted(Path(directory).glob("*.yaml")))


def load_file(path: str | Path) -> MappingFile:
    """Read, validate and build one mapping file; MappingError names file, rule and key."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise MappingError(path, "", f"cannot read: {err.strerror or err}") from err
    except yaml.YAMLError as err:
        raise MappingError(path, "", f"not valid YAML: {err}") from err
    return parse(data, file=str(path))


def parse(data: object, *, file: str) -> MappingFile:
    """Build a MappingFile from already-loaded YAML data (also used by learn and tests)."""
    errors = sorted(_VALIDATOR.iter_errors(data), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        err = jsonschema.exceptions.best_match(errors)
        raise MappingError(file, _key_path(data, list(err.absolute_path)), err.message) from err
    settings = data.get("settings", {})
    rules = tuple(_rule(file, i, c, settings) for i, c in enumerate(data["controls"]))
    outputs = tuple(_output(file, i, o, settings) for i, o in enumerate(data.get("outputs", [])))
    return MappingFile(file, data["info"]["name"], rules, outputs)


def _key_path(data: object, parts: list[Any]) -> str:
    """'controls[3] (fader 1).options.curve' from a jsonschema path."""
    out, node = "", data
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
            node = node[part] if isinstance(node, list) and part < len(node) else None
            if isinstance(node, dict) and isinstance(node.get("name"), str):
                out += f" ({node['name']})"
        else:
            out += ("." if out else "") + str(part)
            node = node.get(part) if isinstance(node, dict) else None
    return out


def _where(section: str, index: int, entry: dict[str, Any]) -> str:
    name = entry.get("name")
    return f"{section}[{index}]" + (f" ({name})" if name else "")


def _midi_match(m: dict[str, Any], settings: dict[str, Any], *, default_port_key: str = "port") -> MidiMatch:
    kinds = [k for k in MIDI_KINDS if k in m]
    if len(kinds) != 1:
        raise ValueError(f"give exactly one of {', '.join(MIDI_KINDS)}, got {kinds or 'none'}")
    kind = kinds[0]
    raw = m[kind]
    channel = m.get("channel", settings.get("channel"))
    port = m.get("port", settings.get(default_port_key, settings.get("port", "*")))
    number = raw if isinstance(raw, int) and not isinstance(raw, bool) else None
    notes = tuple(raw) if kind == "notes" else None
    if notes is not None and notes[0] > notes[1]:
        raise ValueError(f"notes range must be low..high, got {list(notes)}")
    return MidiMatch(kind, port, None if channel is None else channel - 1, number, notes)


def _shaper(opts: dict[str, Any], low: float, high: float) -> Shaper:
    curve = opts.get("curve", "linear")
    points = tuple((float(x), float(y)) for x, y in curve) if isinstance(curve, list) else ()
    return Shaper(low, high, bool(opts.get("invert", False)), "linear" if points else curve, points)


def _range(target: str, opts: dict[str, Any]) -> tuple[float, float]:
    spec, _ = lookup(target)
    default = (spec.low, spec.high) if spec.low is not None else (0.0, 1.0)
    low, high = opts.get("range", default)
    if spec.low is not None:
        for v in (low, high):
            if not spec.low <= v <= spec.high:
                raise ValueError(f"range {[low, high]} leaves {spec.pattern}'s range {spec.low:g}..{spec.high:g}")
    return float(low), float(high)


def _rule(file: str, index: int, c: dict[str, Any], settings: dict[str, Any]) -> Rule:
    where = _where("controls", index, c)
    key = "target"
    try:
        target = c["target"]
        spec, _ = lookup("note.0" if target == KEYBOARD_TARGET else target)
        opts = c.get("options", {})
        key = "match"
        midi = _midi_match(c["match"]["midi"], settings) if "midi" in c["match"] else None
        if target == KEYBOARD_TARGET and (midi is None or midi.kind != "notes"):
            raise ValueError("target note.* needs a midi `notes: [low, high]` match")
        key = "options"
        if opts.get("quantize") is not None and opts["quantize"] not in spec.quantizes:
            raise ValueError(f"{target} changes only at a bar line: quantize must be bar, got {opts['quantize']}")
        if opts.get("soft_takeover", "jump") != "jump" and (opts.get("relative") or opts.get("switch")):
            raise ValueError("soft_takeover applies to absolute controls, not relative encoders or switches")
        if opts.get("relative") and midi is not None and midi.kind != "cc":
            raise ValueError("relative encoding applies to 7-bit CC sources")
        shaper = _shaper(opts, *_range("note.0" if target == KEYBOARD_TARGET else target, opts))
        if opts.get("soft_takeover", "jump") != "jump" and not shaper.monotonic:
            raise ValueError("soft takeover needs a monotonic curve")
        options = Options(
            shaper=shaper,
            relative=opts.get("relative"),
            step=float(opts.get("step", 1 / 127)),
            soft_takeover=opts.get("soft_takeover", "jump"),
            threshold=float(opts.get("threshold", 3 / 127)),
            smoothing=float(opts.get("smoothing", 0.0)),
            quantize=opts.get("quantize"),
            switch=opts.get("switch"),
            value=opts.get("value"),
            velocity=bool(opts.get("velocity", True)),
            bits=int(opts.get("bits", 14)),
        )
    except ValueError as err:
        raise MappingError(file, f"{where}.{key}", str(err)) from err
    return Rule(file, index, c.get("name", ""), target, options, midi, c["match"].get("osc"))


def _output(file: str, index: int, o: dict[str, Any], settings: dict[str, Any]) -> Output:
    where = _where("outputs", index, o)
    try:
        lookup(o["target"])
        opts = o.get("options", {})
        shaper = _shaper(opts, *_range(o["target"], opts))
        if not shaper.monotonic:
            raise ValueError("feedback needs a monotonic curve")
        midi = _midi_match(o["midi"], settings, default_port_key="output_port") if "midi" in o else None
    except ValueError as err:
        raise MappingError(file, f"{where}.target", str(err)) from err
    return Output(file, o["target"], shaper, midi, o.get("osc"))
