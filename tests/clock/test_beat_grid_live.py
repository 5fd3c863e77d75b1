"""Every beat on its exact sample, live (issue #15), at 127 BPM (beats of 11,338.58 samples:
not whole frames), recorded by a JACK client with a MIDI clock, both stamped in JACK frames:

- the internal clock: `backline run --output jack --clock-out`; each beat's hit in the
  recording is compared with the beat the clock tells a drum machine (Start, then every 24
  ticks). `fit: stretch` puts every hit there; `resample` limps, as documented;
- a followed clock: `jack_midi_clock -b 127` (sample-exact, -J 0) with `--clock midi:... --start-on
  bar`; each hit is compared with the clock's own beats.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from bench.onsets import onsets
from jack_rx import receiver, run_engine, run_following_jack_midi_clock, wait_for

SR = 48_000
BPM = 127.0
PATCH = f"name: grid\ntempo: {BPM:g}\nseed: 1\nstyle: [{{text: test groove}}]\nsampling: {{temperature: 0.0}}\n"


def hit_errors_ms(audio: np.ndarray, recorded: np.ndarray, beats: list[int], what: str,
                  xruns: int) -> np.ndarray:
    """Each beat's hit (the onset nearest it, within half a beat) in the recording, in ms from
    `beats` (recording samples). A beat is left out where JACK skipped the recorder within 30 ms
    of it (the resample fitter's hits lie up to 20 ms off their beat), and so is an onset right
    after such a hole (the hole's end reads as one). A hit may be missing only where the server
    reported an xrun (the engine's own cycle skipped: its output that cycle never reached the
    recorder), at most one a reported xrun, and never most of them."""
    found, half, guard = onsets(audio), round(SR * 30 / BPM), 30 * SR // 1000
    found = np.array([f for f in found if f >= 480 and recorded[f - 480 : f + 1].all()])
    errors, missing = [], []
    for line in beats:
        if line < half or not recorded[line - guard : line + guard].all():
            continue
        near = found[np.abs(found - line) < half] if len(found) else found
        if not len(near):
            missing.append(line)
            continue
        errors.append((near[np.argmin(np.abs(near - line))] - line) / SR * 1e3)
    assert len(missing) <= min(xruns, len(errors) // 4), \
        f"no hit within half a beat of samples {missing} ({what}; the server reported {xruns} xruns)"
    return np.array(errors)


def beat_errors_ms(jack: str, tmp_path: Path, fit: str, seconds: float = 12.0) -> np.ndarray:
    """Each recorded hit's distance (ms) from its beat on the clock the engine sent."""
    patch = tmp_path / "grid.yaml"
    patch.write_text(PATCH)
    with receiver(jack, audio_seconds=seconds + 10) as rx:
        returncode, stderr = run_engine(["--patch", str(patch), "--output", "jack", "--fit", fit, "--connect",
                                         "bl-rx:in_1,bl-rx:in_2", "--clock-out", "bl-rx:in", "--midi-api", "jack"],
                                        seconds=seconds)
        wait_for(lambda: any(m.type == "stop" for _, m in rx.snapshot()), timeout=5, what="Stop")
        items = rx.snapshot()
        audio = rx.audio[: rx.audio_pos, 0].copy()
        recorded = rx.recorded[: rx.audio_pos].copy()
        first_frame = rx.audio_first_frame
        xruns = rx.xruns
    assert returncode == 0, stderr
    assert first_frame is not None
    start = next(f for f, m in items if m.type == "start") - first_frame  # bar 0's first sample, in the recording
    beat = SR * 60 / BPM
    errors = hit_errors_ms(audio, recorded, [start + round(k * beat) for k in range(int((len(audio) - start) / beat) - 1)], fit,
                            xruns)
    assert len(errors) >= 8, f"only {len(errors)} beats recorded whole"
    return errors


@pytest.mark.jack
def test_every_hit_lands_on_the_beat_the_clock_out_sends(jack: str, tmp_path: Path) -> None:
    stretch = beat_errors_ms(jack, tmp_path, "stretch")
    resample = beat_errors_ms(jack, tmp_path, "resample")
    for name, e in (("stretch", stretch), ("resample", resample)):
        print(f"\n{name} at {BPM:g} BPM live: {len(e)} beats, hit vs the clock's beat p50 {np.median(np.abs(e)):.2f} "
              f"ms, max {np.abs(e).max():.2f} ms; by beat of the bar " + " ".join(f"{x:+.1f}" for x in e[:8]))
    assert np.abs(stretch).max() <= 3.0, stretch
    assert np.abs(resample).max() > 10.0  # the limp the stretch removes


@pytest.mark.jack
def test_every_hit_lands_on_the_beat_of_a_followed_clock(jack: str, tmp_path: Path) -> None:
    if shutil.which("jack_midi_clock") is None:
        pytest.skip("jack_midi_clock is not installed (apt-get install jack-midi-clock)")
    seconds = 12.0
    patch = tmp_path / "grid.yaml"
    patch.write_text(PATCH)
    with receiver(jack, audio_seconds=seconds + 10) as rx:
        returncode, stderr = run_following_jack_midi_clock(rx, ["--patch", str(patch), "--fit", "stretch"], bpm=BPM,
                                                           jitter=0, seconds=seconds)
        ticks = rx.song_tick_frames(BPM)
        audio = rx.audio[: rx.audio_pos, 0].copy()
        recorded = rx.recorded[: rx.audio_pos].copy()
        first_frame = rx.audio_first_frame
        xruns = rx.xruns
    assert returncode == 0, stderr
    assert first_frame is not None
    audible = int(np.flatnonzero(np.abs(audio) > 1e-4)[0])
    beats = [int(round(ticks[k] - first_frame)) for k in range(0, max(ticks) + 1, 24) if k in ticks]
    beats = [b for b in beats if audible - 480 <= b < len(audio) - SR]  # from the first bar the engine plays
    errors = hit_errors_ms(audio, recorded, beats, "followed", xruns)
    irregular = sum(("tick(s) missing" in line or "repeats tick" in line) for line in stderr.splitlines())
    print(f"\nfollowing jack_midi_clock at {BPM:g} BPM: {len(errors)} beats, hit vs the clock's beat p50 "
          f"{np.median(np.abs(errors)):.2f} ms, max {np.abs(errors).max():.2f} ms; {irregular} lost or repeated ticks logged")
    assert len(errors) >= 8
    # As in test_clock_e2e: on this loaded dummy server the engine's clock input may lose a tick
    # in a cycle JACK skipped for it alone, and is then a whole tick off; allowed only when logged.
    tick_ms = 60e3 / BPM / 24
    whole = np.rint(errors / tick_ms) if irregular else np.zeros(len(errors))
    assert np.all(np.abs(whole) <= 1) and np.abs(errors - whole * tick_ms).max() <= 3.0, errors
