"""`python -m bench [--quick] [--only NAME ...] [--format text|markdown]`: run and print the table."""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import sys
import time
import traceback
from collections.abc import Sequence
from typing import Literal

import numpy as np

from bench import MODULES, Row

Format = Literal["text", "markdown"]
HEADER = ("name", "figure", "unit", "notes")


def format_figure(figure: float | int | str) -> str:
    if isinstance(figure, float):
        return f"{figure:#.5g}"
    return str(figure)


def table(rows: Sequence[Row], *, fmt: Format) -> str:
    cells = [HEADER] + [(r.name, format_figure(r.figure), r.unit, r.notes) for r in rows]
    if fmt == "markdown":
        lines = ["| " + " | ".join(x.replace("|", "\\|") for x in c) + " |" for c in cells]
        lines.insert(1, "|" + "|".join("---" for _ in HEADER) + "|")
        return "\n".join(lines)
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEADER) - 1)]
    lines = ["  ".join(c[i].ljust(widths[i]) if i < len(widths) else c[i] for i in range(len(HEADER))).rstrip() for c in cells]
    lines.insert(1, "  ".join("-" * w for w in widths) + "  " + "-" * 5)
    return "\n".join(lines)


def run(names: Sequence[str], *, quick: bool, minutes: float | None = None) -> tuple[list[Row], int]:
    """Rows of every named module, and how many modules failed while running."""
    rows: list[Row] = []
    failed = 0
    for name in names:
        try:
            module = importlib.import_module(f"bench.{name}_bench")
        except Exception as err:  # noqa: BLE001 - an optional backend missing skips its rows only
            print(f"skipped bench.{name}_bench: {type(err).__name__}: {err}", file=sys.stderr)
            continue
        t0 = time.perf_counter()
        try:
            rows.extend(module.rows(quick, minutes=minutes) if name == "soak" else module.rows(quick))
        except Exception:  # noqa: BLE001 - one broken benchmark must not hide the others' figures
            failed += 1
            print(f"bench.{name}_bench failed:\n{traceback.format_exc()}", file=sys.stderr)
        print(f"# bench.{name}_bench took {time.perf_counter() - t0:.1f} s", flush=True)
    return rows, failed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description="Run the benchmarks and print one table.")
    parser.add_argument("--quick", action="store_true", help="fewer and shorter runs (smoke test, not figures to quote)")
    parser.add_argument("--only", action="append", choices=MODULES, metavar="NAME",
                        help=f"run only this module (repeatable): {', '.join(MODULES)}")
    parser.add_argument("--minutes", type=float, help="the soak's length (default 2)")
    parser.add_argument("--format", choices=("text", "markdown"), default="text", help="table format")
    args = parser.parse_args(argv)
    print(f"# python {platform.python_version()}, numpy {np.__version__}, {platform.machine()}, "
          f"{len(os.sched_getaffinity(0))} CPUs usable{', quick' if args.quick else ''}", flush=True)
    if args.minutes is not None and "soak" not in (args.only or ()):
        parser.error("--minutes is the soak's: add --only soak")
    rows, failed = run(args.only or MODULES, quick=args.quick, minutes=args.minutes)
    print(table(rows, fmt=args.format))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
