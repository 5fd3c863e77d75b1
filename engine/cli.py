"""The `backline` command line."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from engine import __version__
from engine.errors import BacklineError
from engine.generator.options import add_fit_argument, add_generator_arguments

log = logging.getLogger("backline")

# Subsystems that add their own subcommands (module with `add_commands(subparsers)`).
_COMMAND_MODULES = (
    "engine.control.commands",
    "engine.generator.magenta.commands",
    "engine.style.centroids",
    "engine.service.run_command",
    "engine.audio.commands",
    "engine.service.commands",
    "engine.remote.commands",
)


def setup_logging(verbose: bool = False) -> None:
    """Plain stderr lines; no colour codes, journald adds its own timestamps."""
    stamp = "%(asctime)s " if sys.stderr.isatty() else ""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format=f"{stamp}%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _cmd_render(args: argparse.Namespace) -> int:
    from engine.automation import load_automation
    from engine.generator import create_generator
    from engine.generator.options import generator_options
    from engine.patch import load_patch
    from engine.render import render

    patch = load_patch(args.patch)
    automation = load_automation(args.automation) if args.automation else []
    generator = create_generator(args.generator, **generator_options(args))
    try:
        result = render(
            patch,
            bars=args.bars,
            output=args.output,
            generator=generator,
            automation=automation,
            lookahead_ms=args.lookahead_ms,
            frames_per_call=args.frames_per_call or 2,
            rollback=not args.no_rollback,
            fit=args.fit,
        )
    finally:
        generator.close()
    print(
        f"wrote {result.path}: {result.bars} bars, {result.samples} samples "
        f"({result.samples / 48000:.2f} s) at {result.realtime_factor:.1f}x real time"
    )
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from engine.check import check

    config = Path(args.config) if args.config else None
    paths = [Path(p) for p in args.paths] or ([] if config else [Path("patches"), Path("mappings")])
    return check(paths, config=config)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="backline", description="Live-performance engine for Magenta RealTime 2.")
    parser.add_argument("--version", action="version", version=f"backline {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    render = sub.add_parser("render", help="render bars of a patch to a WAV file, offline")
    render.add_argument("--patch", required=True, help="patch YAML file")
    render.add_argument("--bars", type=int, default=16, help="number of bars (default 16)")
    render.add_argument("--automation", help="YAML file of timed control events")
    render.add_argument("-o", "--output", required=True, help="output WAV file")
    render.add_argument("--lookahead-ms", type=float, default=200.0, help="look-ahead (default 200 ms)")
    render.add_argument("--no-rollback", action="store_true",
                        help="a change waits for the look-ahead instead of regenerating it (for comparison)")
    add_fit_argument(render)
    add_generator_arguments(render)
    render.set_defaults(func=_cmd_render)

    check = sub.add_parser("check", help="validate config, mapping files and patches together (exit 1 on any error)")
    check.add_argument("paths", nargs="*", help="patch or mapping files, or folders (default: patches mappings)")
    check.add_argument("--config", help="a config file: checks it, then its patch, patches folder and mapping files")
    check.set_defaults(func=_cmd_check)

    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name is not None and name.startswith(err.name):
                continue  # that subsystem is not part of this build
            raise
        module.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args))
    except BacklineError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
