"""End to end: `backline run --clock midi:PORT --start-on bar` follows jack_midi_clock over JACK MIDI.

One JACK client in the test stamps the clock's events and records backline's audio, both in
JACK frames, so the clock's beats and the rendered bar lines are compared on one time base.

Where a bar line is in the recording: at its downbeat's attack, as a musician hears it. The
synth generator is deterministic, so the offline render (`backline render`, same patch at the
clock's tempo) gives the attack's level and its lead to that level; the recording's bar line
is its first rise to that level near the clock's line.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from engine.service.health import StatusUnavailable, query_http
from clock_sender import free_tcp_port
from jack_rx import receiver, run_following_jack_midi_clock, unforeseeable_ms


REPO = Path(__file__).resolve().parents[2]
SR = 48_000
BPM = 133.0
SEARCH = SR // 50  # look for each bar within +/- 20 ms of the clock's bar line, plus the clock's own wander there
MATCH = SR // 100  # the attack is looked for up to 10 ms after the search window
QUIET_BEFORE = SR // 500  # 2 ms of quiet before an attack...
RISE = SR // 1000  # ...up to 1 ms before it reaches half its level (the synth's attack ramp is 2 ms)


def bar_start_in(recording: np.ndarray, recorded: np.ndarray, expected: int, reference: np.ndarray,
                 search: int = SEARCH) -> int | None:
    """Where the bar's downbeat starts within `search` samples of `expected`, as a musician hears the bar line: the
    first recorded sample at half the loudness of the reference's attack (its first 5 ms) after
    2 ms below a quarter of it (ending 1 ms before: the attack's rise), less the reference's own
    lead to that level. Every bar of the default patch starts with an attack out of near silence
    (tempo lock: a hit on every beat).

    Not a cross-correlation of the waveform: the fitter stretches each bar onto the clock's
    tempo, so the tones under the hits are not the reference's sample for sample, and the best
    match over 100 ms of them landed up to 3.7 ms off the attack in some bars (measured at
    -J 1: the attacks on the planned bar lines to 0.01 ms, the correlation 3.5 ms late).
    Frames JACK did not record (a skipped cycle) are never taken as the attack; None where no
    attack was found and some of the window was not recorded (CI: a -J 10 run with one xrun
    found no attack in one bar; the bar is then counted as unseen, not as a second off)."""
    attack = np.abs(reference[: SR // 200]).max(axis=1)
    level = 0.5 * float(attack.max())
    lead = int(np.flatnonzero(attack >= level)[0])
    lo, hi = expected - search, expected + search + MATCH
    loud = np.abs(recording[lo:hi]).max(axis=1)
    quiet = np.convolve((loud < level / 4).astype(np.int32), np.ones(QUIET_BEFORE, np.int32), "full")[: len(loud)]
    for i in np.flatnonzero((loud >= level) & (recorded[lo:hi] > 0)):
        if i > QUIET_BEFORE + RISE and quiet[i - 1 - RISE] == QUIET_BEFORE:
            return lo + int(i) - lead
    if not recorded[lo:hi].all():
        return None  # no attack, and JACK skipped some of the recorder's cycles there: it may be in them
    return lo - SR  # no attack where all was recorded: a second off, which fails any bound


def render_reference(tmp_path: Path, bars: int) -> tuple[np.ndarray, float]:
    """The default patch at the clock's tempo, rendered offline: (audio, samples per bar)."""
    text = (REPO / "patches/default.yaml").read_text()
    patch = tmp_path / "default133.yaml"
    patch.write_text(text.replace("tempo: 120", f"tempo: {BPM:g}"))
    out = tmp_path / "reference.wav"
    subprocess.run([sys.executable, "-m", "engine", "render", "--patch", str(patch), "--bars", str(bars), "-o", str(out)],
                   cwd=REPO, check=True, capture_output=True)
    audio, rate = sf.read(out, dtype="float32")
    assert rate == SR
    return audio, SR * 60 / BPM * 4


@pytest.mark.jack
@pytest.mark.parametrize("jitter", [0, 1, 5, 10])  # issue #19: -J 1 within 5 ms; -J 5 and -J 10 reported (printed)
def test_run_follows_jack_midi_clock_bar_lines_on_its_beats(jack: str, tmp_path: Path, jitter: int) -> None:
    """Bar lines within 5 ms of the clock's, plus what the clock itself could not foresee.


    jack_midi_clock's -J is a random walk (each tick interval varies by up to J %), not the
    white jitter of the synthetic tests: its beats wander from any straight line, by up to
    2 ms over a planning horizon at -J 1 and 10+ ms at -J 5. Without -J it is sample-exact
    and so must the bar lines be (they are: 0.00 ms, frame-locked)."""
    if shutil.which("jack_midi_clock") is None:
        pytest.skip("jack_midi_clock is not installed (apt-get install jack-midi-clock)")
    seconds = 18.0  # 9 bars at 133 BPM: enough that a few lost to skipped cycles leave 4 to compare
    reference, bar_len = render_reference(tmp_path, bars=12)
    with receiver(jack, audio_seconds=seconds + 10) as rx:
        returncode, stderr = run_following_jack_midi_clock(rx, ["--patch", "patches/default.yaml"], bpm=BPM,
                                                           jitter=jitter, seconds=seconds)
        ticks = rx.song_tick_frames(BPM)
        items = rx.snapshot()
        audio = rx.audio[: rx.audio_pos].copy()
        recorded = rx.recorded[: rx.audio_pos].copy()
        first_frame = rx.audio_first_frame
    assert returncode == 0, stderr
    assert first_frame is not None
    assert "clock midi:jack_midi_clock runs: audio starts at its bar" in stderr, stderr
    assert "run on JACK's frame clock" in stderr, stderr
    # The clock's bar lines (every 4 beats = 96 ticks) in recording samples; a bar whose tick
    # the clock dropped (it drops those in cycles JACK skipped) is left out.
    bars = {k // 96: ticks[k] - first_frame for k in range(0, max(ticks) + 1, 96) if k in ticks}
    audible = np.flatnonzero(np.abs(audio).max(axis=1) > 1e-4)
    # The bar the engine says it started on (in the clock's numbering); each bar line from it on
    # is then checked against the recording. Not "the bar nearest the first audible sample":
    # under load a stray early sample once made that the bar before.
    first_bar = int(re.search(r"audio starts at its bar (\d+)", stderr).group(1)) - 1  # type: ignore[union-attr]
    errors, grants, unseen = [], [], 0
    for bar, line in sorted(bars.items()):
        expected = int(round(line))
        ref_bar = bar - first_bar
        # The engine plans whole bars (the fitter stretches frames onto an exact bar), so a bar
        # line is fixed when the bar before it is planned: a bar plus look-ahead and one
        # generator call (1.8 s + 280 ms, 111 ticks at 133 BPM) before it plays.
        grant = abs(unforeseeable_ms(ticks, bar * 96, horizon=96 + 15))
        # The attack is looked for as far off as the bound allows (at -J 10 the clock wanders
        # 25 ms: a window of 20 ms found no attack at all in a bar within its bound, CI stop 26).
        search = SEARCH + int(grant * SR / 1e3)
        if ref_bar < 0 or expected + search + MATCH > audible[-1] or (ref_bar + 1) * bar_len > len(reference):
            continue
        if recorded[expected - search : expected + search + MATCH].mean() < 0.5:
            unseen += 1  # JACK skipped most of the recorder's cycles there (xruns): too little to compare
            continue
        ref = reference[int(round(ref_bar * bar_len)) :]
        start = bar_start_in(audio, recorded, expected, ref, search)
        if start is None:
            unseen += 1
            continue
        errors.append((start - expected) / SR * 1e3)
        grants.append(grant)
    errors_ms, grants_ms = np.array(errors), np.array(grants)
    print(f"\njack_midi_clock -J {jitter}: audio starts at the clock's bar {first_bar + 1} (first audible sample "
          + (f"{(audible[0] - bars[first_bar]) / SR * 1e3:+.1f} ms from its line" if first_bar in bars
             else "its line's tick dropped by the clock") + "); bar lines vs the clock's "
          f"over {len(errors_ms)} bars ({unseen} in skipped cycles): " + " ".join(f"{e:+.2f}" for e in errors_ms) + " ms; the clock's own unforeseeable wander there: "
          + " ".join(f"{g:.2f}" for g in grants_ms) + " ms")
    start = next(i for i, (_, m) in enumerate(items) if m.type == "start")
    print("the clock's first messages (frames after Start): "
          + " ".join(f"{m.type}@{f - items[start][0]}" for f, m in items[start : start + 4]) + f"; song ticks from {min(ticks)}")
    print("\n".join(line for line in stderr.splitlines() if "clock" in line))
    # --start-on bar: silence until a bar line of the clock, then the music starts on it.
    assert first_bar >= 1
    assert len(errors_ms) >= 4
    if jitter >= 5:  # issue #19 asks these reported: the clock's own wander there is 10-50 ms
        print(f"-J {jitter}: bar-phase error p50 {np.median(np.abs(errors_ms)):.2f} ms, max {np.abs(errors_ms).max():.2f} "
              f"ms over {len(errors_ms)} bars (reported; bounded only by the clock's own wander there + 20 ms)")
        assert np.all(np.abs(errors_ms) < grants_ms + 20.0), (errors_ms, grants_ms)
        return
    # Whole ticks apart: the engine's clock input and this receiver are two JACK clients, and
    # on this loaded dummy server each loses the events of the cycles JACK skips for it alone,
    # so their tick counts can differ by one from there on (seen in CI: +19 ms from bar 7 at
    # -J 0, the engine logging ticks missing and repeated). That is allowed only when the
    # engine logged such ticks, and at most one tick; within the tick it must be exact.
    tick_ms = 60e3 / BPM / 24
    whole = np.rint(errors_ms / tick_ms)
    irregular = sum(("tick(s) missing" in line or "repeats tick" in line) for line in stderr.splitlines())
    print(f"whole-tick offsets {whole.astype(int).tolist()}; the engine logged {irregular} lost or repeated ticks")
    assert np.all(np.abs(whole) <= (1 if irregular else 0)), (errors_ms, irregular)
    # The first bar line is where the audio starts, placed from the clock's first estimate: with a
    # tick lost in the first cycles (seen once in CI: "1 tick(s) missing" at start, 43 xruns) that
    # estimate can be a JACK period early (-5.33 ms), and the follower then re-fits the bars after it.
    slack = np.zeros(len(errors_ms))
    if irregular:
        slack[0] = 256 / SR * 1e3
    assert np.all(np.abs(errors_ms - whole * tick_ms) < 5.0 + grants_ms + slack), (errors_ms, grants_ms)


@pytest.mark.jack
@pytest.mark.parametrize("jitter", [5, 10])
def test_the_followed_tempo_holds_the_clocks_own_under_wander(jack: str, jitter: int) -> None:
    """Issue #19's case: `jack_midi_clock -b 97 -J 5` once read 95.4-97.8 BPM in the status while
    its ticks said 96.7-96.9. The follower's tempo (the web page's `/status`, polled 4 times a
    second through the run) against the clock's own recorded ticks regressed over the 2 bars
    before each poll, from two bars after Start on: within 0.2 BPM."""
    if shutil.which("jack_midi_clock") is None:
        pytest.skip("jack_midi_clock is not installed (apt-get install jack-midi-clock)")
    bpm, seconds, port = 97.0, 16.0, free_tcp_port()
    polls: list[tuple[tuple[int, float], float, dict]] = []  # (rx's cycle, monotonic time of the reply, status)
    done = threading.Event()

    def poll(rx) -> None:  # type: ignore[no-untyped-def]
        while not done.wait(0.25):
            try:
                status = query_http(f"http://127.0.0.1:{port}/status", timeout_s=0.5)
            except StatusUnavailable:
                continue
            if rx.cycle is not None:
                polls.append((rx.cycle, time.monotonic(), status))

    with receiver(jack, audio_seconds=seconds + 10) as rx:
        poller = threading.Thread(target=poll, args=(rx,), daemon=True)
        poller.start()
        try:
            returncode, stderr = run_following_jack_midi_clock(
                rx, ["--patch", "patches/default.yaml", "--web-port", str(port)], bpm=bpm, jitter=jitter, seconds=seconds)
        finally:
            done.set()
            poller.join()
        ticks = rx.song_tick_frames(bpm)
    assert returncode == 0, stderr
    song = np.array(sorted(ticks)), np.array([ticks[k] for k in sorted(ticks)])
    errors, bar_tempo = [], []
    for (frame, at), replied, status in polls:
        clock = status.get("clock")
        if not isinstance(clock, dict) or clock.get("state") != "running":
            continue
        now = frame + (replied - at) * SR  # the reply's time in JACK frames, by the recorder's latest cycle
        k, f = song[0][song[1] <= now], song[1][song[1] <= now]
        if len(k) == 0 or k[-1] < 2 * 96 + 2 * 96:  # two bars after Start, and two bars to regress
            continue
        recent = k >= k[-1] - 2 * 96
        period = np.polyfit(k[recent], f[recent], 1)[0]  # frames per tick
        reference = 60 * SR / (period * 24)
        errors.append(float(clock["tempo_bpm"]) - reference)
        bar_tempo.append(float(status["tempo"]) - reference)
    errors_bpm = np.array(errors)
    print(f"\njack_midi_clock -b {bpm:g} -J {jitter}: {len(errors)} polls; the follower's tempo vs the clock's own "
          f"2-bar regression: p50 {np.median(np.abs(errors_bpm)):.3f}, max {np.abs(errors_bpm).max():.3f} BPM; the "
          f"playing bar's tempo (planned a bar ahead) vs it: max {np.abs(bar_tempo).max():.3f} BPM")
    assert len(errors) >= 10, (len(polls), stderr)
    assert np.abs(errors_bpm).max() <= 0.2, errors_bpm.round(3)
