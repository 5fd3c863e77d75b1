"""`backline run` (live output) and `backline devices`."""

from __future__ import annotations

import argparse
import logging
import signal
import threading

from engine.errors import OutputError

log = logging.getLogger(__name__)


def _cmd_devices(args: argparse.Namespace) -> int:
    import sounddevice as sd

    from engine.audio.sinks import list_devices

    print(list_devices(sd))
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from engine.audio.sinks import OutputSpec, open_sink
    from engine.engine import Engine
    from engine.generator import create_generator
    from engine.patch import load_patch

    connect = tuple(args.connect.split(",")) if args.connect else None
    if connect is not None and len(connect) != 2:
        raise OutputError(f"--connect takes two JACK ports separated by a comma, got {args.connect!r}")
    spec = OutputSpec.parse(args.output, device=args.device, blocksize=args.blocksize, latency=args.latency,
                            connect=connect, autoconnect=not args.no_autoconnect)
    patch = load_patch(args.patch)
    generator = create_generator(args.generator)
    fallback = create_generator("synth") if args.generator != "synth" else None
    engine = Engine(
        patch=patch,
        generator=generator,
        fallback=fallback,
        sink_factory=lambda ring: open_sink(ring, spec, fade_s=args.fade_ms / 1000),
        lookahead_ms=args.lookahead_ms,
        frames_per_call=args.frames_per_call,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: engine.request_stop())
    signal.signal(signal.SIGINT, lambda *_: engine.request_stop())
    try:
        engine.run(stop, duration_s=args.duration)
    finally:
        generator.close()
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser("run", help="play live through JACK or ALSA, or to a WAV file in real time")
    run.add_argument("--patch", required=True, help="patch YAML file")
    run.add_argument("--output", default="jack", help="jack (default), alsa, or wav:FILE")
    run.add_argument("--device", help="output device: index or name substring (see `backline devices`)")
    run.add_argument("--blocksize", type=int, default=256, help="frames per audio block (default 256)")
    run.add_argument("--latency", default="low", help="PortAudio latency: low, high or seconds")
    run.add_argument("--connect", help="JACK: two ports to connect to, e.g. system:playback_3,system:playback_4")
    run.add_argument("--no-autoconnect", action="store_true", help="JACK: leave our ports unconnected")
    run.add_argument("--generator", default="synth", help="synth (default) or magenta")
    run.add_argument("--lookahead-ms", type=float, default=200.0, help="generation look-ahead (default 200 ms)")
    run.add_argument("--frames-per-call", type=int, default=2, help="frames per generator call")
    run.add_argument("--fade-ms", type=float, default=50.0, help="fade-out on stop (default 50 ms)")
    run.add_argument("--duration", type=float, help="stop after this many seconds of audio")
    run.set_defaults(func=_cmd_run)

    devices = sub.add_parser("devices", help="list host APIs and output devices")
    devices.set_defaults(func=_cmd_devices)
