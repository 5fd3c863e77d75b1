"""A followed clock's tempo step and ramp, live (issue #19, item 1): `backline run --clock
midi:bl-clk --midi-api jack --output jack` follows the tests' own JACK MIDI clock sender
(`clock_sender.py`, exact frames), which plays 120 BPM, steps to 130, holds, then ramps to 118
over 8 beats (its tempo moving tick by tick) and holds. The follower's tempo (the web page's
`/status`, polled 10 times a second, each reply placed in JACK frames by the recorder's latest
cycle) against the sender's own tempo at that frame: within 0.5 BPM except in the two beats
after each change (the step, the ramp's start, the ramp's end: there the tangent of the
ramp overshoots by up to 0.56 BPM for a beat, measured).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from clock_sender import CLOCK, START, STOP, ClockSender, follow_sender
from test_song_position_live import PATCH, SR

STEADY, STEP, RAMP, TAIL = 24 * 4 * 4, 24 * 4 * 4, 24 * 8, 24 * 4 * 3  # ticks: 4 bars, 4 bars, 8 beats, 3 bars


def tempo_of_tick(k: int) -> float:
    """The sender's tempo (BPM) for the interval after tick k."""
    if k < STEADY:
        return 120.0
    if k < STEADY + STEP:
        return 130.0
    if k < STEADY + STEP + RAMP:
        return 130.0 + (118.0 - 130.0) * (k - STEADY - STEP) / RAMP
    return 118.0


def plan(sender: ClockSender, start: int) -> list[float]:
    """Start, then every tick (its frame summed from the intervals, rounded when written), then Stop."""
    frames, at = [], float(start)
    for k in range(STEADY + STEP + RAMP + TAIL):
        frames.append(at)
        at += SR * 60 / tempo_of_tick(k) / 24
    sender.schedule([(start, START), *((round(f), CLOCK) for f in frames), (round(frames[-1]) + 500, STOP)])
    return frames


@pytest.mark.jack
def test_a_step_and_a_ramp_are_followed_within_half_a_bpm_two_beats_after(jack: str, tmp_path: Path) -> None:
    patch = tmp_path / "tempo.yaml"
    patch.write_text(PATCH)
    song = follow_sender(jack, patch, plan, seconds=30.0)
    frames: list[float] = song.runs
    assert song.returncode == 0, song.stderr
    tick_frames = np.array(frames)
    step_at, ramp_at, ramp_end = tick_frames[STEADY], tick_frames[STEADY + STEP], tick_frames[STEADY + STEP + RAMP]
    rows = []
    for frame, status in song.polls:
        clock = status.get("clock")
        if not isinstance(clock, dict) or clock.get("state") != "running" or not tick_frames[0] + 2 * 96 * 1000 < frame < tick_frames[-1]:
            continue
        k = int(np.searchsorted(tick_frames, frame)) - 1  # the newest tick sent by then
        if any(at <= frame < at + 2 * SR * 60 / tempo_of_tick(k) for at in (step_at, ramp_at, ramp_end)):
            continue  # within two beats of a change (the step, the ramp's start and its end): not yet judged
        rows.append((frame, float(clock["tempo_bpm"]) - tempo_of_tick(k), tempo_of_tick(k)))
    errors = np.array([e for _, e, _ in rows])
    phase = {"120": [e for _, e, t in rows if t == 120], "step 130": [e for f, e, t in rows if step_at <= f < ramp_at],
             "ramp": [e for f, e, t in rows if ramp_at <= f < tick_frames[STEADY + STEP + RAMP]],
             "118": [e for f, e, t in rows if f >= tick_frames[STEADY + STEP + RAMP]]}
    print("\nfollowed tempo minus the sender's, BPM, max |error| by part: "
          + ", ".join(f"{name} {np.abs(v).max():.3f} (n={len(v)})" for name, v in phase.items() if v))
    assert all(len(v) >= 4 for v in phase.values()), {k: len(v) for k, v in phase.items()}
    assert np.abs(errors).max() <= 0.5, [(round(t, 2), round(e, 3)) for _, e, t in rows]
