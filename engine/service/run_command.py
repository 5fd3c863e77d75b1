"""`backline run`: live output from a terminal, built by the service's composition root.

`run` builds the same ServiceConfig a stage box reads from its config file (`--config`
optional), with command-line flags overriding single keys, and hands it to the service
runner: a terminal session and `backline serve` start the same engine.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from engine.clock.source import parse_clock_source
from engine.errors import OutputError
from engine.generator.options import add_fit_argument, add_generator_arguments, generator_options
from engine.service.commands import add_web_port
from engine.service.config import ServiceConfig, load_config


def config_from_args(args: argparse.Namespace) -> ServiceConfig:
    """The config file named by `--config` (or the defaults of an interactive run), then the flags."""
    if args.config:
        base = load_config(args.config)
    else:
        cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "backline"
        base = ServiceConfig(file=None, state_file=None, cache_dir=cache, learn_file=Path("mappings/learned.yaml"),
                             fade_s=0.05)
    if args.patch is None and args.config is None:
        raise OutputError("backline run needs --patch FILE (or --config FILE that names a patch)")
    connect = tuple(args.connect.split(",")) if args.connect else None
    if connect is not None and len(connect) != 2:
        raise OutputError(f"--connect takes two JACK ports separated by a comma, got {args.connect!r}")
    try:
        clock = parse_clock_source(args.clock) if args.clock else None
    except ValueError as err:
        raise OutputError(f"--clock: {err}") from err
    flags: dict[str, Any] = {
        "latency": _latency(args.latency),
        "patch": Path(args.patch).resolve() if args.patch else None,
        "output": args.output,
        "device": args.device,
        "blocksize": args.blocksize,
        "connect": connect,
        "autoconnect": False if args.no_autoconnect else None,
        "resample": args.resample,
        "generator": args.generator,
        "lookahead_ms": args.lookahead_ms,
        "rollback": False if args.no_rollback else None,
        "fit": args.fit,
        "fade_s": args.fade_ms / 1000 if args.fade_ms is not None else None,
        "mappings": tuple(Path(m).resolve() for m in args.mapping) if args.mapping else None,
        "osc_port": args.osc_port,
        "web_port": args.web_port,
        "web_host": args.web_host,
        "osc_enabled": False if args.no_osc else None,
        "midi_api": args.midi_api,
        "midi_inputs": tuple(args.midi_in) if args.midi_in else None,
        "midi_enabled": False if args.no_midi else None,
        "clock_source": clock.kind if clock else None,
        "clock_port": clock.port if clock else None,
        "clock_out": args.clock_out,
        "start_on": args.start_on,
    }
    config = replace(base, **{key: value for key, value in flags.items() if value is not None})
    options = generator_options(argparse.Namespace(**{**vars(args), "generator": config.generator}))
    if args.frames_per_call is not None:
        options["frames_per_call"] = args.frames_per_call
    return replace(config, generator_options={**config.generator_options, **options})


def _latency(text: str | None) -> str | float | None:
    """--latency: low, high, or seconds (0 < s <= 1), as the config's `latency:` takes it."""
    if text is None or text in ("low", "high"):
        return text
    try:
        seconds = float(text)
    except ValueError:
        raise OutputError(f"--latency takes low, high or seconds, got {text!r}") from None
    if not 0 < seconds <= 1:
        raise OutputError(f"--latency in seconds must be in 0..1, got {text}")
    return seconds


def _cmd_run(args: argparse.Namespace) -> int:
    from engine.service.runner import run_service

    return run_service(lambda: config_from_args(args), duration_s=args.duration)


def add_commands(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser("run", help="play live through JACK or ALSA, or to a WAV file in real time")
    run.add_argument("--patch", help="patch YAML file (required unless --config names one)")
    run.add_argument("--config", help="a config file as `backline serve` reads it; flags override its keys")
    run.add_argument("--output", help="jack (default), alsa, or wav:FILE")
    run.add_argument("--device", help="output device: index or name substring (see `backline devices`)")
    run.add_argument("--blocksize", type=int, help="frames per audio block (default 256)")
    run.add_argument("--latency", help="PortAudio latency: low (default), high or seconds")
    run.add_argument("--connect", help="JACK: two ports to connect to, e.g. system:playback_3,system:playback_4")
    run.add_argument("--no-autoconnect", action="store_true", help="JACK: leave our ports unconnected")
    run.add_argument("--resample", choices=("HQ", "VHQ", "MQ", "LQ", "QQ", "off"),
                     help="soxr quality for a device not at 48 kHz (default HQ); off refuses such a device")
    add_generator_arguments(run, default=None)
    run.add_argument("--lookahead-ms", type=float, help="generation look-ahead (default 200 ms)")
    run.add_argument("--no-rollback", action="store_true",
                     help="never regenerate the look-ahead: a change waits for it (as before rollback; for comparison)")
    add_fit_argument(run, config=True)
    run.add_argument("--fade-ms", type=float, help="fade-out on stop (default 50 ms)")
    run.add_argument("--duration", type=float, help="stop after this many seconds of audio")
    run.add_argument("--mapping", action="append", metavar="FILE", help="mapping file (repeat for several)")
    run.add_argument("--osc-port", type=int, help="OSC port (default 9000, loopback only unless the config allows more)")
    run.add_argument("--no-osc", action="store_true", help="no OSC server")
    add_web_port(run)
    run.add_argument("--web-host", metavar="HOST",
                     help="address for the page (default 127.0.0.1); beyond loopback a token is printed at start-up")
    run.add_argument("--midi-api", choices=("alsa", "jack"), help="rtmidi API for MIDI input (default alsa)")
    run.add_argument("--midi-in", action="append", metavar="PATTERN", help="MIDI input port pattern (repeat; default *)")
    run.add_argument("--no-midi", action="store_true", help="no MIDI input")
    run.add_argument("--clock", metavar="SOURCE",
                     help="tempo clock: internal, midi:PORT (follow MIDI clock on a port pattern) or link "
                          "(default: the config's clock.source, else the patch's clock:, else internal)")
    run.add_argument("--clock-out", metavar="PORT", help="send MIDI clock (Start at play, Stop at stop) to this output port")
    run.add_argument("--start-on", choices=("now", "bar"),
                     help="with an external clock: start the audio now (default) or at the clock's next bar line")
    run.set_defaults(func=_cmd_run)
