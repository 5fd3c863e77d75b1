"""Run inside a network namespace by test_link_peers: Link bar lines to the sample on JACK.

A Link peer of the binding plays a session; `backline run --clock link --output jack` (the
synth at temperature 0: a hit on every beat) joins it on a dummy JACK server of this
script's own; a JACK client here records the engine's audio, placed by JACK frame. The
peer's beats are put on JACK's frames by sampling JACK's current frame (`jack_frame_time`)
and the peer's Link clock back to back every 0.1 s through the run and fitting a line to the
2 s of samples around each hit (one line through the whole run was up to 6 ms off JACK's
frames where the server lost cycles, starting the engine). Prints one JSON line: each
recorded hit's distance (ms) from the peer's nearest beat, which hit was the first off the
engine's own session's grid (it joined the peer's there), the session tempo, the engine's log
lines about its clock.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "tests" / "clock")]
from bench.onsets import onsets  # noqa: E402
from jack_rx import receiver  # noqa: E402
from jackserver import jack_server  # noqa: E402
from link_session import QUANTUM, playing_peer, set_session_tempo  # noqa: E402

SR = 48_000
BPM = 127.0  # beats of 22,677.17 samples: not whole frames, not whole periods
OWN_BPM = 120.0  # PATCH's tempo
SECONDS = 20.0
JUMP = 0.3 * SR / 1000  # frames: JACK's frames moving this far against Link's clock are taken as an xrun
SETTLE = 4 * SR  # after JACK skipped cycles its frames jump against Link's clock: 2 bars to re-fit
PATCH = "name: grid\ntempo: 120\nseed: 1\nstyle: [{text: test groove}]\nsampling: {temperature: 0.0}\n"


def frame_jumps(frames: np.ndarray, micros: np.ndarray, slope: float, intercept: float) -> list[float]:
    """JACK frames where JACK's frame clock moved against Link's by more than `JUMP` frames
    with no xrun reported (a dummy server late on a cycle and catching up): where the median
    offset of the 5 samples before and the 5 after differ most, one per second at most."""
    offset = frames - (slope * micros + intercept)
    step = np.array([np.median(offset[i : i + 5]) - np.median(offset[i - 5 : i]) for i in range(5, len(offset) - 4)])
    out: list[float] = []
    for i in np.argsort(-np.abs(step)):
        if abs(step[i]) <= JUMP:
            break
        if all(abs(frames[i + 5] - j) > SR for j in out):
            out.append(float(frames[i + 5 - 1]))  # the last sample before it, as an xrun's frame is the cycle before
    return out


def main(tmp: Path) -> None:
    patch = tmp / "grid.yaml"
    patch.write_text(PATCH)
    peer = playing_peer(BPM)
    pairs: list[tuple[int, int]] = []
    with jack_server() as server, receiver(server, audio_seconds=SECONDS + 10) as rx:
        log = open(tmp / "engine.log", "w+")  # a file, not a pipe: nothing to drain while it runs
        engine = subprocess.Popen([sys.executable, "-m", "engine", "run", "--patch", str(patch), "--clock", "link",
                                   "--output", "jack", "--connect", "bl-rx:in_1,bl-rx:in_2", "--no-midi", "--no-osc",
                                   "--duration", str(SECONDS)], cwd=REPO, stderr=log, text=True)
        joined = False
        while engine.poll() is None:
            if not joined and peer.numPeers() >= 1:  # whichever session survived, it plays BPM from here
                joined = True
                set_session_tempo(peer, BPM)
            pairs.append((rx.client.frame_time, peer.clock().micros()))
            time.sleep(0.1)
        log.seek(0)
        stderr = log.read()
        log.close()
        audio = rx.audio[: rx.audio_pos, 0].copy()
        recorded = rx.recorded[: rx.audio_pos].copy()
        first_frame = rx.audio_first_frame
        xruns = list(rx.xrun_frames)
        rx_period = rx.client.blocksize
    state = peer.captureAppSessionState()
    frames, micros = np.array(pairs, dtype=np.float64).T
    frames = first_frame + (frames - first_frame + 2**31) % 2**32 - 2**31  # 32-bit frames unwrapped near the recording's start
    slope, intercept = np.polyfit(micros, frames, 1)  # JACK frames per Link microsecond, and where they meet
    errors, hits, after_xrun = [], [], 0
    jumps = frame_jumps(frames, micros, slope, intercept)
    xruns += [round(j) & 0xFFFFFFFF for j in jumps]
    resumed = first_frame + (np.array(xruns, dtype=np.float64) - first_frame + 2**31) % 2**32 - 2**31 + rx_period
    side = np.sign(frames[:, None] - resumed)  # which side of each xrun a sample is: before it, or once JACK resumed
    for onset in onsets(audio):
        if onset < 480 or not recorded[onset - 480 : onset + 480].all():
            continue  # JACK skipped the recorder around it: its onset is a hole's edge
        frame = onset + first_frame
        if any(0 <= ((frame - x) & 0xFFFFFFFF) < SETTLE for x in xruns):
            after_xrun += 1  # JACK's frames jumped (a dummy server lost cycles): not the engine's to follow at once
            continue
        at = (frame - intercept) / slope  # Link micros of the recorded hit, roughly
        # JACK's frames against Link's clock in the 2 s around it (a dummy server loses cycles in bursts, off any
        # one line), and only those on the hit's side of every xrun: a line through a jump leans, 1-2 ms off here.
        near = (np.abs(micros - at) <= 1e6) & (side == np.sign(frame - resumed)).all(axis=1)
        if near.sum() < 5:
            after_xrun += 1  # between two xruns too close to place it
            continue
        local, offset = np.polyfit(micros[near], frames[near], 1)
        at = (frame - offset) / local
        beat = state.beatAtTime(round(at), QUANTUM)
        nearest = state.timeAtBeat(float(round(beat)), QUANTUM)
        errors.append((at - nearest) / 1e3)
        hits.append(onset)
    own = SR * 60 / OWN_BPM  # until the engine joins it plays its own session, at the patch's tempo
    gaps = np.diff(hits) / own
    moved = next((i + 1 for i, gap in enumerate(gaps) if abs(gap - round(gap)) * own > 96), len(hits))
    print(json.dumps({"returncode": engine.returncode, "errors_ms": errors, "moved": moved, "xruns": len(xruns) - len(jumps), "jumps": len(jumps),
                      "after_xrun": after_xrun,
                      "tempo": state.tempo(), "peers_seen": joined, "frames_per_us": slope,
                      "off_line_ms": float(np.abs(frames - (slope * micros + intercept)).max() / 48),
                      "clock_log": [line for line in stderr.splitlines() if "clock" in line.lower()],
                      "stderr_tail": stderr[-2000:]}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
