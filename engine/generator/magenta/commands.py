"""`backline models status|fetch|make-random`: what MRT2 assets are here, and how to get them."""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from pathlib import Path

from engine.generator.magenta import assets

log = logging.getLogger(__name__)

_FETCH_SIZES = {"small": "mrt2_small", "base": "mrt2_base"}


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    models = subparsers.add_parser("models", help="MRT2 weights and MusicCoCa files")
    verbs = models.add_subparsers(dest="models_command", required=True)

    status = verbs.add_parser("status", help="list assets under $MAGENTA_HOME with sizes and problems")
    status.add_argument("--magenta-home", type=Path, default=None)
    status.add_argument("--sha256", action="store_true", help="also print checksums (reads every file)")
    status.set_defaults(func=_status)

    fetch = verbs.add_parser("fetch", help="download with magenta-rt's own `mrt` downloaders")
    fetch.add_argument("size", choices=sorted(_FETCH_SIZES))
    fetch.add_argument("--magenta-home", type=Path, default=None)
    fetch.set_defaults(func=_fetch)

    random = verbs.add_parser("make-random", help="write a random checkpoint (no download)")
    random.add_argument("--size", choices=["tiny", "mrt2_small", "mrt2_base"], default="tiny")
    random.add_argument("--seed", type=int, default=0)
    random.add_argument("-o", "--output", type=Path, required=True)
    random.set_defaults(func=_make_random)


def _status(args: argparse.Namespace) -> int:
    rows = assets.status(home=args.magenta_home, checksum=args.sha256)
    print(f"MRT2 assets under {assets.magenta_root(args.magenta_home)}")
    for row in rows:
        size = f"{row.size:>14,d} B" if row.size is not None else " " * 16
        state = "ok" if row.ok else row.problem
        print(f"  {row.name:<46} {size}  {state}" + (f"  sha256 {row.sha256}" if row.sha256 else ""))
    missing = [r for r in rows if not r.ok]
    if missing:
        print("fetch with: " + " / ".join(sorted({assets.FETCH_COMMAND.get(r.name, assets.FETCH_COMMAND["musiccoca"]) for r in missing})))
    return 0 if not missing else 1


def _fetch(args: argparse.Namespace) -> int:
    """Runs `mrt models init` (MusicCoCa) then `mrt checkpoints download <size>`, output streamed through."""
    root = assets.magenta_root(args.magenta_home)
    mrt = [sys.executable, "-c", "from magenta_rt.cli import main; main()"]
    env = dict(os.environ, MAGENTA_HOME=str(root.parent))
    for step in (["models", "init", "--download-path", str(root)],
                 ["checkpoints", "download", _FETCH_SIZES[args.size], "--download-path", str(root)]):
        print("running: mrt " + " ".join(step), flush=True)
        if subprocess.run([*mrt, *step], env=env, check=False).returncode != 0:
            print(f"mrt {' '.join(step)} failed; see its output above", file=sys.stderr)
            return 1
    return _status(argparse.Namespace(magenta_home=args.magenta_home, sha256=False))


def _make_random(args: argparse.Namespace) -> int:
    from engine.generator.magenta.random_weights import make_random_checkpoint  # imports JAX

    path = make_random_checkpoint(args.output, size=args.size, seed=args.seed)
    print(path)
    return 0
