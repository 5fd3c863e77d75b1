"""Engine-core figures: synth speed, scheduler and fitter cost, bar-grid exactness, fitter pitch.

Timed parts run pinned to one CPU. Generator speed is wall-clock (what a stage box
feels); scheduler and fitter overhead is CPU time of the calling thread, so other
processes on a shared machine inflate it less.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np
import yaml

from bench import Row
from bench.timing import one_cpu, spread
from engine.audio.ring import PlaybackRing
from engine.conditioning import FrameConditioning
from engine.generator.base import Generator
from engine.generator.synth import SynthGenerator
from engine.patch import Patch, parse_patch
from engine.render import DEFAULT_LOOKAHEAD_MS
from engine.schedule.fitter import DEFAULT_CROSSFADE, MARGIN, BarFitter, BarPlan, plan_bar
from engine.schedule.scheduler import Scheduler
from engine.style.embedder import HashEmbedder
from engine.timeline import Timeline, round_half_up
from engine.units import CHANNELS, FRAME_SAMPLES, SAMPLE_RATE

TEMPOS = ("91.3", "120", "127", "133.33", "174")
FIT_TEMPO = "91.3"  # not a whole number of frames per bar: the fitter resamples
BAR_COUNT = 10_000
SINE_HZ = 440.0
SYNTH_FRAMES_PER_CALL = 2  # the scheduler's default
DEFAULT_PATCH = Path(__file__).resolve().parents[1] / "patches" / "default.yaml"


class ZeroGenerator(Generator):
    """Silence at next to no cost, so timing the scheduler leaves generation out.

    With `record` it also keeps the conditioning it was asked for, so the synth can be
    timed on exactly what the scheduler feeds it.
    """

    name = "zero"

    def __init__(self, *, record: bool = False) -> None:
        self._zeros = np.zeros((0, CHANNELS), dtype=np.float32)
        self.recorded: list[FrameConditioning] | None = [] if record else None

    def reset(self, seed: int) -> None:
        if self.recorded is not None:
            self.recorded.clear()

    def generate(self, conditioning: Sequence[FrameConditioning]) -> np.ndarray:
        n = len(conditioning) * FRAME_SAMPLES
        if len(self._zeros) < n:
            self._zeros = np.zeros((n, CHANNELS), dtype=np.float32)
        if self.recorded is not None:
            self.recorded.extend(conditioning)
        return self._zeros[:n]


def _patch(bpm: str) -> Patch:
    """The shipped default patch at another tempo."""
    data = yaml.safe_load(DEFAULT_PATCH.read_text(encoding="utf-8"))
    data["tempo"] = float(bpm)
    return parse_patch(data, path=DEFAULT_PATCH)


def _drive(generator: Generator, patch: Patch, *, seconds: float) -> tuple[float, int]:
    """Play `seconds` through a Scheduler with a simulated playhead, one frame per step.

    Returns (CPU seconds spent in `Scheduler.fill`, underruns at the simulated sink).
    """
    embedder = HashEmbedder()
    ring = PlaybackRing()
    scheduler = Scheduler.for_patch(patch, generator, ring=ring, embedder=embedder, lookahead_ms=DEFAULT_LOOKAHEAD_MS)
    block = np.zeros((FRAME_SAMPLES, CHANNELS), dtype=np.float32)
    cpu = 0.0
    try:
        for playhead in range(0, round(seconds * SAMPLE_RATE), FRAME_SAMPLES):
            t0 = time.thread_time()
            scheduler.fill(playhead)
            cpu += time.thread_time() - t0
            ring.read(block, playhead)
    finally:
        scheduler.close()
    return cpu, ring.underruns


def _plans(bpm: str, bars: int) -> list[BarPlan]:
    """Consecutive bar plans from transport start, as the scheduler makes them."""
    timeline = Timeline.start(bpm, 4)
    plans: list[BarPlan] = []
    gen = 0
    for bar in range(bars):
        plan = plan_bar(bar, out_start=timeline.bar_start(bar), out_length=timeline.bar_length(bar), gen_start=gen)
        plans.append(plan)
        gen = plan.gen_end
    return plans


def _sine(samples: int) -> np.ndarray:
    phase = 2 * np.pi * SINE_HZ * np.arange(samples) / SAMPLE_RATE
    return np.repeat(np.sin(phase)[:, None], CHANNELS, axis=1).astype(np.float32)


def _fit(stream: np.ndarray, plans: Sequence[BarPlan]) -> tuple[np.ndarray, float]:
    """Push `stream` through a BarFitter two frames at a time; (output, CPU seconds)."""
    fitter = BarFitter()
    chunk = SYNTH_FRAMES_PER_CALL * FRAME_SAMPLES
    out: list[np.ndarray] = []
    t0 = time.thread_time()
    for plan in plans:
        fitter.add_bar(plan)
    for pos in range(0, len(stream), chunk):
        fitter.push(stream[pos : pos + chunk])
        out.append(fitter.pull(flush=pos + chunk >= len(stream))[1])
    cpu = time.thread_time() - t0
    audio = np.concatenate(out)
    if len(audio) != plans[-1].out_end:
        raise RuntimeError(f"the fitter emitted {len(audio)} samples for {plans[-1].out_end}")
    return audio, cpu


def _frequency(x: np.ndarray) -> float:
    """Frequency of a sine from a line fitted through its interpolated upward zero crossings."""
    i = np.flatnonzero((x[:-1] < 0) & (x[1:] >= 0))
    t = i + x[i] / (x[i] - x[i + 1])
    period = np.polyfit(np.arange(len(t)), t, 1)[0]
    return SAMPLE_RATE / period


def _cents(x: np.ndarray) -> float:
    return 1200 * math.log2(_frequency(x.astype(np.float64)) / SINE_HZ)


# -- rows ----------------------------------------------------------------------------------
def synth_rows(quick: bool) -> list[Row]:
    """Synth real-time factor on one core, on the conditioning the scheduler makes."""
    seconds, runs = (10.0, 2) if quick else (30.0, 7)
    patch = _patch("120")
    recorder = ZeroGenerator(record=True)
    _drive(recorder, patch, seconds=seconds)
    conds = recorder.recorded or []
    audio_s = len(conds) * FRAME_SAMPLES / SAMPLE_RATE
    synth = SynthGenerator()
    wall, cpu = [], []
    with one_cpu() as where:
        synth.generate(conds[:50])  # warm-up: first-call costs are not steady state
        for _ in range(runs):
            synth.reset(patch.seed)
            t0, c0 = time.perf_counter(), time.thread_time()
            for i in range(0, len(conds), SYNTH_FRAMES_PER_CALL):
                synth.generate(conds[i : i + SYNTH_FRAMES_PER_CALL])
            wall.append(audio_s / (time.perf_counter() - t0))
            cpu.append(audio_s / (time.thread_time() - c0))
    median, note = spread(wall)
    return [Row("core.synth_rtf", median, "x real time",
                f"wall clock, {note} of {audio_s:.0f} s audio; CPU-time median {np.median(cpu):.4g}x; "
                f"1 core (CPU {where}); default patch @120, {SYNTH_FRAMES_PER_CALL} frames/call; target >= 50x")]


def overhead_rows(quick: bool) -> list[Row]:
    """CPU per second of output: the fitter alone, and scheduler + fitter with a zero generator."""
    runs = 2 if quick else 5
    rows = []
    with one_cpu() as where:
        for bpm in (FIT_TEMPO, "120"):
            plans = _plans(bpm, 4 if quick else 24)
            stream = _sine(plans[-1].gen_end)
            out_s = plans[-1].out_end / SAMPLE_RATE
            per_s = [1000 * _fit(stream, plans)[1] / out_s for _ in range(runs)]
            median, note = spread(per_s)
            path = "cubic-spline resampling" if bpm == FIT_TEMPO else "whole frames per bar: copy path"
            rows.append(Row(f"core.fitter_cpu@{bpm}", median, "ms CPU / s out",
                            f"{note} of {out_s:.0f} s; {path}; 2 frames per push; CPU {where}"))
        seconds = 10.0 if quick else 60.0
        patch = _patch(FIT_TEMPO)
        results = [_drive(ZeroGenerator(), patch, seconds=seconds) for _ in range(runs)]
    median, note = spread([1000 * cpu / seconds for cpu, _ in results])
    underruns = sum(u for _, u in results)
    rows.append(Row(f"core.sched_fitter_cpu@{FIT_TEMPO}", median, "ms CPU / s out",
                    f"{note} of {seconds:.0f} s; Scheduler.fill with a zero-cost generator, "
                    f"{DEFAULT_LOOKAHEAD_MS:.0f} ms look-ahead, playhead steps of 1 frame; {underruns} underruns; CPU {where}"))
    return rows


def bar_start_row(bpm: str, bars: int) -> Row:
    """Timeline.bar_start(k) against the exact k * bar_length, and naive sums of bar lengths."""
    timeline = Timeline.start(bpm, 4)
    bar = timeline.segments[0].bar_length
    step64, step32, step_int = float(bar), np.float32(float(bar)), round(bar)
    sum64, sum32, sum_int = 0.0, np.float32(0.0), 0
    worst = drift64 = drift32 = drift_int = Fraction(0)
    off64 = off32 = 0
    for k in range(bars + 1):
        exact = k * bar
        start = timeline.bar_start(k)
        worst = max(worst, abs(start - exact))
        drift64 = max(drift64, abs(Fraction(sum64) - exact))
        drift32 = max(drift32, abs(Fraction(float(sum32)) - exact))
        drift_int = max(drift_int, abs(sum_int - exact))
        off64 += round_half_up(Fraction(sum64)) != start
        off32 += round_half_up(Fraction(float(sum32))) != start
        sum64 += step64
        sum32 += step32
        sum_int += step_int
    return Row(f"core.bar_start_err@{bpm}", float(worst), "samples",
               f"max |bar_start(k) - k*bar_length|, k <= {bars:,}; naive sums of the bar length: "
               f"float64 drifts {float(drift64):.2g} ({off64} bars off), float32 {float(drift32):.3g} ({off32} off), "
               f"rounded int {float(drift_int):.4g}")


def fitter_rows(bpm: str, *, bars: int) -> list[Row]:
    """Pitch of a sine through the fitter (per bar), and the splice the plans make."""
    plans = _plans(bpm, BAR_COUNT)
    splices = np.array([p.gen_end - p.read_end for p in plans])
    planned = max(abs(p.cents) for p in plans)
    fitted = plans[:bars]
    stream = _sine(fitted[-1].gen_end)
    audio, _ = _fit(stream, fitted)
    skip = DEFAULT_CROSSFADE + MARGIN  # the splice crossfade is a seam, not pitch
    measured = [_cents(audio[p.out_start + skip : p.out_end - MARGIN, 0]) for p in fitted]
    floor = abs(_cents(stream[: fitted[0].out_length, 0]))
    return [
        Row(f"core.fitter_pitch@{bpm}", max(abs(c) for c in measured), "cents",
            f"max |cents| of a {SINE_HZ:.0f} Hz sine over {bars} bars (zero-crossing fit, crossfade excluded); "
            f"planned max {planned:.3g} over {BAR_COUNT:,} bars; method floor {floor:.1g}"),
        Row(f"core.fitter_splice@{bpm}", float(splices.max()), "samples/bar",
            f"max gen_end - read_end over {BAR_COUNT:,} bars; mean {splices.mean():.3g}, "
            f"{100 * np.mean(splices > 1e-6):.0f}% of bars splice"),
    ]


def rows(quick: bool) -> list[Row]:
    out = synth_rows(quick) + overhead_rows(quick)
    out += [bar_start_row(bpm, 1_000 if quick else BAR_COUNT) for bpm in TEMPOS]
    for bpm in TEMPOS:
        out += fitter_rows(bpm, bars=4 if quick else 16)
    return out
