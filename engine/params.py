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


PARAMETERS: tuple[ParameterSpec, ...] = (
    ParameterSpec("style.<i>.weight", "float", "weight of style slot i of the patch; negative subtracts", *WEIGHT_RANGE),
    ParameterSpec("style.<i>.text", "text", "replace slot i's prompt; embedded off the audio path, old mix plays until ready"),
    ParameterSpec("centroid.<i>.weight", "float", "weight of cluster centroid i", *WEIGHT_RANGE),
    ParameterSpec("mean.weight", "float", "weight of the mean style embedding", *WEIGHT_RANGE),
    ParameterSpec("sampling.temperature", "float", "sampling temperature", *TEMPERATURE_RANGE),
    ParameterSpec("sampling.top_k", "int", "top-k sampling", *TOP_K_RANGE),
    ParameterSpec("sampling.cfg_style", "float", "classifier-free guidance for style", *CFG_RANGE),
    ParameterSpec("sampling.cfg_notes", "float", "classifier-free guidance for notes", *CFG_RANGE),
    ParameterSpec("sampling.cfg_drums", "float", "classifier-free guidance for drums", *CFG_RANGE),
    ParameterSpec("style.ramp_beats", "float", "style ramp time in beats (0 = jump)", 0.0, 256.0),
    ParameterSpec("style.ramp_curve", "text", "style ramp curve: linear or equal_power"),
    ParameterSpec("tempo.bpm", "float", "tempo in BPM (applies at a bar line by default)", 20.0, 400.0, "bar"),
    ParameterSpec("tempo.ramp_bars", "int", "tempo.bpm glides there over this many bars, a step per bar (0 = jump)", 0, 64),
    ParameterSpec("tempo.tap", "action", "tap tempo: average of the last taps, applied at the next bar", quantize="bar"),
    ParameterSpec("meter.beats_per_bar", "int", "beats per bar", 1, 32, "bar"),
    ParameterSpec("tempo.lock", "text", "tempo lock: beats (drum hit on every beat), none (no drums), off (model decides)"),
    ParameterSpec("transport.play", "action", "fade the output back in (at the next bar by default)", quantize="bar"),
    ParameterSpec("transport.stop", "action", "fade the output to silence; the clock and generation keep running", quantize="bar"),
    ParameterSpec("transport.playing", "bool", "the transport state: true plays, false is silent (LED feedback)", quantize="bar"),
    ParameterSpec("patch.load", "action", "load a patch by name or path", quantize="bar"),
    ParameterSpec("patch.next", "action", "load the next patch in the set", quantize="bar"),
    ParameterSpec("patch.prev", "action", "load the previous patch in the set", quantize="bar"),
    ParameterSpec("safety.freeze", "bool", "loop the current bar and ignore changes until released"),
    ParameterSpec("master.gain", "float", "master gain, linear (1.0 = unity)", 0.0, 2.0),
    ParameterSpec("note.<pitch>", "float", "key velocity 0..1 (0 = release): onset, then held, off on release", 0.0, 1.0),
    ParameterSpec("drum.hit", "action", "a drum hit in the next frame not yet generated; a roll keeps its spacing at frame resolution"),
)

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


@dataclass(frozen=True, slots=True)
class ControlEvent:
    """A change: which parameter or action, its value, its source, and when it applies.

    Checked when created, so everything downstream can trust it. `quantize=None` takes
    the parameter's default. `at` optionally pins the event to an absolute output sample
    (automation files and tests); live events apply at the next boundary.
    """

    target: str
    value: float | int | bool | str | None = None
    source: str = "internal"
    quantize: Quantize | None = None
    at: int | None = None

    def __post_init__(self) -> None:
        spec, _ = lookup(self.target)
        object.__setattr__(self, "value", spec.coerce(self.value))
        if self.quantize is None:
            object.__setattr__(self, "quantize", spec.quantize)
        elif self.quantize not in QUANTIZE_VALUES:
            raise ValueError(f"quantize must be one of now, beat, bar, got {self.quantize!r}")
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
        """The state after `event`; targets this state does not own are returned unchanged."""
        target, value = event.target, event.value
        _, index = lookup(target)
        if target.startswith("style.") and target.endswith(".weight"):
            return replace(self, style_weights=_set_index(self.style_weights, index, float(value), "style slot"))
        if target.startswith("style.") and target.endswith(".text"):
            return replace(self, style_texts=_set_index(self.style_texts, index, str(value), "style slot"))
        if target.startswith("centroid."):
            return replace(self, centroid_weights=_set_index(self.centroid_weights, index, float(value), "centroid"))
        if target == "mean.weight":
            return replace(self, mean_weight=float(value))
        if target.startswith("sampling."):
            return replace(self, sampling=replace(self.sampling, **{target.split(".", 1)[1]: value}))
        if target in ("transport.play", "transport.stop"):
            return replace(self, playing=target == "transport.play")
        if target in _FIELDS:
            return replace(self, **{_FIELDS[target]: value})
        return self

    def value_of(self, path: str) -> float | int | bool | str | None:
        """Current value of a parameter path (for feedback and status); None if not held here."""
        _, index = lookup(path)
        if path.startswith("style.") and path.endswith(".weight"):
            return self.style_weights[index] if index < len(self.style_weights) else None
        if path.startswith("style.") and path.endswith(".text"):
            return self.style_texts[index] if index < len(self.style_texts) else None
        if path.startswith("centroid."):
            return self.centroid_weights[index] if index < len(self.centroid_weights) else None
        if path == "mean.weight":
            return self.mean_weight
        if path.startswith("sampling."):
            return getattr(self.sampling, path.split(".", 1)[1])
        return getattr(self, _FIELDS[path]) if path in _FIELDS else None


# Parameter paths held as one plain field of ParameterState.
_FIELDS = {
    "style.ramp_beats": "ramp_beats",
    "style.ramp_curve": "ramp_curve",
    "tempo.ramp_bars": "tempo_ramp_bars",
    "tempo.lock": "tempo_lock",
    "safety.freeze": "freeze",
    "master.gain": "gain",
    "transport.playing": "playing",
}


def _set_index(values: tuple, index: int | None, value: object, what: str) -> tuple:
    if index is None or index >= len(values):
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
