"""ms per frame (p50/p99) and real-time factor of the magenta generator for T = 1, 2, 4, 8.

Runs the real magenta-rt sampler with random weights: tiny on a CPU (the default), or
full-size `small`/`base`, which cost the same compute as the released weights, on a GPU:

    PYTHONPATH=. python bench/magenta_bench.py --size small --t 1 2 4 8
    PYTHONPATH=. python bench/magenta_bench.py --size base --t 1 2 4 8

Each T loads a generator (load and compile are reported, not timed per frame), then runs
`runs` passes of `frames` frames with steady conditioning, one `generate(T frames)` call
at a time, exactly as the scheduler calls it. A frame's time is its call's time / T.
The persistent compilation cache (~/.cache/backline/jax) makes reruns load faster.

Rollback (#14): the time and size of `snapshot()` and `restore()` (JAX tree copies, timed
until the copies are ready), and how far ahead of the playhead a rollback must stay: the
2-frame chunk's compute time (p50/p99) and the splice margin `SpliceMargin` makes of those
times with a 256-sample block, plus the decoder's audio lead.
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


def measure_rows(size: BenchSize, checkpoint: Path, *, t_values: Sequence[int], runs: int, frames: int) -> list[Row]:
    import jax

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


def _tree_bytes(tree: object) -> int:
    import jax

    return sum(int(leaf.nbytes) for leaf in jax.tree.leaves(tree))


def rollback_rows(size: BenchSize, checkpoint: Path, *, calls: int, copies: int, t: int = 2, block: int = 256) -> list[Row]:
    """snapshot()/restore() time (until the copied trees are ready) and bytes, and the chunk
    compute times of `t`-frame calls with the splice margin they give (SpliceMargin, live)."""
    import jax

    from engine.generator.magenta import AUDIO_LEAD
    from engine.generator.magenta.generator import MagentaGenerator
    from engine.schedule.margin import DEFAULT_MAX_MS, DEFAULT_MIN_MS, SpliceMargin

    style = np.random.default_rng(0).standard_normal(768).astype(np.float32)
    cond = FrameConditioning(style=style, notes=masked_notes())
    gen = MagentaGenerator(checkpoint=checkpoint, style_model="mock", frames_per_call=t)
    chunk_s: list[float] = []
    taken: list[float] = []
    restored: list[float] = []
    try:
        gen.reset(0)
        gen.generate([cond] * t)  # the first call after a reset also runs frame 0's own step
        for _ in range(calls):
            began = time.perf_counter()
            gen.generate([cond] * t)
            chunk_s.append(time.perf_counter() - began)
        snap = gen.snapshot()
        jax.block_until_ready((snap.before_guess, snap.after_guess))  # warm-up: copy's first dispatch
        for _ in range(copies):
            began = time.perf_counter()
            snap = gen.snapshot()
            jax.block_until_ready((snap.before_guess, snap.after_guess))
            middle = time.perf_counter()
            gen.restore(snap)
            jax.block_until_ready((gen._before_guess, gen._after_guess))  # noqa: SLF001 - timing the copy, not its dispatch
            restored.append(time.perf_counter() - middle)
            taken.append(middle - began)
        size_bytes = _tree_bytes(snap.before_guess) + _tree_bytes(snap.after_guess)
    finally:
        gen.close()
    margin = SpliceMargin(min_ms=DEFAULT_MIN_MS, max_ms=DEFAULT_MAX_MS, block=block)
    now = time.monotonic()
    for seconds in chunk_s:  # as the live scheduler feeds it: one observation a chunk, chunk by chunk
        now += seconds
        margin.observe(seconds, now)
    margin_ms = margin.samples * 1000 / SAMPLE_RATE
    lead_ms = AUDIO_LEAD * 1000 / SAMPLE_RATE
    where = f"{jax.devices()[0].device_kind} ({jax.default_backend()}), load avg {os.getloadavg()[0]:.1f}"

    def us(values: list[float], q: float) -> float:
        return float(np.percentile(values, q)) * 1e6

    copy_note = f"{copies} calls, until the copied JAX trees are ready; {where}"
    chunk_p50 = statistics.median(chunk_s) * 1000
    chunk_p99 = float(np.percentile(chunk_s, 99)) * 1000
    chunk_note = f"{calls} generate({t} frames) calls, steady conditioning (guess hits); {where}"
    return [
        Row(f"magenta.snapshot_p50@{size}", us(taken, 50), "us", f"p99 {us(taken, 99):.0f} us; {copy_note}"),
        Row(f"magenta.snapshot_p99@{size}", us(taken, 99), "us", copy_note),
        Row(f"magenta.restore_p50@{size}", us(restored, 50), "us", f"p99 {us(restored, 99):.0f} us; {copy_note}"),
        Row(f"magenta.restore_p99@{size}", us(restored, 99), "us", copy_note),
        Row(f"magenta.snapshot_bytes@{size}", size_bytes, "bytes", "sum of leaf nbytes of before_guess and after_guess"),
        Row(f"magenta.chunk_ms_p50@{size},T={t}", chunk_p50, "ms", f"{chunk_note}; budget {t * FRAME_MS:.0f} ms"),
        Row(f"magenta.chunk_ms_p99@{size},T={t}", chunk_p99, "ms", chunk_note),
        Row(f"magenta.splice_margin_ms@{size},T={t}", margin_ms, "ms",
            f"SpliceMargin(block={block}) fed those {calls} chunk times (1.5 x p99 + 5 ms wake + block, within "
            f"{DEFAULT_MIN_MS:g}..{DEFAULT_MAX_MS:g} ms); plus the decoder's audio lead {lead_ms:.1f} ms: a change can "
            f"be heard from {margin_ms + lead_ms:.1f} ms after it arrives (the next frame start from there)"),
    ]


def rows(quick: bool) -> list[Row]:
    """Tiny random weights on this machine's default JAX device."""
    from engine.generator.magenta.random_weights import make_random_checkpoint

    with tempfile.TemporaryDirectory(prefix="backline-bench-") as folder:
        checkpoint = make_random_checkpoint(folder, size=_MODEL["tiny"])  # type: ignore[arg-type]
        if quick:
            out = measure_rows("tiny", checkpoint, t_values=(1, 2), runs=2, frames=16)
            return out + rollback_rows("tiny", checkpoint, calls=16, copies=10)
        out = measure_rows("tiny", checkpoint, t_values=T_VALUES, runs=3, frames=96)
        return out + rollback_rows("tiny", checkpoint, calls=200, copies=200)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(_MODEL), default="tiny", help="random weights of this size")
    parser.add_argument("--checkpoint", type=Path, default=None, help="use this checkpoint instead of random weights")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--frames", type=int, default=96, help="frames per run")
    parser.add_argument("--t", type=int, nargs="+", default=list(T_VALUES), help="frames per call to time")
    parser.add_argument("--format", choices=("text", "markdown"), default="text")
    parser.add_argument("--rollback", action="store_true",
                        help="also time snapshot/restore and the splice margin of 2-frame chunks")
    args = parser.parse_args(argv)
    print(f"# magenta bench {time.strftime('%Y-%m-%d %H:%M')}, size {args.size}", flush=True)
    if args.checkpoint is None:  # random weights in a folder removed afterwards (base is about 10 GB)
        from engine.generator.magenta.random_weights import make_random_checkpoint

        with tempfile.TemporaryDirectory(prefix="backline-bench-") as folder:
            _print_rows(args, make_random_checkpoint(folder, size=_MODEL[args.size]))
    else:
        _print_rows(args, args.checkpoint)


def _print_rows(args: argparse.Namespace, checkpoint: Path) -> None:
    from bench.__main__ import table

    for t in args.t:  # one table per T: a run cut short (a lease's end) keeps the rows it measured
        print(table(measure_rows(args.size, checkpoint, t_values=[t], runs=args.runs, frames=args.frames),
                    fmt=args.format), flush=True)
    if args.rollback:
        print(table(rollback_rows(args.size, checkpoint, calls=200, copies=50), fmt=args.format), flush=True)


if __name__ == "__main__":
    main()
