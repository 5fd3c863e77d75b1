"""Engine-core figures: synth speed, scheduler and fitter cost, bar-grid exactness, fitter pitch,
and rollback's costs (#14): the synth's snapshot and restore, the scheduler's per-chunk
snapshots, and the generator work a fader sweep adds.

Timed parts run pinned to one CPU. Generator speed is wall-clock (what a stage box
feels); scheduler and fitter overhead is CPU time of the calling thread, so other
processes on a shared machine inflate it less. The rollback rows run in full mode only
(the quick run's rows are pinned by tests/test_bench_smoke.py).
"""

from __future__ import annotations

import math
import pickle
import tempfile
import time
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np
import yaml

from bench import Row
from bench.timing import one_cpu, spread
from engine.audio.ring import PlaybackRing
from engine.automation import load_automation
from engine.conditioning import FrameConditioning
from engine.generator.base import Generator
from engine.generator.synth import SynthGenerator
from engine.patch import Patch, parse_patch
from engine.render import DEFAULT_LOOKAHEAD_MS, render
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


class SnapshotZeroGenerator(ZeroGenerator):
    """The zero generator with free snapshots (its frame count): what rollback costs the
    scheduler itself, before a generator's own state is copied."""

    name = "zero-snapshots"

    def __init__(self) -> None:
        super().__init__()
        self.frame = 0

    def reset(self, seed: int) -> None:
        self.frame = 0

    def generate(self, conditioning: Sequence[FrameConditioning]) -> np.ndarray:
        self.frame += len(conditioning)
        return super().generate(conditioning)

    def snapshot(self) -> object:
        return self.frame

    def restore(self, snapshot: object) -> None:
        self.frame = int(snapshot)  # type: ignore[call-overload]


def _patch(bpm: str) -> Patch:
    """The shipped default patch at another tempo."""
    data = yaml.safe_load(DEFAULT_PATCH.read_text(encoding="utf-8"))
    data["tempo"] = float(bpm)
    return parse_patch(data, path=DEFAULT_PATCH)


def _drive(generator: Generator, patch: Patch, *, seconds: float, rollback: bool = True) -> tuple[float, int]:
    """Play `seconds` through a Scheduler with a simulated playhead, one frame per step.

    Returns (CPU seconds spent in `Scheduler.fill`, underruns at the simulated sink).
    """
    embedder = HashEmbedder()
    ring = PlaybackRing()
    scheduler = Scheduler.for_patch(patch, generator, ring=ring, embedder=embedder, lookahead_ms=DEFAULT_LOOKAHEAD_MS,
                                    rollback=rollback)
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


def _percentile_us(values: Sequence[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1e6


def snapshot_rows(quick: bool) -> list[Row]:
    """The synth's snapshot() and restore(): time per call and size, from a state mid-groove;
    and Scheduler.fill's CPU with rollback on and off on a zero-cost generator whose own
    snapshot is free (the scheduler's per-chunk snapshot of its plan, notes, gain, fitter)."""
    calls, runs, seconds = (200, 2, 10.0) if quick else (5000, 5, 60.0)
    patch = _patch("120")
    recorder = ZeroGenerator(record=True)
    _drive(recorder, patch, seconds=4.0)
    conds = recorder.recorded or []
    synth = SynthGenerator()
    synth.reset(patch.seed)
    for i in range(0, len(conds), SYNTH_FRAMES_PER_CALL):  # a state with notes sounding and envelopes moving
        synth.generate(conds[i : i + SYNTH_FRAMES_PER_CALL])
    taken, restored = [], []
    with one_cpu() as where:
        snap = synth.snapshot()
        synth.restore(snap)  # warm-up
        for _ in range(calls):
            t0 = time.perf_counter()
            snap = synth.snapshot()
            t1 = time.perf_counter()
            synth.restore(snap)
            t2 = time.perf_counter()
            taken.append(t1 - t0)
            restored.append(t2 - t1)
        size = len(pickle.dumps(snap))
        on_off: dict[bool, list[float]] = {True: [], False: []}
        underruns = {True: 0, False: 0}
        sched_patch = _patch(FIT_TEMPO)
        for _ in range(runs):  # interleaved: on, off, on, off ...
            for rollback in (True, False):
                cpu, under = _drive(SnapshotZeroGenerator(), sched_patch, seconds=seconds, rollback=rollback)
                on_off[rollback].append(1000 * cpu / seconds)
                underruns[rollback] += under
    note = f"{calls} calls, 1 core (CPU {where}); synth after 4 s of the default patch @120; copy.deepcopy of its state"
    rows = [
        Row("core.synth_snapshot_p50", _percentile_us(taken, 50), "us", f"p99 {_percentile_us(taken, 99):.1f} us; {note}"),
        Row("core.synth_snapshot_p99", _percentile_us(taken, 99), "us", note),
        Row("core.synth_restore_p50", _percentile_us(restored, 50), "us", f"p99 {_percentile_us(restored, 99):.1f} us; {note}"),
        Row("core.synth_restore_p99", _percentile_us(restored, 99), "us", note),
        Row("core.synth_snapshot_bytes", size, "bytes", "len(pickle.dumps(snapshot))"),
    ]
    med_on, note_on = spread(on_off[True])
    med_off, note_off = spread(on_off[False])
    chunks_per_s = SAMPLE_RATE / (SYNTH_FRAMES_PER_CALL * FRAME_SAMPLES)
    per_chunk_us = (med_on - med_off) * 1000 / chunks_per_s
    common = (f"of {seconds:.0f} s; Scheduler.fill, zero-cost generator with free snapshots, {DEFAULT_LOOKAHEAD_MS:.0f} ms "
              f"look-ahead, no control changes (so no rollback: the snapshot kept before each chunk only), "
              f"interleaved runs; CPU {where}")
    rows += [
        Row(f"core.sched_fitter_cpu@{FIT_TEMPO}.rollback", med_on, "ms CPU / s out",
            f"{note_on} {common}; {underruns[True]} underruns; {med_on / med_off:.2f}x the no_rollback row, "
            f"about {per_chunk_us:.0f} us a chunk ({chunks_per_s:.1f} chunks/s)"),
        Row(f"core.sched_fitter_cpu@{FIT_TEMPO}.no_rollback", med_off, "ms CPU / s out",
            f"{note_off} {common}; {underruns[False]} underruns"),
    ]
    return rows


SWEEP_RATE = 50  # updates per second
SWEEP_S = 2.0


def sweep_rows(quick: bool) -> list[Row]:
    """The generator work a fader sweep adds: an offline render (synth, default patch @120,
    3 bars) with SWEEP_RATE `style.1.weight` updates a second through bar 2 (2 s, quantize now);
    frames generated per frame heard and rollbacks per second of sweep, rollback on and off."""
    patch = _patch("120")
    beats = patch.beats_per_bar
    count = round(SWEEP_RATE * SWEEP_S)
    beat_s = 60.0 / float(patch.bpm)
    events = "".join(
        f"  - {{bar: 2, beat: {1 + i / SWEEP_RATE / beat_s:.4f}, target: style.1.weight, value: {i / count:.3f}, "
        f"quantize: now}}\n" for i in range(count))
    if SWEEP_S > beats * beat_s:
        raise ValueError("the sweep must fit in bar 2")
    rows = []
    with tempfile.TemporaryDirectory(prefix="backline-bench-") as tmp:
        auto = Path(tmp) / "sweep.yaml"
        auto.write_text("events:\n" + events, encoding="utf-8")
        automation = load_automation(auto)
        for lookahead in (200.0, 400.0):
            results = {}
            for rollback in (True, False):
                results[rollback] = render(patch, bars=3, output=Path(tmp) / "out.wav", generator=SynthGenerator(),
                                           automation=automation, lookahead_ms=lookahead, rollback=rollback)
            on, off = results[True], results[False]
            render_s = on.samples / SAMPLE_RATE
            frames_heard = on.samples / FRAME_SAMPLES
            extra_per_s = (on.work - 1) * frames_heard / SWEEP_S * FRAME_SAMPLES / SAMPLE_RATE
            note = (f"{count} updates in {SWEEP_S:g} s ({SWEEP_RATE}/s, quantize now) in a {render_s:.0f} s render "
                    f"(synth, default patch @120, offline margin fixed at 10 ms); work over the whole render; "
                    f"extra audio generated {extra_per_s:.2f} s per s of sweep; render {on.realtime_factor:.0f}x real time "
                    f"(rollback off: work {off.work:.3f}, {off.rollbacks} rollbacks, {off.realtime_factor:.0f}x); "
                    f"underruns {on.underruns}/{off.underruns}")
            la = f"{lookahead:.0f}ms"
            rows += [Row(f"core.sweep_work@{la}", float(on.work), "frames made / frame heard", note),
                     Row(f"core.sweep_rollbacks_per_s@{la}", on.rollbacks / SWEEP_S, "rollbacks/s",
                         f"{on.rollbacks} rollbacks over the {SWEEP_S:g} s sweep; at most one a chunk "
                         f"({SAMPLE_RATE / (SYNTH_FRAMES_PER_CALL * FRAME_SAMPLES):.1f}/s)")]
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
    if not quick:  # quick mode's core rows are pinned by tests/test_bench_smoke.py
        out += snapshot_rows(quick) + sweep_rows(quick)
    return out
