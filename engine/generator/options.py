"""Command-line options that choose and configure a generator, and how its frames meet the grid,
shared by the commands that play one."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from engine.generator import GENERATOR_NAMES
from engine.units import FIT_MODES

_SIZES = {"small": "mrt2_small", "base": "mrt2_base"}


def add_fit_argument(parser: argparse.ArgumentParser, *, config: bool = False) -> None:
    """--fit: stretch (every beat on its exact sample) or resample (bar lines only; less CPU)."""
    first = "the config's fit:, then " if config else ""
    parser.add_argument("--fit", choices=FIT_MODES,
                        help="stretch: every beat on its exact sample; resample: only bar lines exact, beats up to "
                             f"20 ms off, for a box too slow to stretch (default: {first}the patch's fit:, else stretch)")


def add_generator_arguments(parser: argparse.ArgumentParser, *, default: str | None = "synth", remote: bool = True) -> None:
    """--generator, --frames-per-call and the magenta options (ignored by the synth).

    `default=None` leaves the choice to a config file (`backline run --config`).
    """
    parser.add_argument("--generator", default=default,
                        choices=GENERATOR_NAMES if remote else [n for n in GENERATOR_NAMES if n != "remote"],
                        help="synth (default), magenta" + (", or remote (a backline generator-server: --remote)"
                                                            if remote else ""))
    parser.add_argument("--frames-per-call", type=int, default=None,
                        help="frames per generator call (default 2; magenta: its jitted step T)")
    group = parser.add_argument_group("magenta generator")
    group.add_argument("--checkpoint", type=Path, default=None,
                       help="MRT2 checkpoint (.safetensors); default $MAGENTA_HOME/magenta-rt-v2/checkpoints/<size>. "
                            "Random tiny weights: backline models make-random --size tiny -o DIR")
    group.add_argument("--size", choices=sorted(_SIZES), default="small", help="released model under $MAGENTA_HOME")
    group.add_argument("--magenta-home", type=Path, default=None, help="instead of $MAGENTA_HOME")
    group.add_argument("--style-model", choices=("musiccoca", "mock"), default="musiccoca",
                       help="style tokenizer: MusicCoCa's files, or magenta-rt's MockMusicCoCa (no files; tests)")
    group.add_argument("--compilation-cache-dir", type=Path, default=None,
                       help="JAX compilation cache (default ~/.cache/backline/jax)")
    if not remote:
        return
    remote = parser.add_argument_group("remote generator")
    remote.add_argument("--remote", metavar="URL", default=None,
                        help="the generator server, ws://HOST:PORT or wss://HOST:PORT (backline generator-server)")
    remote.add_argument("--remote-token-file", type=Path, default=None,
                        help="file holding the server's token (default: $BACKLINE_GENERATOR_TOKEN)")
    remote.add_argument("--remote-ca", type=Path, default=None,
                        help="for wss://: the CA (or the server's self-signed certificate) to trust, PEM")
    remote.add_argument("--remote-pcm", choices=("f32", "i16"), default=None,
                        help="audio over the link: f32 (default, exact) or i16 (half the bytes, for Wi-Fi)")


def generator_options(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword options for `create_generator(args.generator, **options)`; unset ones are left out."""
    if args.generator == "remote":
        remote = {"url": args.remote, "token_file": args.remote_token_file and str(args.remote_token_file),
                  "pcm": args.remote_pcm, "ca": args.remote_ca and str(args.remote_ca)}
        return {key: value for key, value in remote.items() if value is not None}
    if args.generator != "magenta":
        return {}
    options = {
        "checkpoint": args.checkpoint,
        "size": _SIZES[args.size],
        "magenta_home": args.magenta_home,
        "style_model": args.style_model,
        "frames_per_call": args.frames_per_call,
        "compilation_cache_dir": args.compilation_cache_dir,
    }
    return {key: value for key, value in options.items() if value is not None}
