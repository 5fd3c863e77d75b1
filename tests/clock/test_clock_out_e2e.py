"""End to end: `backline run --clock-out PORT --midi-api jack --output jack` sends MIDI clock over JACK MIDI.

A JACK client in the test receives the clock on a MIDI port and records backline's audio, both
stamped in JACK frames, and measures the clock's tempo, its tick spacing, Start on the first
sample of bar 0 and Stop at the end.
"""

from __future__ import annotations


import numpy as np
import pytest

from jack_rx import receiver, run_engine, wait_for

SR = 48_000
BPM = 120.0  # patches/default.yaml


@pytest.mark.jack
def test_run_sends_clock_start_and_stop_on_its_bar_grid(jack: str) -> None:
    seconds = 6.0
    with receiver(jack, audio_seconds=seconds + 10) as rx:
        returncode, stderr = run_engine(["--patch", "patches/default.yaml", "--output", "jack", "--connect",
                                         "bl-rx:in_1,bl-rx:in_2", "--clock-out", "bl-rx:in", "--midi-api", "jack"],
                                        seconds=seconds)
        try:
            wait_for(lambda: any(m.type == "stop" for _, m in rx.snapshot()), timeout=5, what="Stop")
        except AssertionError as err:  # say what did arrive and what the engine said, for a run that fails once
            kinds = [m.type for _, m in rx.snapshot()]
            raise AssertionError(f"{err}: rc {returncode}, {len(kinds)} messages (first {kinds[:3]}, last "
                                 f"{kinds[-3:]}), {rx.audio_pos} audio frames; engine stderr:\n{stderr[-3000:]}") from None
        items = rx.snapshot()
        audio = rx.audio[: rx.audio_pos].copy()
        first_frame = rx.audio_first_frame
        skipped = {tick: rx.skipped_before(int(frame), 256) for tick, frame in rx.song_tick_frames(BPM).items()}
    assert returncode == 0, stderr
    assert first_frame is not None
    kinds = [m.type for _, m in items]
    assert kinds[0] == "start" and kinds[1] == "clock", kinds[:5]
    assert kinds[-1] == "stop" and "clock" not in kinds[kinds.index("stop"):]
    start = items[0][0]
    onset = first_frame + int(np.flatnonzero(np.abs(audio).max(axis=1) > 1e-4)[0])  # bar 0 (2 ms attack ramp)
    ticks = rx.song_tick_frames(BPM)  # numbered by frame: a cycle JACK skipped moves its ticks, not the count
    k = np.array(sorted(ticks), dtype=np.float64)
    frames = np.array([ticks[int(i)] for i in k])
    period = np.polyfit(k, frames, 1)[0]
    spacing = np.diff(frames) / np.diff(k) / SR * 1e3
    late = (frames - (start + k * SR * 60 / BPM / 24)) / SR * 1e3
    print(f"\nclock out: {len(k)} ticks (up to song tick {int(k[-1])}), {60 * SR / (period * 24):.4f} BPM; spacing "
          f"p5/p50/p95 {np.percentile(spacing, 5):.3f}/{np.median(spacing):.3f}/{np.percentile(spacing, 95):.3f} ms "
          f"(ideal {60e3 / BPM / 24:.3f}); Start {(start - onset) / SR * 1e3:+.2f} ms from the audio's first "
          f"audible sample; ticks vs the grid from Start p50/p99/max {np.median(late):+.3f}/"
          f"{np.percentile(late, 99):+.3f}/{late.max():+.3f} ms")
    assert len(k) >= 0.95 * seconds * BPM / 60 * 24
    assert abs(60 * SR / (period * 24) - BPM) < 0.01
    assert abs(np.median(spacing) - 60e3 / BPM / 24) < 0.05
    assert -2.5 < (start - onset) / SR * 1e3 <= 0.0  # Start on bar 0's first sample; audible after the attack ramp
    # Exact to the sample, except a message due in cycles JACK skipped, written at the start of the next.
    assert np.median(np.abs(late)) < 0.05
    allowed = np.array([256 + skipped[int(i)] for i in k]) / SR * 1e3
    assert late.min() > -0.05 and np.all(late < allowed + 0.05), late[late >= allowed + 0.05]
