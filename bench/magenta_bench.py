"""ms per frame (p50/p99) and real-time factor of the magenta generator for T = 1, 2, 4, 8.

Runs the real magenta-rt path with random weights (tiny by default; --size mrt2_small or
mrt2_base for GPU figures). Several runs of --frames frames each; compile excluded.
    PYTHONPATH=. python bench/magenta_bench.py [--size tiny] [--runs 3] [--frames 48] [--t 1 2 4 8]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from engine.conditioning import FRAME_SAMPLES, SAMPLE_RATE, FrameConditioning, masked_notes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", default="tiny", choices=["tiny", "mrt2_small", "mrt2_base"])
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--t", type=int, nargs="+", default=[1, 2, 4, 8])
    args = parser.parse_args()

    from engine.generator.magenta.generator import MagentaGenerator
    from engine.generator.magenta.random_weights import make_random_checkpoint
    import jax

    checkpoint = args.checkpoint or make_random_checkpoint(tempfile.mkdtemp(prefix="mrt-bench-"), size=args.size)
    style = np.random.default_rng(0).standard_normal(768).astype(np.float32)
    cond = FrameConditioning(style=style, notes=masked_notes())
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), size {args.size}, "
          f"{args.runs} runs x {args.frames} frames, {time.strftime('%Y-%m-%d')}")
    print(f"{'T':>3} {'load+compile s':>15} {'p50 ms/frame':>13} {'p99 ms/frame':>13} {'RTF (40 ms / p50)':>18} {'RTF overall':>12}")
    for t in args.t:
        began = time.perf_counter()
        gen = MagentaGenerator(checkpoint=checkpoint, style_model="mock", frames_per_call=t, use_compilation_cache=False)
        load = time.perf_counter() - began
        per_frame, totals = [], []
        for run in range(args.runs):
            gen.reset(run)
            gen.generate([cond] * t)  # first call also runs frame 0's own step
            run_began = time.perf_counter()
            for _ in range(args.frames // t):
                call = time.perf_counter()
                gen.generate([cond] * t)
                per_frame.append((time.perf_counter() - call) * 1000 / t)
            totals.append(time.perf_counter() - run_began)
        p50 = statistics.median(per_frame)
        p99 = float(np.percentile(per_frame, 99))
        audio_s = (args.frames // t) * t * FRAME_SAMPLES / SAMPLE_RATE
        print(f"{t:>3} {load:>15.1f} {p50:>13.1f} {p99:>13.1f} {40.0 / p50:>18.2f} {audio_s * args.runs / sum(totals):>12.2f}")
        gen.close()


if __name__ == "__main__":
    main()
