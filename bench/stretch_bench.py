"""Time-stretchers for the beat grid (issue #15): which one, measured here, before it is built in.

`backline@BLOCK` is Signalsmith Stretch 1.3.2 through backline's own streaming binding
(engine/schedule/stretch.cpp, built by pip install): an analysis block of 1,200 samples
(25 ms, the issue's latency budget: its latency is its block), 2,400, and the library's
default preset (5,760). The others need `pip install python-stretch bungee-python` (not
dependencies of backline); a candidate that is not installed gets an n/a row.

The plan: each beat gets a whole number of 40 ms frames in the model's time, and the audio
of a beat is stretched onto the beat's exact output length, pitch kept. The ratios it needs
(`stretch.plan_ratio@T`) are within a few percent. Candidates, streaming, 48 kHz stereo, fed
one 1,920-sample frame per call as the engine would:

- `signalsmith@1024`: Signalsmith Stretch (python-stretch 0.3, MIT) configured with a
  1,024-sample block and a 256-sample interval: its own latency report is 21 ms, inside the
  issue's 25 ms budget;
- `signalsmith@preset`: its default preset (120 ms blocks), the quality reference;
- `bungee`: Bungee (bungee-python 0.2, MPL-2.0) at its default hop. Its `get_latency()`
  crashes the interpreter (segfault, 0.2.1), so its latency is measured, not asked.

Figures per candidate, side by side in one run, streamed a generator call (2 frames, 3,840
samples) at a time: continuity (`jump`: the largest sample-to-sample step of a stretched
440 Hz sine over the sine's own; 1 is smooth, more is a click at call edges), latency (a
single click through it at ratio 1), CPU (ms per second of output, one core, median of
runs), pitch (cents off for the sine at the largest ratio the plan uses) and quality (the
log-spectral distance in dB between a sustained synth chord and its stretch, over the bins
within 50 dB of the chord's peak, Welch spectra). `stretch.lsd@identity` is the chord against
a second render of itself a frame later: the floor of the measure.
"""

from __future__ import annotations

import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile
from scipy import signal

from bench import Row
from bench.onsets import onsets
from engine.conditioning import NOTE_HELD, FrameConditioning, masked_notes
from engine.errors import BacklineError
from engine.generator.synth import SynthGenerator
from engine.patch import parse_patch
from engine.render import render
from engine.schedule.fit import make_fitter
from engine.style.embedder import HashEmbedder
from engine.timeline import Timeline
from engine.units import FIT_MODES, FRAME_SAMPLES, SAMPLE_RATE

TEMPOS = (91.3, 120.0, 127.0, 133.33, 174.0)
Stretch = Callable[[np.ndarray, float], np.ndarray]  # (frames, 2) and a time factor -> (round(n / factor), 2)


def plan_ratio(bpm: float) -> tuple[int, float]:
    """Frames per beat (whole, nearest) and the time factor (generated / output samples) it needs."""
    beat = SAMPLE_RATE * 60.0 / bpm
    frames = max(1, round(beat / FRAME_SAMPLES))
    return frames, frames * FRAME_SAMPLES / beat


def signalsmith(block: int | None) -> Stretch:
    import python_stretch.Signalsmith as signalsmith_module

    st = signalsmith_module.Stretch()
    if block is None:
        st.preset(2, float(SAMPLE_RATE))
    else:
        st.configure(2, block, block // 4)

    def run(x: np.ndarray, factor: float) -> np.ndarray:
        st.setTimeFactor(factor)
        return st.process(np.ascontiguousarray(x.T)).T

    return run


def bungee() -> Stretch:
    from bungee_python import bungee as bungee_module

    b = bungee_module.Bungee(SAMPLE_RATE, 2)

    def run(x: np.ndarray, factor: float) -> np.ndarray:
        b.set_speed(factor)
        return b.process(np.ascontiguousarray(x))

    return run


def backline(block: int, interval: int) -> Stretch:
    """Signalsmith Stretch 1.3.2 through backline's own binding (engine/schedule/stretch.cpp)."""
    from engine.schedule.stretch import Stretcher

    st = Stretcher(block=block, interval=interval)
    taken = [0, 0]  # input and output frames so far: each call's length keeps the total on the ratio

    def run(x: np.ndarray, factor: float) -> np.ndarray:
        taken[0] += len(x)
        n = round(taken[0] / factor) - taken[1]
        taken[1] += n
        return st.process(x, n)

    return run


CANDIDATES: dict[str, Callable[[], Stretch]] = {
    "backline@1200": lambda: backline(1200, 300),
    "backline@2400": lambda: backline(2400, 600),
    "backline@preset": lambda: backline(5760, 1440),
    "signalsmith@1024": lambda: signalsmith(1024),
    "signalsmith@preset": lambda: signalsmith(None),
    "bungee": bungee,
}


CALL = 2 * FRAME_SAMPLES  # what the engine would hand the stretcher: one generator call


def stream(make: Callable[[], Stretch], audio: np.ndarray, factor: float) -> np.ndarray:
    """`audio` through a fresh stretcher, a generator call at a time."""
    st = make()
    return np.concatenate([st(audio[i : i + CALL], factor) for i in range(0, len(audio) - CALL + 1, CALL)])


def chord(seconds: float, seed: int = 3) -> np.ndarray:
    """The synth holding C-E-G (notes conditioning), a fixed style: a sustained chord."""
    gen = SynthGenerator(seed=seed)
    notes = masked_notes().copy()
    notes[[60, 64, 67]] = NOTE_HELD
    cond = FrameConditioning(HashEmbedder().embed_text("warm pad"), notes)
    frames = round(seconds * SAMPLE_RATE / FRAME_SAMPLES)
    return gen.generate([cond] * frames)


def spectrum_db(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    f, p = signal.welch(x[:, 0], fs=SAMPLE_RATE, nperseg=4096)
    keep = (f >= 50) & (f <= 16000)
    return f[keep], 10 * np.log10(p[keep] + 1e-12)


def lsd(a: np.ndarray, b: np.ndarray) -> float:
    ref, got = spectrum_db(a)[1], spectrum_db(b)[1]
    keep = ref >= ref.max() - 50.0  # the chord's partials and what lies near them, not the empty floor
    return float(np.sqrt(np.mean((ref[keep] - got[keep]) ** 2)))


def sine(seconds: float) -> np.ndarray:
    t = np.arange(round(SAMPLE_RATE * seconds)) / SAMPLE_RATE
    return np.repeat(np.sin(2 * np.pi * 440.0 * t)[:, None], 2, axis=1).astype(np.float32)


def jump(make: Callable[[], Stretch], factor: float) -> float:
    source = sine(2.0)
    out = stream(make, source, factor)[SAMPLE_RATE // 10 :, 0]
    return float(np.abs(np.diff(out)).max() / np.abs(np.diff(source[:, 0])).max())


def latency_ms(make: Callable[[], Stretch], factor: float) -> float:
    """Where a single click comes out, less where the time factor puts it (at exactly 1 a
    stretcher may pass the audio through, so it is measured at the plan's factor)."""
    click = np.zeros((SAMPLE_RATE, 2), np.float32)
    click[9600] = 1.0
    out = np.abs(stream(make, click, factor)[:, 0])
    return 1000.0 * (int(np.argmax(out)) - 9600 / factor) / SAMPLE_RATE


def cents_at(make: Callable[[], Stretch], factor: float) -> float:
    out = stream(make, sine(2.0), factor)[SAMPLE_RATE // 4 :, 0]
    spec = np.abs(np.fft.rfft(out * np.hanning(len(out)), 16 * len(out)))
    k = int(np.argmax(spec))
    a, b, c = np.log(spec[k - 1 : k + 2] + 1e-30)
    peak = (k + 0.5 * (a - c) / (a - 2 * b + c)) * SAMPLE_RATE / (16 * len(out))
    return 1200.0 * math.log2(peak / 440.0)


def cpu_ms_per_s(make: Callable[[], Stretch], audio: np.ndarray, factor: float, runs: int) -> tuple[float, float, float]:
    times = []
    for _ in range(runs):
        t0 = time.process_time()
        out = stream(make, audio, factor)
        times.append((time.process_time() - t0) * 1000.0 / (len(out) / SAMPLE_RATE))
    return statistics.median(times), min(times), max(times)


def fitter_cpu_ms_per_s(fit: str, audio: np.ndarray, runs: int) -> float:
    """The whole fitter as the scheduler drives it (bars planned at 127 BPM, a generator call a
    push): ms of CPU per second of output, median of `runs`."""
    timeline, times = Timeline.start("127", 4), []
    for _ in range(runs):
        fitter, bar, made = make_fitter(fit), 0, 0
        t0 = time.process_time()
        for pos in range(0, len(audio) - CALL + 1, CALL):
            while fitter.planned_gen_end < pos + CALL:
                fitter.add_bar(fitter.plan(timeline, bar))
                bar += 1
            fitter.push(audio[pos : pos + CALL])
            made += len(fitter.pull()[1])
        times.append((time.process_time() - t0) * 1000.0 / (made / SAMPLE_RATE))
    return statistics.median(times)


def onset_errors_ms(bpm: float, fit: str, bars: int) -> np.ndarray:
    """Each synth hit's distance (ms) from its exact beat in a render of `bars` 4/4 bars
    (temperature 0: a hit on every beat), by the project's onset check (bench/onsets.py)."""
    patch = parse_patch({"tempo": bpm, "meter": 4, "seed": 1, "style": [{"text": "test groove"}],
                         "sampling": {"temperature": 0.0}})
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "grid.wav"
        render(patch, bars=bars, output=out, generator=SynthGenerator(), fit=fit)
        audio, _ = soundfile.read(out, dtype="float32")
    timeline = Timeline.start(f"{bpm:g}", 4)
    beats = np.array([timeline.beat_start(b) for b in range(bars * 4)])
    found = onsets(audio[:, 0])
    nearest = found[np.abs(found[:, None] - beats[None, :]).argmin(axis=0)]
    return (nearest - beats) / SAMPLE_RATE * 1e3


def rows(quick: bool) -> list[Row]:
    try:
        os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})
    except OSError:
        pass
    out: list[Row] = []
    worst = 1.0
    for bpm in TEMPOS:
        frames, factor = plan_ratio(bpm)
        worst = max(worst, factor, 1 / factor)
        out.append(Row(f"stretch.plan_ratio@{bpm:g}", round(100 * (factor - 1), 2), "% faster",
                       f"{frames} frames a beat of {SAMPLE_RATE * 60 / bpm:.0f} samples: the model plays "
                       f"{bpm * factor:.2f} BPM, stretched back onto {bpm:g}"))
    factor = max((plan_ratio(b)[1] for b in TEMPOS), key=lambda f: abs(math.log(f)))
    seconds = 2.0 if quick else 6.0
    source = chord(seconds)
    shifted = chord(seconds)[FRAME_SAMPLES:]
    out.append(Row("stretch.lsd@identity", lsd(source[: len(shifted)], shifted), "dB",
                   "the chord against itself a frame later: the measure's floor"))
    for name, make in CANDIDATES.items():
        try:
            stretched = stream(make, source, factor)
        except (ImportError, BacklineError) as err:  # an optional package, or the binding not built
            out.append(Row(f"stretch.{name}", "n/a", "", f"not installed: {err}"))
            continue
        skip = SAMPLE_RATE // 4
        out += [
            Row(f"stretch.jump@{name}", jump(make, factor), "x", f"largest step of a stretched 440 Hz sine over the "
                f"sine's own, time factor {factor:.4f}, {CALL} samples a call: 1 is smooth"),
            Row(f"stretch.latency@{name}", latency_ms(make, factor), "ms", f"a single click at time factor {factor:.4f}"),
            Row(f"stretch.cpu@{name}", cpu_ms_per_s(make, source, factor, 2 if quick else 5)[0], "ms CPU / s out",
                f"median of {2 if quick else 5} runs, one core, {CALL} samples a call, time factor {factor:.4f}"),
            Row(f"stretch.cents@{name}", cents_at(make, factor), "cents", f"440 Hz sine at time factor {factor:.4f}"),
            Row(f"stretch.lsd@{name}", lsd(source[skip:], stretched[skip:]), "dB",
                f"sustained synth chord vs its stretch at {factor:.4f} (the plan's largest, {100 * (worst - 1):.1f}%)"),
        ]
    bars = 4 if quick else 8
    for bpm in TEMPOS:  # where a drummer hears it: each hit against its beat, both fitters in the same run
        for fit in FIT_MODES:
            error = np.abs(onset_errors_ms(bpm, fit, bars))
            where = f"synth render, {bars} bars of 4/4, a hit a beat, {fit} fitter"
            out += [Row(f"stretch.onset_p50@{bpm:g}@{fit}", round(float(np.median(error)), 2), "ms", where),
                    Row(f"stretch.onset_max@{bpm:g}@{fit}", round(float(error.max()), 2), "ms", where)]
    for fit in FIT_MODES:  # the fitter itself, side by side: what `fit: stretch` costs over the fallback
        out.append(Row(f"stretch.fitter_cpu@{fit}", fitter_cpu_ms_per_s(fit, source, 2 if quick else 5), "ms CPU / s out",
                       f"the {fit} fitter at 127 BPM, a generator call a push, median of {2 if quick else 5} runs, one core"))
    return out
