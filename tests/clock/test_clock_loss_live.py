"""A clock that stops mid-show and comes back, live (issue #19, item 5): `backline run --clock
midi:bl-clk --midi-api jack --output jack` follows the tests' own JACK MIDI clock sender
(`clock_sender.py`, 120 BPM: a tick is 1,000 frames), which sends Start and 8 bars, then
nothing for 5 s (a cable pulled: no Stop), then ticks again where its own clock has got to,
8.3 ms (0.4 tick) later than the old line predicts, as a sender whose crystal drifted, one of
its first ticks back repeated and one lost.

Checked where a musician notices it: the synth's hit on every beat (temperature 0) goes on
through the silence of the clock, a beat apart at the last tempo; the web page's `/status`
says coasting, then held (the clock lost) while the engine keeps its tempo, then running;
and once the ticks are back the hits land on the sender's new beats again.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.onsets import onsets
from clock_sender import START, STOP, ClockSender, Recording, follow_sender, ticks
from test_song_position_live import BEAT, PATCH, SR, TICK, Run, hit_errors, label

GAP_TICKS = 240  # 5 s without a clock
SHIFT = 400  # frames: the clock comes back 0.4 tick later than its old line


def plan(sender: ClockSender, start: int) -> list[Run]:
    """Start and 8 bars; 5 s of nothing; 5 bars from where the sender's clock has got to, SHIFT
    late, its 2nd tick repeated at its frame and its 5th lost (what JACK does to a tick in a
    cycle it runs twice or skips, here on purpose: in CI such a repeat once put every beat
    after the return a tick late); Stop."""
    back = start + (768 + GAP_TICKS) * TICK + SHIFT
    returned = ticks(back, TICK, 480)
    returned = [*returned[:2], returned[1], *returned[2:4], *returned[5:]]
    sender.schedule([(start, START), *ticks(start, TICK, 768), *returned, (round(back + 479.5 * TICK), STOP)])
    return [Run(0, start, 768), Run(768 + GAP_TICKS, round(back), 480)]


@pytest.fixture(scope="module")
def song(jack: str, tmp_path_factory: pytest.TempPathFactory) -> Recording:
    patch = Path(tmp_path_factory.mktemp("clockloss")) / "loss.yaml"
    patch.write_text(PATCH)
    return follow_sender(jack, patch, plan, seconds=34.0)


@pytest.mark.jack
def test_the_music_plays_on_at_the_last_tempo_and_the_status_says_the_clock_is_lost(song: Recording) -> None:
    assert song.returncode == 0, song.stderr
    before, after = song.runs
    lost_at = before.tick_frame(before.first + before.count - 1)  # the last tick before the silence
    states = [(frame - lost_at, status["clock"]["state"], status["clock"]["tempo_bpm"]) for frame, status in song.polls
              if isinstance(status.get("clock"), dict) and lost_at < frame < after.frame]
    seen = [s for _, s, _ in states]
    print(f"\nclock silent {GAP_TICKS / 48:g} s: status " + " ".join(f"{t / SR:.1f}s:{s}" for t, s, _ in states[::5]))
    assert "coasting" in seen and "lost" in seen, seen
    assert seen.index("lost") > seen.index("coasting")  # coasting for the grace period, then lost
    assert all(abs(float(bpm) - 120.0) < 0.05 for _, _, bpm in states if bpm is not None)  # the last tempo kept
    back = [status["clock"]["state"] for frame, status in song.polls
            if after.frame + SR < frame < after.tick_frame(after.first + after.count - 1)]
    assert len(back) >= 10 and set(back) == {"running"}, back  # re-locked (until the Stop at the end)
    # Through the silence the hits go on, one a beat at the last tempo (nothing to re-time them by).
    # A hit whose start JACK skipped (an xrun in the 4 periods before its onset, or frames the recorder was not
    # called for) is judged by where its audio resumed: seen once in CI, 255 frames late beside 64 xruns.
    found = np.sort(onsets(song.audio) + song.first_frame)
    gap = found[(found > lost_at + BEAT / 2) & (found < after.frame - BEAT / 2)]
    clean = [h for h in gap if song.recorded[h - song.first_frame - 1024 : h - song.first_frame + 1].all()
             and not any(0 <= ((h - x) & 0xFFFFFFFF) < 4 * 256 for x in song.xrun_frames)]
    beats = np.diff(clean) / BEAT
    off_ms = (beats - np.round(beats)) * BEAT / SR * 1e3
    print(f"{len(gap)} hits while the clock was silent, {len(gap) - len(clean)} left out (JACK skipped their start); "
          f"the rest {np.round(beats).astype(int).tolist()} beats apart, off by {np.abs(off_ms).max():.3f} ms at most")
    assert len(gap) >= 8 and len(clean) >= 6, (gap, clean)
    assert np.abs(off_ms).max() < 1.0 and np.round(beats).max() <= 2, (beats, off_ms)


@pytest.mark.jack
def test_the_beats_lock_onto_the_clock_again_when_it_returns(song: Recording) -> None:
    assert song.returncode == 0, song.stderr
    after = song.runs[1]
    errors = hit_errors(song, after)
    print("\nafter the clock returned (0.4 tick later than its old line): hits vs the sender's beats, ms: "
          + " ".join(f"{label(b)}:{'-' if e is None else f'{e:+.1f}'}" for b, e in errors) + f"; {song.xruns} xruns")
    from_beat = (-(-after.first // 96) + 2) * 4  # two bar lines on: a bar and its look-ahead were planned already
    tail = np.array([e for b, e in errors if b >= from_beat and e is not None])
    assert len(tail) >= 8, errors
    assert np.abs(tail).max() <= 3.0, tail
