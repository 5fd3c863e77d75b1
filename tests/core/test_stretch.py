"""The time-stretch binding (engine/schedule/stretch.cpp over Signalsmith Stretch): it streams.
Fed one generator call at a time with the ratio stepping from call to call, as the beat grid
will feed it, its output has no seam at call edges, keeps a sine's pitch, has exactly the
length asked for, is delayed by its analysis block (the latency budget of issue #15), and
copies exactly (rollback)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine.schedule.stretch import Stretcher

SR = 48_000
CALL = 3840


def sine(seconds: float, hz: float = 440.0) -> np.ndarray:
    t = np.arange(round(SR * seconds)) / SR
    return np.repeat(np.sin(2 * np.pi * hz * t)[:, None], 2, axis=1).astype(np.float32)


def cents(x: np.ndarray, hz: float = 440.0) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x)), 16 * len(x)))
    k = int(np.argmax(spec))
    a, b, c = np.log(spec[k - 1 : k + 2] + 1e-30)
    return 1200 * math.log2((k + 0.5 * (a - c) / (a - 2 * b + c)) * SR / (16 * len(x)) / hz)


def test_a_stepping_ratio_streams_without_seams_and_keeps_pitch() -> None:
    st = Stretcher(block=1200, interval=300)
    source = sine(3.0)
    ratios = [0.96, 1.0, 1.044, 0.99]  # a beat's ratio changes call by call
    outs = []
    for k, i in enumerate(range(0, len(source) - CALL + 1, CALL)):
        n = round(CALL / ratios[k % len(ratios)])
        out = st.process(source[i : i + CALL], n)
        assert out.shape == (n, 2)
        outs.append(out)
    out = np.concatenate(outs)[SR // 4 :, 0]
    step = np.abs(np.diff(out)).max() / np.abs(np.diff(source[:, 0])).max()
    assert step < 1.05, step  # a seam at a call edge would be a step many times the sine's own
    assert abs(cents(out)) < 1.0


def test_its_latency_is_its_block() -> None:
    st = Stretcher(block=1200, interval=300)
    assert st.latency == 1200  # 25 ms at 48 kHz
    click = np.zeros((SR, 2), np.float32)
    click[9600] = 1.0
    out = np.concatenate([st.process(click[i : i + CALL], CALL) for i in range(0, SR - CALL + 1, CALL)])
    assert abs(int(np.argmax(np.abs(out[:, 0]))) - (9600 + st.latency)) <= 64


@pytest.mark.parametrize("ratio", [1.0, 0.96, 1.044])
def test_a_copied_stretcher_goes_on_exactly_as_the_stream_did(ratio: float) -> None:
    """Rollback copies the stretcher's whole state (re-priming a fresh one is not exact away from
    a ratio of 1: its output phases never rejoin the original's). A copy taken mid-stream gives
    bit for bit the original's output from there on."""
    t = np.arange(2 * SR) / SR
    source = np.repeat((np.sin(2 * np.pi * 440 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t)))[:, None], 2, axis=1)
    source = source.astype(np.float32)
    out = round(CALL / ratio)
    a = Stretcher(block=1200, interval=300)
    for i in range(0, 6 * CALL, CALL):
        a.process(source[i : i + CALL], out)
    b = a.copy()
    went_on = [a.process(source[i : i + CALL], out) for i in range(6 * CALL, 9 * CALL, CALL)]
    again = [b.process(source[i : i + CALL], out) for i in range(6 * CALL, 9 * CALL, CALL)]
    assert np.abs(went_on[0]).max() > 0.5
    for x, y in zip(went_on, again, strict=True):
        assert np.array_equal(x, y)
