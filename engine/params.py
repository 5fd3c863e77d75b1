"""The parameter space, control events, and the immutable parameter state they change.

Every control path (MIDI, OSC, automation files, the CLI) ends here: a `ControlEvent`
names a parameter path or an action, a value, where it came from and when it should
apply. `PARAMETERS` is the one documented list of paths (`backline params` prints it).
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, field, replace
from typing import Literal

from engine.conditioning import CFG_RANGE, TEMPERATURE_RANGE, TOP_K_RANGE, Sampling

Quantize = Literal["now", "beat", "bar"]
QUANTIZE_VALUES: tuple[Quantize, ...] = ("now", "beat", "bar")
Kind = Literal["float", "int", "bool", "text", "action"]
# Where a change goes: the one table that answers "what runs for X" (see docs/architecture.md).
#   style: the style mix (restyled in embedding space)   prompt: a slot's text, embedded off the generation thread
#   sampling: temperature, top-k, CFG                     state: a plain field of ParameterState
#   timeline: a new tempo segment at a bar line            notes: keyboard notes and the sustain pedal
#   drums: a pad hit                                       safety: acts at once, even while frozen
#   transport: play/stop (a gain envelope)                 engine: an engine action (patch, tap tempo)
Route = Literal["style", "prompt", "sampling", "state", "timeline", "notes", "drums", "safety", "transport", "engine"]
RampCurve = Literal["linear", "equal_power"]
WEIGHT_RANGE = (-4.0, 4.0)
MAX_SLOTS = 16


@dataclass(frozen=True, slots=True)
class ParameterSpec:
    """One documented parameter or action: its path pattern, type, range and default quantize."""

    pattern: str
    kind: Kind
    doc: str
    low: float | None = None
    high: float | None = None
    quantize: Quantize = "now"
    route: Route = "state"
    show: bool = True  # part of the show state: saved for crash recovery, restored after a restart
    quantizes: tuple[Quantize, ...] = QUANTIZE_VALUES  # what a control may ask for (tempo: bar lines only)
    regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        rx = "^" + re.escape(self.pattern).replace(r"<i>", r"(\d+)").replace(r"<pitch>", r"(\d+)") + "$"
        object.__setattr__(self, "regex", re.compile(rx))

    def coerce(self, value: object) -> float | int | bool | str | None:
        """Check and convert a value; raise ValueError naming the parameter and range."""
        if self.kind == "action":
            return value if value is None or isinstance(value, (str, int, float)) else str(value)
        if self.kind == "text":
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"{self.pattern} must be a non-empty string, got {value!r}")
            return value
        if isinstance(value, bool):
            value = float(value)
        if not isinstance(value, (int, float)):
            raise ValueError(f"{self.pattern} must be a number, got {value!r}")
        number = float(value)
        if math.isnan(number) or math.isinf(number):
            raise ValueError(f"{self.pattern} must be a finite number, got {value!r}")
        if self.kind == "bool":
            return number >= 0.5
        if self.low is not None and self.high is not None and not (self.low <= number <= self.high):
            raise ValueError(f"{self.pattern} must be in {self.low}..{self.high}, got {value}")
        return int(round(number)) if self.kind == "int" else number


P = ParameterSpec
BAR_ONLY: tuple[Quantize, ...] = ("bar",)  # a new timeline segment (tempo, meter, a patch's tempo) starts at a bar line
PARAMETERS: tuple[ParameterSpec, ...] = (
    P("style.<i>.weight", "float", "weight of style slot i of the patch; negative subtracts", *WEIGHT_RANGE, route="style"),
    P("style.<i>.text", "text", "replace slot i's prompt; embedded by the generator's style model (MusicCoCa for "
      "magenta) off the generation thread, old mix plays until ready", route="prompt"),
    P("centroid.<i>.weight", "float", "weight of cluster centroid i", *WEIGHT_RANGE, route="style"),
    P("mean.weight", "float", "weight of the mean style embedding", *WEIGHT_RANGE, route="style"),
    P("sampling.temperature", "float", "sampling temperature", *TEMPERATURE_RANGE, route="sampling"),
    P("sampling.top_k", "int", "top-k sampling", *TOP_K_RANGE, route="sampling"),
    P("sampling.cfg_style", "float", "classifier-free guidance for style", *CFG_RANGE, route="sampling"),
    P("sampling.cfg_notes", "float", "classifier-free guidance for notes", *CFG_RANGE, route="sampling"),
    P("sampling.cfg_drums", "float", "classifier-free guidance for drums", *CFG_RANGE, route="sampling"),
    P("style.ramp_beats", "float", "style ramp time in beats (0 = jump)", 0.0, 256.0),
    P("style.ramp_curve", "text", "style ramp curve: linear or equal_power"),
    P("tempo.bpm", "float", "tempo in BPM; a new tempo starts at a bar line", 20.0, 400.0, "bar", route="timeline",
      quantizes=BAR_ONLY),
    P("tempo.ramp_bars", "int", "tempo.bpm glides there over this many bars, a step per bar (0 = jump)", 0, 64),
    P("tempo.tap", "action", "tap tempo: average of the last taps, applied at the next bar", quantize="bar",
      route="engine", show=False, quantizes=BAR_ONLY),
    P("meter.beats_per_bar", "int", "beats per bar, from a bar line", 1, 32, "bar", route="timeline",
      quantizes=BAR_ONLY),
    P("tempo.lock", "text", "tempo lock: beats (drum hit on every beat), none (no drums), off (model decides)"),
    P("transport.play", "action", "fade the output back in (at the next bar by default)", quantize="bar",
      route="transport", show=False),
    P("transport.stop", "action", "fade the output to silence; the clock and generation keep running", quantize="bar",
      route="transport", show=False),
    P("transport.playing", "bool", "the transport state: true plays, false is silent (LED feedback)", quantize="bar",
      route="transport"),
    P("patch.load", "action", "load entry N of the patch set (0-based: program change 0 is the first file in name "
      "order) or a patch by name; never a path", quantize="bar", route="engine", show=False,
      quantizes=BAR_ONLY),
    P("patch.next", "action", "load the next patch in the set", quantize="bar", route="engine", show=False,
      quantizes=BAR_ONLY),
    P("patch.prev", "action", "load the previous patch in the set", quantize="bar", route="engine", show=False,
      quantizes=BAR_ONLY),
    P("safety.freeze", "bool", "loop the current bar and ignore changes until released", route="safety"),
    P("master.gain", "float", "master gain, linear (1.0 = unity)", 0.0, 2.0),
    P("note.sustain", "bool", "sustain pedal (CC 64): released keys keep sounding until it lifts", route="notes",
      show=False),
    P("note.<pitch>", "float", "key velocity 0..1 (0 = release): an onset in the next frame however short the note, "
      "held while down, off for 1 s after release", 0.0, 1.0, route="notes", show=False),
    P("drum.hit", "action", "a drum hit in the next frame not yet generated; a roll keeps its spacing at frame "
      "resolution", route="drums", show=False),
)
del P

TEMPO_LOCK_MODES = ("beats", "none", "off")


@functools.lru_cache(maxsize=1024)  # every ControlEvent looks up its path: an OSC flood made the regex scan hot
def lookup(path: str) -> tuple[ParameterSpec, int | None]:
    """The spec for a concrete path and its index (slot or pitch), or ValueError (not cached)."""
    for spec in PARAMETERS:
        match = spec.regex.match(path)
        if match:
            index = int(match.group(1)) if match.groups() else None
            if spec.pattern.startswith("note.") and index is not None and index > 127:
                raise ValueError(f"note pitch must be in 0..127, got {index}")
            if index is not None and not spec.pattern.startswith("note.") and index >= MAX_SLOTS:
                raise ValueError(f"{spec.pattern}: index must be in 0..{MAX_SLOTS - 1}, got {index}")
            return spec, index
    raise ValueError(f"unknown parameter {path!r} (see `backline params`)")


def route_of(path: str) -> Route:
    """The route of a concrete path, or of a mapping's keyboard target `note.*` (notes)."""
    return lookup("note.0" if path == "note.*" else path)[0].route


@dataclass(frozen=True, slots=True)
class ControlEvent:
    """A change: which parameter or action, its value, its source, and when it applies.

    Checked when created, so everything downstream can trust it. `quantize=None` takes
    the parameter's default. `at` optionally pins the event to an absolute output sample
    (tests); live events apply at the next boundary. `heard` is the output sample that was
    playing when the control moved, stamped by the input that received it (None: when the
    scheduler takes it): pad hits keep the player's spacing however they are batched.
    """

    target: str
    value: float | int | bool | str | None = None
    source: str = "internal"
    quantize: Quantize | None = None
    at: int | None = None
    heard: int | None = None

    def __post_init__(self) -> None:
        spec, _ = lookup(self.target)
        object.__setattr__(self, "value", spec.coerce(self.value))
        if self.quantize is None:
            object.__setattr__(self, "quantize", spec.quantize)
        elif self.quantize not in QUANTIZE_VALUES:
            raise ValueError(f"quantize must be one of now, beat, bar, got {self.quantize!r}")
        if self.quantize not in spec.quantizes:
            raise ValueError(f"{self.target} changes only at a bar line (a new tempo segment starts there): "
                             f"quantize must be bar, got {self.quantize}")
        if self.target == "style.ramp_curve" and self.value not in ("linear", "equal_power"):
            raise ValueError(f"style.ramp_curve must be linear or equal_power, got {self.value!r}")
        if self.target == "tempo.lock" and self.value not in TEMPO_LOCK_MODES:
            raise ValueError(f"tempo.lock must be one of {', '.join(TEMPO_LOCK_MODES)}, got {self.value!r}")

    @property
    def spec(self) -> ParameterSpec:
        return lookup(self.target)[0]


@dataclass(frozen=True, slots=True)
class ParameterState:
    """The sound-shaping parameters at one moment. Swapped whole, never edited in place."""

    style_weights: tuple[float, ...] = ()
    style_texts: tuple[str | None, ...] = ()
    centroid_weights: tuple[float, ...] = ()
    mean_weight: float = 0.0
    sampling: Sampling = Sampling()
    ramp_beats: float = 0.0
    ramp_curve: RampCurve = "linear"
    tempo_ramp_bars: int = 0
    tempo_lock: str = "beats"
    freeze: bool = False
    gain: float = 1.0
    playing: bool = True

    def with_event(self, event: ControlEvent) -> ParameterState:
        """The state after `event`; targets this state does not hold are returned unchanged."""
        spec, index = lookup(event.target)
        if spec.route == "sampling":
            return replace(self, sampling=replace(self.sampling, **{event.target.split(".", 1)[1]: event.value}))
        if spec.route == "transport" and spec.kind == "action":
            return replace(self, playing=event.target == "transport.play")
        name = _HELD_IN.get(spec.pattern)
        if name is None:
            return self
        if index is None:
            return replace(self, **{name: event.value})
        return replace(self, **{name: _set_index(getattr(self, name), index, event.value,
                                                  "centroid" if name == "centroid_weights" else "style slot")})

    def value_of(self, path: str) -> float | int | bool | str | None:
        """Current value of a parameter path (for feedback and status); None if not held here."""
        spec, index = lookup(path)
        if spec.route == "sampling":
            return getattr(self.sampling, path.split(".", 1)[1])
        name = _HELD_IN.get(spec.pattern)
        if name is None:
            return None
        held = getattr(self, name)
        if index is None:
            return held
        return held[index] if index < len(held) else None

    def show_state(self, *, bpm: float, beats_per_bar: int) -> dict[str, float | int | bool | str]:
        """Every show-state path (spec.show) and its value, slots expanded: what a restart restores
        and what a patch load notifies. The timeline's values come from the caller."""
        timeline = {"tempo.bpm": float(bpm), "meter.beats_per_bar": int(beats_per_bar)}
        values: dict[str, float | int | bool | str] = {}
        for spec in PARAMETERS:
            if not spec.show:
                continue
            if spec.route == "timeline":
                values[spec.pattern] = timeline[spec.pattern]
                continue
            name = _HELD_IN.get(spec.pattern)
            count = len(getattr(self, name)) if "<i>" in spec.pattern and name else None
            paths = [spec.pattern] if count is None else [spec.pattern.replace("<i>", str(i)) for i in range(count)]
            for path in paths:
                value = self.value_of(path)
                if value is not None:
                    values[path] = value
        return values


# The ParameterState field holding each pattern that is not sampling (an indexed pattern holds a tuple).
_HELD_IN = {
    "style.<i>.weight": "style_weights",
    "style.<i>.text": "style_texts",
    "centroid.<i>.weight": "centroid_weights",
    "mean.weight": "mean_weight",
    "style.ramp_beats": "ramp_beats",
    "style.ramp_curve": "ramp_curve",
    "tempo.ramp_bars": "tempo_ramp_bars",
    "tempo.lock": "tempo_lock",
    "safety.freeze": "freeze",
    "master.gain": "gain",
    "transport.playing": "playing",
}


def _set_index(values: tuple, index: int, value: object, what: str) -> tuple:
    if index >= len(values):
        raise ValueError(f"{what} {index} does not exist in this patch (it has {len(values)})")
    return values[:index] + (value,) + values[index + 1 :]


def describe_parameters() -> str:
    """The parameter space as a table, for `backline params` and the README."""
    rows = []
    for spec in PARAMETERS:
        rng = f"{spec.low:g}..{spec.high:g}" if spec.low is not None else ""
        rows.append(f"{spec.pattern:<24} {spec.kind:<7} {rng:<12} {spec.quantize:<5} {spec.doc}")
    header = f"{'path':<24} {'type':<7} {'range':<12} {'quant':<5} meaning"
    return "\n".join([header, "-" * len(header)] + rows)
