"""A device that does not run at 48 kHz: a real JACK server at 44.1 kHz, and the resampling path.

The engine's clock of record stays in 48 kHz samples; the device hears the stream
resampled by soxr. Bar k, which the timeline puts at 48 kHz sample B_k, must reach the
recording at round(B_k * 44100 / 48000) after the first sample.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import soundfile
import soxr

pytest.importorskip("jack", reason="JACK-Client is in the test extra")
from jackrec import Recorder  # noqa: E402

from engine.audio.feeder import CHUNK, OutputFeeder  # noqa: E402
from engine.audio.ring import PlaybackRing  # noqa: E402
from engine.audio.rtout import OutputRing  # noqa: E402
from engine.audio.sinks import DeviceSink, OutputSpec  # noqa: E402
from engine.errors import OutputError  # noqa: E402
from engine.timeline import Timeline  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
RATE = 44100  # the jack44 fixture's server


def _best_lag(recorded: np.ndarray, expected: np.ndarray, at: int, *, search: int = 40, width: int = 2048) -> int:
    """The shift of `recorded` against `expected` around `at` that matches best (least squares)."""
    ref = expected[at : at + width, 0]
    errors = [np.sum((recorded[at + s : at + s + width, 0] - ref) ** 2) for s in range(-search, search + 1)]
    return int(np.argmin(errors)) - search


def test_jack_at_44100_plays_the_stream_resampled_with_bars_in_place(jack44, tmp_path) -> None:
    seconds = 5.0
    rec = Recorder(seconds + 25, rate=RATE)  # room for a slow start on a loaded machine
    with rec:
        proc = subprocess.run(
            [sys.executable, "-m", "engine", "run", "--patch", "patches/jungle.yaml", "--output", "jack",
             "--duration", str(seconds), "--connect", "recorder:in_1,recorder:in_2"],
            cwd=REPO, capture_output=True, text=True, timeout=60, env=dict(os.environ),
        )
        recorded = rec.buf[: rec.pos].copy()
    assert proc.returncode == 0, proc.stderr
    assert rec.pos < len(rec.buf), "the recording filled up before the engine stopped"
    assert "runs at 44100 Hz: resampling the 48000 Hz stream to 44100 Hz" in proc.stderr, proc.stderr
    reference = tmp_path / "ref.wav"
    subprocess.run([sys.executable, "-m", "engine", "render", "--patch", "patches/jungle.yaml", "--bars", "5",
                    "-o", str(reference)], cwd=REPO, check=True, capture_output=True)
    expected48, _ = soundfile.read(reference, dtype="float32")
    expected = soxr.resample(expected48, 48000, RATE, quality="HQ")
    audible = np.flatnonzero(np.abs(recorded).max(axis=1) > 1e-6)
    live = recorded[int(audible[0]) :]
    timeline = Timeline.start("174", 4)
    bars = [b for b in range(1, 8) if timeline.bar_start(b) < (seconds - 0.2) * 48000]
    assert len(bars) >= 3
    start, end = int(audible[0]), int(audible[-1])
    # The playhead the engine sees counts 48 kHz samples: --duration 5 ends the stream after
    # 5 s of device audio plus the 50 ms fade (counting device frames would give 5.44 s).
    assert seconds * RATE - 4096 <= end - start < (seconds + 0.3) * RATE, (end - start, rec.xrun_positions, proc.stderr)
    xruns = np.array(rec.xrun_positions, dtype=np.int64) - start  # in `live`'s samples
    compared = []
    for bar in bars:
        at = round(Fraction(timeline.bar_start(bar) * RATE, 48000))
        # The bar is exactly where the timeline says, unless JACK's dummy driver dropped whole
        # cycles (a late client on a loaded 2-core machine, which JACK reports as xruns; the
        # report can come a little after the loss): then the bar's audio is intact and
        # earlier by whole periods.
        lag = _best_lag(live, expected, at, search=4096)
        if lag:
            assert rec.xrun_positions and lag % 256 == 0, (bar, lag, rec.xrun_positions, proc.stderr[-300:])
        if np.any((xruns > at + lag - 4096) & (xruns < at + lag + 2048 + 4096)):
            continue  # an xrun in this window: a late client's block there is not the stream's (JACK's report)
        # Streaming and one-shot resampling agree closely, so the match is the same audio, not a lucky lag.
        assert np.abs(live[at + lag : at + lag + 2048] - expected[at : at + 2048]).max() < 1e-3, (bar, lag, proc.stderr[-300:])
        compared.append(bar)
    print(f"bars compared {compared} of {bars}; JACK xruns at {rec.xrun_positions}")
    assert compared, ("an xrun near every bar: nothing could be compared", rec.xrun_positions)


def _ramp(n: int) -> np.ndarray:
    t = np.arange(n, dtype=np.float32)
    return np.stack([np.sin(t * 0.013), np.cos(t * 0.007)], axis=1).astype(np.float32)


def test_feeder_streams_what_one_shot_resampling_gives() -> None:
    """The feeder resamples into the C ring `lead` ahead; the C callback plays it block by block."""
    ring = PlaybackRing(capacity=1 << 16)
    audio = _ramp(40_000)
    ring.publish_bar(0)
    ring.write(0, audio)
    out = OutputRing(1 << 14, 2, fade_frames=1)
    feeder = OutputFeeder(ring, out, blocksize=256, finished=threading.Event(), device_rate=RATE)
    out.arm()
    block = np.zeros((256, 2), dtype=np.float32)
    got = []
    while feeder.position + CHUNK <= len(audio):
        feeder.feed()
        assert feeder.fed >= out.read_position + feeder.lead  # topped up to the lead
        out.pull(block)
        got.append(block.copy())
    stream = np.concatenate(got)
    expected = soxr.resample(audio, 48000, RATE, quality="HQ")
    assert out.gaps == 0
    assert np.abs(stream[:30_000] - expected[:30_000]).max() < 1e-4


def test_resample_off_refuses_a_44100_server_with_one_clear_message(jack44) -> None:
    with pytest.raises(OutputError) as info:
        DeviceSink(PlaybackRing(capacity=1 << 12), OutputSpec("jack", resample="off"))
    message = str(info.value)
    assert "does not run at 48000 Hz" in message and "runs at 44100 Hz" in message
    assert "resampling is off" in message and "system" in message and "--output wav:FILE" in message


def test_resampling_is_announced_with_both_rates(jack44, caplog) -> None:
    caplog.set_level(logging.INFO, logger="engine.audio.sinks")
    sink = DeviceSink(PlaybackRing(capacity=1 << 12), OutputSpec("jack", resample="LQ"))
    try:
        assert sink.rate == RATE
        assert "44100 Hz: resampling the 48000 Hz stream to 44100 Hz (soxr LQ" in caplog.text
    finally:
        sink.close()


def test_cli_resample_off_exits_1_with_the_message(jack44) -> None:
    """The same refusal through `backline run --resample off`: one message, exit 1, no traceback."""
    proc = subprocess.run([sys.executable, "-m", "engine", "run", "--patch", "patches/default.yaml", "--output", "jack",
                           "--resample", "off", "--no-osc", "--no-midi", "--duration", "1"],
                          cwd=REPO, env={**os.environ, "JACK_DEFAULT_SERVER": jack44}, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 1
    assert "resampling is off" in proc.stderr and "Traceback" not in proc.stderr
