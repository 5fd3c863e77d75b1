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


@pytest.mark.jack
def test_transport_stop_and_play_stop_and_resume_the_clock_on_their_bar_lines(jack: str) -> None:
    """OSC `transport/stop`, then `transport/play`, each at the next bar: MIDI Stop goes out on
    the first sample of the bar the audio fades on, and the clock comes back with Song
    Position Pointer (that bar, in sixteenths) then Continue on the first sample of the bar
    the audio returns on, so a slaved drum machine plays on the same bar as backline."""
    import socket
    import subprocess
    import sys
    import time

    from pythonosc.osc_message_builder import OscMessageBuilder

    from jack_rx import REPO

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        osc_port = probe.getsockname()[1]
    seconds = 11.0
    with receiver(jack, audio_seconds=seconds + 10) as rx:
        engine = subprocess.Popen([sys.executable, "-m", "engine", "run", "--patch", "patches/default.yaml",
                                   "--output", "jack", "--connect", "bl-rx:in_1,bl-rx:in_2", "--clock-out", "bl-rx:in",
                                   "--midi-api", "jack", "--no-midi", "--osc-port", str(osc_port),
                                   "--duration", str(seconds)], cwd=REPO, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        try:
            wait_for(lambda: any(m.type == "start" for _, m in rx.snapshot()), timeout=20, what="Start")
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as osc:
                time.sleep(2.3)
                osc.sendto(OscMessageBuilder("/backline/transport/stop").build().dgram, ("127.0.0.1", osc_port))
                time.sleep(3.0)
                osc.sendto(OscMessageBuilder("/backline/transport/play").build().dgram, ("127.0.0.1", osc_port))
            _, stderr = engine.communicate(timeout=seconds + 30)
        finally:
            engine.kill() if engine.poll() is None else None
        items = rx.snapshot()
        audio = rx.audio[: rx.audio_pos].copy()
        first_frame = rx.audio_first_frame
    assert engine.returncode == 0, stderr
    kinds = [m.type for _, m in items]
    assert kinds.count("stop") == 2 and "songpos" in kinds, [k for k in kinds if k != "clock"]
    start = items[0][0]
    bar = SR * 60 / BPM * 4  # 96,000 frames: 120 BPM, 4/4, a tick every 1,000
    stop_frame = next(f for f, m in items if m.type == "stop")
    i = kinds.index("songpos")
    songpos_frame, pos = items[i][0], items[i][1].pos
    assert kinds[i + 1] == "continue" and items[i + 1][0] == songpos_frame
    assert "clock" not in kinds[kinds.index("stop"):i]  # silent between Stop and the resume
    stop_bar, resume_bar = (stop_frame - start) / bar, (songpos_frame - start) / bar
    print(f"\nStop at bar {stop_bar:.5f}, Song Position {pos} (bar {pos / 16:g}) + Continue at bar {resume_bar:.5f}")
    assert abs(stop_bar - round(stop_bar)) * bar <= 1 and abs(resume_bar - round(resume_bar)) * bar <= 1
    assert pos == 16 * round(resume_bar) and round(resume_bar) > round(stop_bar)  # the bar it resumes at
    assert items[i + 2][1].type == "clock" and items[i + 2][0] == songpos_frame
    # the audio: silent in the middle of the stopped bars, playing a bar after the resume
    def level(frame: float) -> float:
        at = int(frame - first_frame)
        return float(np.abs(audio[at:at + 4800]).max())

    assert level(stop_frame + bar / 2) < 1e-4 and level(songpos_frame + bar / 4) > 1e-3
