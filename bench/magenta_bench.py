"""ms per frame (p50/p99) and real-time factor of the magenta generator for T = 1, 2, 4, 8.

Runs the real magenta-rt sampler with random weights: tiny on a CPU (the default), or
full-size `small`/`base`, which cost the same compute as the released weights, on a GPU:

    PYTHONPATH=. python bench/magenta_bench.py --size small --t 1 2 4 8
    PYTHONPATH=. python bench/magenta_bench.py --size base --t 1 2 4 8

Each T loads a generator (load and compile are reported, not timed per frame), then runs
`runs` passes of `frames` frames with steady conditioning, one `generate(T frames)` call
at a time, exactly as the scheduler calls it. A frame's time is its call's time / T.
The persistent compilation cache (~/.cache/backline/jax) makes reruns load faster.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from bench import Row
from engine.conditioning import FrameConditioning, masked_notes
from engine.units import FRAME_SAMPLES, SAMPLE_RATE

BenchSize = Literal["tiny", "small", "base"]
_MODEL = {"tiny": "tiny", "small": "mrt2_small", "base": "mrt2_base"}
FRAME_MS = 1000.0 * FRAME_SAMPLES / SAMPLE_RATE  # 40 ms: the real-time budget per frame
T_VALUES = (1, 2, 4, 8)


def measure(checkpoint: Path, t: int, *, runs: int, frames: int) -> tuple[float, list[float], list[float]]:
    """(load+compile seconds, per-frame ms of every call, audio/wall ratio of every run) for T = t."""
    from engine.generator.magenta.generator import MagentaGenerator

    style = np.random.default_rng(0).standard_normal(768).astype(np.float32)
    cond = FrameConditioning(style=style, notes=masked_notes())
    began = time.perf_counter()
    gen = MagentaGenerator(checkpoint=checkpoint, style_model="mock", frames_per_call=t)
    load_s = time.perf_counter() - began
    per_frame: list[float] = []
    ratios: list[float] = []
    calls = max(1, frames // t)
    try:
        for run in range(runs):
            gen.reset(run)
            gen.generate([cond] * t)  # the first call after a reset also runs frame 0's own step
            run_began = time.perf_counter()
            for _ in range(calls):
                call = time.perf_counter()
                gen.generate([cond] * t)
                per_frame.append((time.perf_counter() - call) * 1000.0 / t)
            ratios.append(calls * t * FRAME_MS / 1000.0 / (time.perf_counter() - run_began))
    finally:
        gen.close()
    return load_s, per_frame, ratios


def measure_rows(size: BenchSize, *, t_values: Sequence[int], runs: int, frames: int, checkpoint: Path | None = None) -> list[Row]:
    import jax

    from engine.generator.magenta.random_weights import make_random_checkpoint

    if checkpoint is None:  # random weights in a folder removed afterwards (base is about 10 GB)
        with tempfile.TemporaryDirectory(prefix="backline-bench-") as folder:
            made = make_random_checkpoint(folder, size=_MODEL[size])  # type: ignore[arg-type]
            return measure_rows(size, t_values=t_values, runs=runs, frames=frames, checkpoint=made)
    where = f"{jax.devices()[0].device_kind} ({jax.default_backend()}), load avg {os.getloadavg()[0]:.1f}"
    rows = []
    for t in t_values:
        load_s, per_frame, ratios = measure(checkpoint, t, runs=runs, frames=frames)
        p50 = statistics.median(per_frame)
        p99 = float(np.percentile(per_frame, 99))
        spread = f"{runs} runs x {max(1, frames // t) * t} frames, {where}"
        rows += [
            Row(f"magenta.ms_per_frame_p50@{size},T={t}", p50, "ms", spread),
            Row(f"magenta.ms_per_frame_p99@{size},T={t}", p99, "ms", spread),
            Row(f"magenta.rtf@{size},T={t}", FRAME_MS / p50, "x real time",
                f"40 ms / p50; whole runs {min(ratios):.2f}..{max(ratios):.2f}x"),
            Row(f"magenta.load_s@{size},T={t}", load_s, "s", "load + compile T=1 and T (compilation cache may hit)"),
        ]
    return rows


def rows(quick: bool) -> list[Row]:
    """Tiny random weights on this machine's default JAX device."""
    if quick:
        return measure_rows("tiny", t_values=(1, 2), runs=2, frames=16)
    return measure_rows("tiny", t_values=T_VALUES, runs=3, frames=96)


def main(argv: Sequence[str] | None = None) -> None:
    from bench.__main__ import table

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(_MODEL), default="tiny", help="random weights of this size")
    parser.add_argument("--checkpoint", type=Path, default=None, help="use this checkpoint instead of random weights")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--frames", type=int, default=96, help="frames per run")
    parser.add_argument("--t", type=int, nargs="+", default=list(T_VALUES), help="frames per call to time")
    parser.add_argument("--format", choices=("text", "markdown"), default="text")
    args = parser.parse_args(argv)
    print(f"# magenta bench {time.strftime('%Y-%m-%d %H:%M')}, size {args.size}", flush=True)
    print(table(measure_rows(args.size, t_values=args.t, runs=args.runs, frames=args.frames, checkpoint=args.checkpoint),
                fmt=args.format))


if __name__ == "__main__":
    main()
