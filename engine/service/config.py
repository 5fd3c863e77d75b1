"""The stage-box config file (`/etc/backline/config.yaml`, or `--config`).

Validated like patches: YAML syntax, then a jsonschema, and every error names the file
(or the environment variable), the key path and the reason. Relative paths are taken
from the config file's folder.

Environment overrides (for `systemd/backline.env`): `BACKLINE_<KEY>` sets one top-level
key and `__` steps into a section, e.g. `BACKLINE_OUTPUT=jack`, `BACKLINE_OSC__PORT=9001`,
`BACKLINE_MIDI__INPUTS='["nanoKONTROL*"]'`. The value is read as a YAML scalar or flow
list, so numbers, booleans and lists keep their type. `BACKLINE_CONFIG` names the file.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import jsonschema
import yaml

from engine.clock.coupling import StartOn
from engine.errors import ConfigFileError
from engine.midi import MidiApi
from engine.schedule.margin import DEFAULT_MAX_MS, DEFAULT_MIN_MS
from engine.units import FIT_MODES
from engine.yamlfile import key_path, read_yaml

log = logging.getLogger(__name__)

DEFAULT_PATH = Path("/etc/backline/config.yaml")
ENV_PREFIX = "BACKLINE_"
ENV_CONFIG = "BACKLINE_CONFIG"

ClockSource = Literal["internal", "midi", "link"]
OscFeedback = Literal["registered", "sender", "none"]


class ServiceConfigError(ConfigFileError):
    kind = "config"


_PATH = {"type": "string", "minLength": 1}
_PORT = {"type": "integer", "minimum": 0, "maximum": 65535}

CONFIG_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "output": {"type": "string", "pattern": "^(jack|alsa|wav:.+)$"},
        "device": {"type": ["string", "integer"]},
        "blocksize": {"type": "integer", "minimum": 16, "maximum": 8192},
        "latency": {"oneOf": [{"enum": ["low", "high"]}, {"type": "number", "exclusiveMinimum": 0, "maximum": 1}]},
        "connect": {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 2, "maxItems": 2},
        "autoconnect": {"type": "boolean"},
        "resample": {"enum": ["HQ", "VHQ", "MQ", "LQ", "QQ", "off"]},
        "clock": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "source": {"enum": ["internal", "midi", "link"]},
                "port": {"type": "string", "minLength": 1},
                "out": {"type": "string", "minLength": 1},
                "start_on": {"enum": ["now", "bar"]},
            },
            "if": {"properties": {"source": {"const": "midi"}}, "required": ["source"]},
            "then": {"required": ["port"]},
        },
        "osc": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "enabled": {"type": "boolean"},
                "host": {"type": "string", "minLength": 1},
                "port": _PORT,
                "allow": {"type": "array", "items": {"type": "string", "minLength": 1}},
                "feedback": {"enum": ["registered", "sender", "none"]},
            },
        },
        "midi": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "enabled": {"type": "boolean"},
                "api": {"enum": ["alsa", "jack"]},
                "inputs": {"type": "array", "items": {"type": "string", "minLength": 1}},
            },
        },
        "mappings": {"type": "array", "items": _PATH},
        "learn_file": _PATH,
        "patch": _PATH,
        "patches": _PATH,
        "generator": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name"],
            "properties": {
                "name": {"enum": ["synth", "magenta", "remote"]},
                "options": {"type": "object"},
            },
        },
        "fallback": {"enum": ["synth", None]},
        "lookahead_ms": {"type": "number", "exclusiveMinimum": 0, "maximum": 10000},
        "rollback": {"type": "boolean"},
        "fit": {"enum": list(FIT_MODES)},
        "lookahead": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"min_ms": {"type": "number", "minimum": 0, "maximum": 10000},
                           "max_ms": {"type": "number", "minimum": 0, "maximum": 10000}},
        },
        "cache_dir": _PATH,
        "state_file": {"oneOf": [_PATH, {"type": "null"}]},
        "fade_s": {"type": "number", "minimum": 0, "maximum": 30},
        "realtime_priority": {"type": "integer", "minimum": 0, "maximum": 99},
        "web": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"host": {"type": "string", "minLength": 1}, "port": _PORT,
                           "token": {"type": "string", "minLength": 8}},
        },
        "zeroconf": {"type": "boolean"},
        "status_http": {  # before the web page: its `/status` endpoint, now served by `web`
            "type": "object",
            "additionalProperties": False,
            "properties": {"host": {"type": "string", "minLength": 1}, "port": _PORT},
        },
    },
}


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    """The whole config with defaults filled in; paths are absolute."""

    file: Path | None
    output: str = "jack"
    device: str | int | None = None
    blocksize: int = 256
    latency: str | float = "low"
    connect: tuple[str, ...] | None = None
    autoconnect: bool = True
    resample: str = "HQ"  # soxr quality when the device is not at 48 kHz; "off" refuses such a device
    clock_source: ClockSource | None = None  # None: the start patch's `clock:`, else internal
    clock_port: str | None = None
    clock_out: str | None = None  # MIDI output port (pattern) that gets our clock
    start_on: StartOn = "now"
    osc_enabled: bool = True
    osc_host: str = "127.0.0.1"
    osc_port: int = 9000
    osc_allow: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    osc_feedback: OscFeedback = "registered"
    midi_enabled: bool = True
    midi_api: MidiApi = "alsa"
    midi_inputs: tuple[str, ...] = ("*",)
    mappings: tuple[Path, ...] = ()
    learn_file: Path = Path("/var/lib/backline/learned.yaml")
    patch: Path = Path("/etc/backline/patches/default.yaml")
    patches: Path | None = None
    generator: str = "synth"
    generator_options: Mapping[str, Any] = field(default_factory=dict)
    fallback: str | None = "synth"
    lookahead_ms: float = 200.0
    rollback: bool = True  # a late change regenerates the look-ahead: heard a splice margin after it arrives
    margin_ms: tuple[float, float] = (DEFAULT_MIN_MS, DEFAULT_MAX_MS)  # `lookahead: {min_ms, max_ms}`: the margin's bounds
    fit: str | None = None  # stretch or resample (engine/schedule/fit.py); None: the patch's, else stretch
    cache_dir: Path = Path("/var/cache/backline")
    state_file: Path | None = Path("/var/lib/backline/state.json")  # None: no crash state (`backline run`)
    fade_s: float = 2.0
    realtime_priority: int = 70  # SCHED_FIFO for the audio thread where granted (not JACK's: its server decides); 0: never ask
    web_host: str = "127.0.0.1"  # the control page, its WebSocket and `/status` (engine/web/server.py)
    web_port: int | None = None  # None: off
    web_token: str | None = None  # None: none on loopback, a random one printed at start-up beyond it
    zeroconf: bool = True  # announce the page (_http._tcp) and OSC (_osc._udp) when they listen beyond loopback

    def differences(self, other: ServiceConfig) -> list[str]:
        """Names of the fields that differ (what a reload changed)."""
        return [name for name in self.__slots__ if name != "file" and getattr(self, name) != getattr(other, name)]


# Fields a SIGHUP can apply to a running engine; everything else needs a restart.
LIVE_FIELDS = frozenset({"mappings", "patches", "midi_inputs"})


def load_config(path: str | Path | None = None, *, environ: Mapping[str, str] = os.environ) -> ServiceConfig:
    """Read, override from the environment, validate and build the config.

    `path=None` takes `$BACKLINE_CONFIG`, then `/etc/backline/config.yaml`; a missing
    default file means "all defaults", a missing named file is an error.
    """
    named = path is not None or ENV_CONFIG in environ
    file = Path(path if path is not None else environ.get(ENV_CONFIG, DEFAULT_PATH))
    data = _read(file, required=named)
    sources = _apply_environment(data, environ)
    errors = sorted(jsonschema.Draft202012Validator(CONFIG_SCHEMA).iter_errors(data), key=lambda e: list(map(str, e.path)))
    if errors:
        error = jsonschema.exceptions.best_match(errors)
        key = key_path(error.absolute_path)
        origin = next((var for var, parts in sources.items() if _within(key, ".".join(parts))), None)
        raise ServiceConfigError(f"${origin}" if origin else file, key, error.message)
    return _build(data, file=file if file.exists() else None, base=file.resolve().parent)


def _read(file: Path, *, required: bool) -> dict[str, Any]:
    if not file.exists():
        if required:
            raise ServiceConfigError(file, "<file>", "no such file")
        log.info("no config file at %s: using defaults", file)
        return {}
    data = read_yaml(file, ServiceConfigError)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ServiceConfigError(file, "<top>", f"expected a mapping of keys, got {type(data).__name__}")
    return data


def _apply_environment(data: dict[str, Any], environ: Mapping[str, str]) -> dict[str, tuple[str, ...]]:
    """Set `BACKLINE_A__B=value` as data[a][b]; returns {variable: key parts} for error messages."""
    sources: dict[str, tuple[str, ...]] = {}
    for var in sorted(environ):
        if not var.startswith(ENV_PREFIX) or var == ENV_CONFIG:
            continue
        parts = tuple(p.lower() for p in var[len(ENV_PREFIX):].split("__"))
        schema: dict[str, Any] = CONFIG_SCHEMA
        for part in parts:
            schema = schema.get("properties", {}).get(part) if isinstance(schema, dict) else None
            if schema is None:
                log.warning("ignoring $%s: %s is not a config key", var, ".".join(parts))
                break
        else:
            try:
                value = yaml.safe_load(environ[var]) if environ[var] else ""
            except yaml.YAMLError as err:
                raise ServiceConfigError(f"${var}", ".".join(parts), f"invalid YAML value: {err}") from err
            node = data
            for part in parts[:-1]:
                if not isinstance(node.get(part), dict):
                    node[part] = {}
                node = node[part]
            node[parts[-1]] = value
            sources[var] = parts
    return sources


def _within(key: str, prefix: str) -> bool:
    return key == prefix or key.startswith((prefix + ".", prefix + "["))


def _build(data: dict[str, Any], *, file: Path | None, base: Path) -> ServiceConfig:
    def path(value: str) -> Path:
        return (base / Path(value).expanduser()).resolve()

    default = ServiceConfig(file=file)
    clock, osc, midi = data.get("clock", {}), data.get("osc", {}), data.get("midi", {})
    generator, web = data.get("generator", {}), data.get("web", {})
    if "status_http" in data:
        if web:
            raise ServiceConfigError(file, "status_http", "the status endpoint is served by `web:` now; "
                                     "remove status_http (its paths are the same)")
        log.warning("%s: status_http is served by the web page's server now: read it as web: %s", file,
                    data["status_http"])
        web = data["status_http"]
    bounds = data.get("lookahead", {})
    margin = (float(bounds.get("min_ms", DEFAULT_MIN_MS)), float(bounds.get("max_ms", DEFAULT_MAX_MS)))
    if margin[0] > margin[1]:
        raise ServiceConfigError(file, "lookahead", f"min_ms {margin[0]:g} is above max_ms {margin[1]:g}")
    return ServiceConfig(
        file=file,
        output=data.get("output", default.output),
        device=data.get("device"),
        blocksize=data.get("blocksize", default.blocksize),
        latency=data.get("latency", default.latency),
        connect=tuple(data["connect"]) if "connect" in data else None,
        autoconnect=data.get("autoconnect", default.autoconnect),
        resample=data.get("resample", default.resample),
        clock_source=clock.get("source", default.clock_source),
        clock_port=clock.get("port"),
        clock_out=clock.get("out"),
        start_on=clock.get("start_on", default.start_on),
        osc_enabled=osc.get("enabled", default.osc_enabled),
        osc_host=osc.get("host", default.osc_host),
        osc_port=osc.get("port", default.osc_port),
        osc_allow=tuple(osc.get("allow", default.osc_allow)),
        osc_feedback=osc.get("feedback", default.osc_feedback),
        midi_enabled=midi.get("enabled", default.midi_enabled),
        midi_api=midi.get("api", default.midi_api),
        midi_inputs=tuple(midi.get("inputs", default.midi_inputs)),
        mappings=tuple(path(m) for m in data.get("mappings", ())),
        learn_file=path(data["learn_file"]) if "learn_file" in data else default.learn_file,
        patch=path(data["patch"]) if "patch" in data else default.patch,
        patches=path(data["patches"]) if "patches" in data else None,
        generator=generator.get("name", default.generator),
        generator_options=dict(generator.get("options", {})),
        fallback=data.get("fallback", default.fallback),
        lookahead_ms=float(data.get("lookahead_ms", default.lookahead_ms)),
        rollback=bool(data.get("rollback", default.rollback)),
        fit=data.get("fit", default.fit),
        margin_ms=margin,
        cache_dir=path(data["cache_dir"]) if "cache_dir" in data else default.cache_dir,
        state_file=(path(data["state_file"]) if data["state_file"] else None) if "state_file" in data else default.state_file,
        fade_s=float(data.get("fade_s", default.fade_s)),
        realtime_priority=int(data.get("realtime_priority", default.realtime_priority)),
        web_host=web.get("host", default.web_host),
        web_port=web.get("port"),
        web_token=web.get("token"),
        zeroconf=bool(data.get("zeroconf", default.zeroconf)),
    )
