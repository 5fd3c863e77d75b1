"""Shared measuring helpers: one-core pinning and run statistics."""

from __future__ import annotations

import os
import statistics
from collections.abc import Iterator, Sequence
from contextlib import contextmanager


@contextmanager
def one_cpu() -> Iterator[int]:
    """Pin the calling thread to one CPU (the highest it may use) and restore afterwards.

    On Linux `sched_setaffinity(0, ...)` pins the calling thread; threads it starts
    inherit the mask. Yields the CPU number so the figures can say where they ran.
    """
    before = os.sched_getaffinity(0)
    cpu = max(before)
    os.sched_setaffinity(0, {cpu})
    try:
        yield cpu
    finally:
        os.sched_setaffinity(0, before)


def spread(values: Sequence[float], *, digits: int = 3) -> tuple[float, str]:
    """The median, and a note giving min/max and the number of runs."""
    lo, hi = min(values), max(values)
    return statistics.median(values), f"min {lo:.{digits}g} / max {hi:.{digits}g} over {len(values)} runs"
