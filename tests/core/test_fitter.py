import math

import numpy as np
import pytest

from engine.schedule.fitter import BarFitter, plan_bar
from engine.timeline import Timeline

TEMPOS = ["91.3", "120", "127", "133.33", "174", "61.7"]


@pytest.mark.parametrize("bpm", TEMPOS)
def test_plans_cover_each_bar_within_the_pitch_limit(bpm: str) -> None:
    timeline = Timeline.start(bpm, 4)
    gen = 0
    for bar in range(64):
        plan = plan_bar(bar, out_start=timeline.bar_start(bar), out_length=timeline.bar_length(bar), gen_start=gen)
        assert abs(plan.cents) <= 4.0 + 1e-9
        assert plan.read_end <= plan.gen_end + 1e-6  # never reads into the next bar's frames
        assert plan.gen_end - plan.read_end < 1920  # splices out less than one frame
        assert plan.frame_out_start(0) == timeline.bar_start(bar)
        gen = plan.gen_end


def _fit_stream(bpm: str, bars: int, signal) -> tuple[np.ndarray, list]:
    """Push a generated stream through the fitter bar by bar, in small chunks."""
    timeline = Timeline.start(bpm, 4)
    fitter = BarFitter()
    plans, gen, out = [], 0, []
    for bar in range(bars):
        plan = plan_bar(bar, out_start=timeline.bar_start(bar), out_length=timeline.bar_length(bar), gen_start=gen)
        fitter.add_bar(plan)
        plans.append(plan)
        gen = plan.gen_end
    pos = 0
    while pos < gen:
        chunk = signal(np.arange(pos, min(pos + 1920 * 3, gen)))
        fitter.push(chunk)
        pos += len(chunk)
        start, audio = fitter.pull(flush=pos >= gen)
        if len(audio):
            assert start == sum(len(a) for a in out)  # output is contiguous
            out.append(audio)
    return np.concatenate(out), plans


def _sine(freq: float):
    return lambda n: np.repeat(np.sin(2 * np.pi * freq * n / 48000)[:, None], 2, axis=1).astype(np.float32)


@pytest.mark.parametrize("bpm", ["91.3", "133.33", "174"])
def test_fitted_output_has_exact_length_steady_pitch_and_no_clicks(bpm: str) -> None:
    freq = 441.0
    audio, plans = _fit_stream(bpm, 8, _sine(freq))
    timeline = Timeline.start(bpm, 4)
    assert len(audio) == timeline.bar_start(8)
    x = audio[:, 0].astype(np.float64)
    # Pitch in each bar from zero crossings: within 5 cents of the source.
    for plan in plans:
        seg = x[plan.out_start + 200 : plan.out_end - 200]
        crossings = np.flatnonzero((seg[:-1] < 0) & (seg[1:] >= 0))
        frac = seg[crossings] / (seg[crossings] - seg[crossings + 1])
        times = crossings + frac
        measured = 48000 * (len(times) - 1) / (times[-1] - times[0])
        assert abs(1200 * math.log2(measured / freq)) < 5.0, (plan.bar, measured)
    # No clicks: a hard splice would jump by up to 2.0; the 5 ms crossfade keeps every
    # sample-to-sample step within 1.35x the sine's own largest step.
    step = np.abs(np.diff(x)).max()
    assert step < 2 * np.pi * freq / 48000 * 1.35


def test_bar_start_reads_the_bars_first_generated_sample() -> None:
    # A ramp signal makes positions visible: value = generated sample index.
    audio, plans = _fit_stream("120", 4, lambda n: np.repeat(n[:, None].astype(np.float32), 2, axis=1))
    for plan in plans:
        assert plan.ratio == 1.0
        assert audio[plan.out_start, 0] == plan.gen_start
