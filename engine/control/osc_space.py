"""The OSC address space under `/backline/...`, defined once; docs/osc.md is generated from it.

Every parameter path of `engine.params.PARAMETERS` has an address: dots become slashes
(`style.0.weight` -> `/backline/style/0/weight`). Values are in native units. A trailing
string argument `now`, `beat` or `bar` overrides the quantize. The server-level addresses
(status, register, learn) are listed in `SERVER_ADDRESSES`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

from engine.control.rejects import Reject
from engine.params import PARAMETERS, QUANTIZE_VALUES, ControlEvent, ParameterSpec, lookup

PREFIX = "/backline/"


@dataclass(frozen=True, slots=True)
class ServerAddress:
    address: str
    args: str
    doc: str


# The `/backline/status` reply, argument by argument: (name, OSC type, what it is).
STATUS_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("bar", "i", "bar"), ("beat", "f", "beat"), ("tempo", "f", "tempo BPM"), ("patch", "s", "patch"),
    ("lookahead_ms", "f", "look-ahead ms"), ("xruns", "i", "xruns"), ("speed", "f", "generator speed (x real time)"),
    ("underruns", "i", "generation underruns"), ("playing", "i", "transport playing (1) or stopped (0)"),
    ("clock", "s", "clock source"), ("clock_state", "s", "clock state"),
    ("rejected", "i", "changes rejected or refused (out of range, a patch outside the set, a path)"),
    ("realtime", "s", "the audio thread's scheduling: fifo N, or normal (why)"),
    ("margin_ms", "f", "rollback's splice margin ms: a change is heard this soon (0: rollback off)"),
    ("rollbacks", "i", "rollbacks (look-ahead generated again for a late change)"),
    ("work", "f", "generator work per frame heard (1: no rollback cost)"),
    ("rollbacks_missed", "i", "late changes no snapshot could regenerate (they landed after the look-ahead)"),
    ("late_splices", "i", "rollbacks the generator fell behind: changed audio written where it had played (glitches)"),
    ("memory", "s", "what is locked in RAM against page faults: all (mlockall), or the output ring and why not more"),
    ("fit", "s", "how frames meet the grid: stretch (every beat exact) or resample (bar lines exact)"),
    ("generator_state", "s", "the generator: ready, starting or connecting, restarting (a child reloading, a server "
     "reconnected), refused (a server refused the token)"),
    ("generator_ms", "f", "its last answer per frame, ms: a child's compute, a remote's network round trip included"),
    ("generator_error", "s", "why the generator is not ready, empty when it is (a server that cannot be reached, "
     "or refused the token: which server, which token file)"),
    ("silence_ms", "f", "ms of zeros the audio thread played since it started: nothing generated and no bar to loop"),
    ("dry_replay_ms", "f", "ms the audio thread looped the last bar because the feeder was late"),
    ("skipped_ms", "f", "ms the audio server moved on without a block from the engine (its cycles lost to xruns)"),
)


def status_args(status: dict[str, object]) -> list[object]:
    """The Engine's status dict as the typed `/backline/status` arguments, in STATUS_FIELDS order."""
    clock = status.get("clock")
    flat = {**status, "clock": clock.get("source", "") if isinstance(clock, dict) else clock or "",
            "clock_state": clock.get("state", "") if isinstance(clock, dict) else ""}
    cast = {"i": int, "f": float, "s": str}
    return [cast[kind](flat[name] if flat.get(name) is not None else cast[kind]()) for name, kind, _ in STATUS_FIELDS]


SERVER_ADDRESSES: tuple[ServerAddress, ...] = (
    ServerAddress("/backline/status", "", "reply to the sender: `/backline/status` "
                  + ", ".join(f"{kind} {doc}" for _, kind, doc in STATUS_FIELDS)),
    ServerAddress("/backline/register", "[i port]", "send feedback to the sender (or to its host at `port`) "
                  "from now on; values it sends itself are not echoed back to it"),
    ServerAddress("/backline/unregister", "[i port]", "stop feedback to the sender"),
    ServerAddress("/backline/learn", "s target", "arm MIDI learn: the next moved MIDI control drives `target`"),
)

_ARGS = {"float": "f", "int": "i (f rounds)", "bool": "i/f/T/F (>= 0.5 is on)", "text": "s", "action": "[s/i/f] (patch/load: i N or s NAME)"}


def address_of(pattern: str) -> str:
    return PREFIX + pattern.replace(".", "/")


@lru_cache(maxsize=1024)
def _spec(address: str) -> tuple[ParameterSpec, str]:
    """The spec and parameter path of an address, cached: a flood repeats a few addresses."""
    path = address[len(PREFIX):].replace("/", ".") if address.startswith(PREFIX) else ""
    return lookup(path)[0], path


def to_event(address: str, args: tuple[object, ...], *, source: str) -> tuple[ControlEvent, bool]:
    """Turn one `/backline/<path>` message into an event; returns (event, was_clamped).

    Raises Reject with reason `unknown_address`, `wrong_count`, `wrong_type`, `not_finite`
    or `bad_value`. Numbers out of range are clamped to the range (and reported as clamped).
    """
    try:
        spec, path = _spec(address)
    except ValueError as err:
        raise Reject("unknown_address", f"{address}: {err}") from err
    quantize = None
    if args and isinstance(args[-1], str) and args[-1] in QUANTIZE_VALUES and not (spec.kind == "text" and len(args) == 1):
        quantize, args = args[-1], args[:-1]
    value, clamped = _value(spec, address, args)
    try:
        return ControlEvent(path, value, source, quantize), clamped
    except ValueError as err:
        raise Reject("bad_value", f"{address}: {err}") from err


@lru_cache(maxsize=1024)
def continuous(path: str) -> bool:
    """Values that may be coalesced to the latest: numbers and switches (freeze, transport.playing:
    the last value in a frame counts), not notes or actions."""
    spec = lookup(path)[0]
    return spec.kind in ("float", "int", "bool") and spec.route != "notes"


def _value(spec: ParameterSpec, address: str, args: tuple[object, ...]) -> tuple[object, bool]:
    if spec.kind == "action":
        if len(args) > 1:
            raise Reject("wrong_count", f"{address} takes at most 1 argument, got {len(args)}")
        if spec.pattern == "patch.load" and (not args or isinstance(args[0], bool)
                                             or not isinstance(args[0], (str, int, float))):
            raise Reject("wrong_type", f"{address} needs a patch name (s) or index (i, or a whole f), got {args!r}")
        if args and isinstance(args[0], float) and not math.isfinite(args[0]):
            raise Reject("not_finite", f"{address} needs a finite number, got {args[0]}")
        return (args[0] if args else None), False
    if len(args) != 1:
        raise Reject("wrong_count", f"{address} takes 1 argument ({_ARGS[spec.kind]}), got {len(args)}")
    arg = args[0]
    if spec.kind == "text":
        if not isinstance(arg, str):
            raise Reject("wrong_type", f"{address} needs a string, got {type(arg).__name__}")
        return arg, False
    if spec.kind == "bool" and isinstance(arg, bool):
        return arg, False
    if isinstance(arg, bool) or not isinstance(arg, (int, float)):
        raise Reject("wrong_type", f"{address} needs a number, got {type(arg).__name__}")
    if not math.isfinite(arg):
        raise Reject("not_finite", f"{address} needs a finite number, got {arg}")
    if spec.low is not None and not spec.low <= arg <= spec.high:
        return min(spec.high, max(spec.low, arg)), True
    return arg, False


def describe_osc() -> str:
    """The address space as a markdown document (written to docs/osc.md)."""
    lines = [
        "# OSC address space",
        "",
        "Generated by `engine.control.osc_space.describe_osc()`; do not edit by hand.",
        "The server listens on UDP (default `127.0.0.1:9000`) and accepts clients from the",
        "configured networks only (default: loopback).",
        "",
        "Rules for every parameter address:",
        "",
        "- values are in native units (BPM, temperature, linear gain); mapping files can map",
        "  other addresses (e.g. `/1/fader1` sending 0..1) with their own shaping;",
        "- a number outside the range is **clamped** to the range and counted as `clamped`;",
        "- NaN or infinity is **rejected** (`not_finite`); so is a wrong argument type",
        "  (`wrong_type`), a wrong argument count (`wrong_count`), an unknown address",
        "  (`unknown_address`), an invalid value such as an unknown tempo-lock mode (`bad_value`)",
        "  and a datagram that is not OSC (`malformed`) or comes from a network that is not",
        "  allowed (`forbidden`). Each rejection is counted and logged at most once per",
        "  5 s per reason. The server also counts `too_many_clients` (a `/backline/register`",
        "  past its 64 feedback clients), `socket_error` and `handler_error` (a message that",
        "  failed inside the engine: logged, the server keeps serving);",
        "- an optional last string argument `now`, `beat` or `bar` overrides when it applies",
        "  (the `applies` column is the default). A change lands on a generated frame (40 ms):",
        "  `now` on the first frame a splice margin past what plays (the status reply's",
        "  `margin_ms`, about 15-20 ms with the synth; magenta's decoder adds 21 ms; master gain",
        "  and transport start on that sample itself, not on a frame), `beat` on",
        "  the frame nearest the beat (the one that carries the tempo lock's drum hit for it,",
        "  within 20 ms), `bar` exactly on the",
        "  bar's first sample. Audio already generated ahead is generated again for it",
        "  (rollback), so a `bar` change lands on its bar while that bar line is a margin away;",
        "  with rollback off (`--no-rollback`) a change waits for the look-ahead. Tempo, meter",
        "  and patches change only at a bar line (`bar only`): `now` or `beat` on them is",
        "  refused (`bad_value`), never moved;",
        "- the status reply's `rejected` counts every refused input: rejections above (not",
        "  clamps), changes the engine refused (a patch outside the set, a path) and values",
        "  that failed when applied;",
        "- a burst is coalesced to the latest value per parameter until the engine takes it (each turn",
        "  of its loop, every 5 ms or sooner, and each new frame):",
        "  within a burst only the last datagram a sender sent to a value address is parsed and",
        "  checked; the ones it superseded are counted as coalesced, not validated. Drum hits,",
        "  notes and actions (tap, patch load, transport play/stop) are never coalesced; a",
        "  switch (freeze, transport/playing) is a value: its last state when taken counts;",
        "- feedback: after a parameter changes, its address with the new value is sent to",
        "  registered clients (or to the last sender, as configured), never to the client the",
        "  change came from. A patch load sends every value the new patch changed (tempo,",
        "  meter, style weights and prompts, sampling, style ramp, tempo lock) when it takes",
        "  over at its bar (master gain, freeze and the transport stay the performer's).",
        "",
        "| address | arguments | range | applies | meaning |",
        "|---|---|---|---|---|",
    ]
    for spec in PARAMETERS:
        rng = f"{spec.low:g}..{spec.high:g}" if spec.low is not None else ""
        applies = "bar only" if spec.quantizes == ("bar",) else spec.quantize
        lines.append(f"| `{address_of(spec.pattern)}` | {_ARGS[spec.kind]} | {rng} | {applies} | {spec.doc} |")
    for s in SERVER_ADDRESSES:
        lines.append(f"| `{s.address}` | {s.args} |  |  | {s.doc} |")
    lines += [
        "",
        "`<i>` is a slot or centroid index (0..15), `<pitch>` a MIDI note number (0..127).",
        "",
        "## Surface layout",
        "",
        "`mappings/osc-generic.yaml` adds a layout for TouchOSC, Open Stage Control and Max under",
        "`/backline/surface/...`: every control sends one float 0..1 (faders `fader/1..8` -> style",
        "weights, knobs `knob/1..8` -> centroid weights, `temperature`, `gain`, buttons `freeze`, `tap`,",
        "`prev`, `next`), shaped by that file, with feedback on the same addresses after",
        "`/backline/register`. `mappings/open-stage-control/backline.json` is an Open Stage Control",
        "session using it.",
        "",
    ]
    return "\n".join(lines)
