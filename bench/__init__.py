"""Benchmarks that print figures; nothing here asserts a speed.

`python -m bench` imports every module named in `MODULES` (as `bench.<name>_bench`),
calls its `rows(quick)` and prints one table (the soak's also takes `--minutes`). To add benchmarks, write
`bench/<name>_bench.py` with `def rows(quick: bool) -> list[Row]` and append `"<name>"`
to `MODULES`. A module that fails to import is skipped with its reason printed, so a
benchmark for an optional backend (JAX, JACK) never stops the others.
"""

from __future__ import annotations

from dataclasses import dataclass

MODULES: tuple[str, ...] = ("core", "audio", "control", "clock", "service", "magenta", "stretch", "xrun", "remote", "web", "soak")


@dataclass(frozen=True, slots=True)
class Row:
    """One measured figure. `name` is a stable id (`module.what@where`) tests can look for."""

    name: str
    figure: float | int | str
    unit: str
    notes: str = ""


__all__ = ["MODULES", "Row"]
