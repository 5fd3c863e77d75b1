"""Performance patches (`patches/*.yaml`): tempo, meter, seed, style mix and sampling.

A patch is validated in full when it loads: the YAML syntax, the schema (jsonschema),
then the files it names. Every error names the file, the key path and what was
expected. Loading never touches what is playing: the caller swaps the new patch in
only when it loaded cleanly.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import jsonschema
import numpy as np

from engine.clock.source import ClockSource, parse_clock_source
from engine.conditioning import CFG_RANGE, STYLE_DIM, TEMPERATURE_RANGE, TOP_K_RANGE, Sampling
from engine.errors import PatchError
from engine.params import MAX_SLOTS, TEMPO_LOCK_MODES, WEIGHT_RANGE, ParameterState
from engine.timeline import BEATS_PER_BAR_RANGE, BPM_RANGE
from engine.units import FIT_MODES
from engine.yamlfile import key_path, read_yaml

_WEIGHT = {"type": "number", "minimum": WEIGHT_RANGE[0], "maximum": WEIGHT_RANGE[1]}
_CFG = {"type": "number", "minimum": CFG_RANGE[0], "maximum": CFG_RANGE[1]}


def _slot(key: str, schema: dict[str, Any], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "required": [key],
        "additionalProperties": False,
        "properties": {key: schema, "weight": _WEIGHT, **(extra or {})},
    }


PATCH_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["tempo", "style"],
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "description": {"type": "string"},
        "tempo": {"type": "number", "minimum": BPM_RANGE[0], "maximum": BPM_RANGE[1]},
        "meter": {"type": "integer", "minimum": BEATS_PER_BAR_RANGE[0], "maximum": BEATS_PER_BAR_RANGE[1]},
        "seed": {"type": "integer", "minimum": 0},
        "style": {
            "type": "array",
            "minItems": 1,
            "maxItems": MAX_SLOTS,
            "items": {
                "oneOf": [
                    _slot("text", {"type": "string", "minLength": 1}),
                    _slot(
                        "audio",
                        {"type": "string", "minLength": 1},
                        {"start": {"type": "number", "minimum": 0}, "duration": {"type": "number", "exclusiveMinimum": 0}},
                    ),
                    _slot("centroid", {"type": "integer", "minimum": 0}),
                    _slot("mean", {"const": True}),
                ]
            },
        },
        "centroids": {"type": "string", "minLength": 1},
        "mean_embedding": {"type": "string", "minLength": 1},
        "centroid_weights": {"type": "array", "items": _WEIGHT, "maxItems": MAX_SLOTS},
        "mean_weight": _WEIGHT,
        "sampling": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "temperature": {"type": "number", "minimum": TEMPERATURE_RANGE[0], "maximum": TEMPERATURE_RANGE[1]},
                "top_k": {"type": "integer", "minimum": TOP_K_RANGE[0], "maximum": TOP_K_RANGE[1]},
                "cfg_style": _CFG,
                "cfg_notes": _CFG,
                "cfg_drums": _CFG,
            },
        },
        "ramp": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "beats": {"type": "number", "minimum": 0, "maximum": 256},
                "bars": {"type": "number", "minimum": 0, "maximum": 64},
                "curve": {"enum": ["linear", "equal_power"]},
            },
            "not": {"required": ["beats", "bars"]},
        },
        "tempo_lock": {"enum": list(TEMPO_LOCK_MODES)},
        "clock": {"type": "string", "minLength": 1},
        "fit": {"enum": list(FIT_MODES)},
    },
}

SlotKind = Literal["text", "audio", "centroid", "mean"]


@dataclass(frozen=True, slots=True)
class StyleSlot:
    """One style entry: where its embedding comes from, and its starting weight."""

    kind: SlotKind
    source: str | int | bool
    weight: float = 1.0
    start: float = 0.0
    duration: float = 10.0


@dataclass(frozen=True, slots=True)
class Patch:
    name: str
    path: Path | None
    bpm: Fraction
    beats_per_bar: int
    seed: int
    slots: tuple[StyleSlot, ...]
    centroids: np.ndarray | None  # (K, 768)
    mean_embedding: np.ndarray | None  # (768,)
    centroid_weights: tuple[float, ...]
    mean_weight: float
    sampling: Sampling
    ramp_beats: float
    ramp_curve: Literal["linear", "equal_power"]
    tempo_lock: str
    clock: ClockSource | None = None
    """The clock this patch asks for at start (`--clock` and the config's clock.source win)."""
    fit: str | None = None
    """How frames meet the grid when the engine starts with it (`engine/schedule/fit.py`; `--fit`
    and the config's fit win; a patch loaded later plays in the running fit)."""

    def initial_state(self) -> ParameterState:
        return ParameterState(
            style_weights=tuple(s.weight for s in self.slots),
            style_texts=tuple(s.source if s.kind == "text" else None for s in self.slots),
            centroid_weights=self.centroid_weights,
            mean_weight=self.mean_weight,
            sampling=self.sampling,
            ramp_beats=self.ramp_beats,
            ramp_curve=self.ramp_curve,
            tempo_lock=self.tempo_lock,
        )


def _best_error(error: jsonschema.ValidationError) -> jsonschema.ValidationError:
    """For a `oneOf` over style slot kinds, report the branch that matches the slot's kind."""
    if error.validator == "oneOf" and error.context and isinstance(error.instance, dict):
        kinds = ["text", "audio", "centroid", "mean"]
        kind = next((k for k in kinds if k in error.instance), None)
        for sub in error.context:
            if kind is not None and list(sub.relative_schema_path)[:1] == [kinds.index(kind)]:
                return sub
    return error


def _describe(error: jsonschema.ValidationError) -> str:
    if error.validator == "oneOf":
        return "a style entry needs exactly one of text, audio, centroid or mean (true), plus an optional weight"
    if error.validator == "not":
        return "give the ramp in beats or in bars, not both"
    return error.message


def parse_patch(data: Any, *, path: Path | None = None) -> Patch:
    """Validate a parsed YAML document and build a Patch; raise PatchError on any problem."""
    validator = jsonschema.Draft202012Validator(PATCH_SCHEMA)
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        error = _best_error(errors[0])
        raise PatchError(path, key_path(error.absolute_path), _describe(error))
    base = path.parent if path is not None else Path.cwd()
    centroids = _load_vectors(data.get("centroids"), base, path, "centroids", ndim=2)
    mean = _load_vectors(data.get("mean_embedding"), base, path, "mean_embedding", ndim=1)
    slots = []
    for i, entry in enumerate(data["style"]):
        kind = next(k for k in ("text", "audio", "centroid", "mean") if k in entry)
        source = entry[kind]
        if kind == "audio":
            audio = (base / source).resolve()
            if not audio.is_file():
                raise PatchError(path, f"style[{i}].audio", f"audio file not found: {audio}")
            source = str(audio)
        if kind == "centroid" and (centroids is None or source >= len(centroids)):
            have = "no centroids file" if centroids is None else f"{len(centroids)} centroids"
            raise PatchError(path, f"style[{i}].centroid", f"centroid {source} does not exist ({have})")
        if kind == "mean" and mean is None:
            raise PatchError(path, f"style[{i}].mean", "a mean entry needs `mean_embedding: FILE.npy`")
        slots.append(StyleSlot(kind, source, float(entry.get("weight", 1.0)), float(entry.get("start", 0.0)), float(entry.get("duration", 10.0))))
    centroid_weights = tuple(float(w) for w in data.get("centroid_weights", ()))
    if centroid_weights and (centroids is None or len(centroid_weights) > len(centroids)):
        raise PatchError(path, "centroid_weights", "more weights than centroids in the centroids file")
    if centroids is not None:
        centroid_weights += (0.0,) * (min(len(centroids), MAX_SLOTS) - len(centroid_weights))
    try:
        clock = parse_clock_source(data["clock"]) if "clock" in data else None
    except ValueError as err:
        raise PatchError(path, "clock", str(err)) from err
    ramp = data.get("ramp", {})
    meter = int(data.get("meter", 4))
    ramp_beats = float(ramp.get("beats", ramp.get("bars", 0.0) * meter))
    return Patch(
        name=str(data.get("name") or (path.stem if path else "patch")),
        path=path,
        bpm=Fraction(str(data["tempo"])),
        beats_per_bar=meter,
        seed=int(data.get("seed", 0)),
        slots=tuple(slots),
        centroids=centroids,
        mean_embedding=mean,
        centroid_weights=centroid_weights,
        mean_weight=float(data.get("mean_weight", 0.0)),
        sampling=Sampling(**data.get("sampling", {})),
        ramp_beats=ramp_beats,
        ramp_curve=ramp.get("curve", "linear"),
        tempo_lock=data.get("tempo_lock", "beats"),
        clock=clock,
        fit=data.get("fit"),
    )


def _load_vectors(name: str | None, base: Path, path: Path | None, key: str, *, ndim: int) -> np.ndarray | None:
    if name is None:
        return None
    file = (base / name).resolve()
    try:
        array = np.load(file, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise PatchError(path, key, f"cannot load {file} as a .npy array: {err}") from err
    expected = "(K, 768)" if ndim == 2 else "(768,)"
    if array.ndim != ndim or array.shape[-1] != STYLE_DIM or not np.isfinite(array).all():
        raise PatchError(path, key, f"{file} must be a finite {expected} array, got shape {array.shape}")
    return array.astype(np.float32)


def load_patch(path: str | Path) -> Patch:
    """Read and validate a patch file."""
    file = Path(path)
    return parse_patch(read_yaml(file, PatchError), path=file)
