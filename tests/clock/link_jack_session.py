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
SETTLE = 4 * SR  # after JACK skipped cycles its frames jump against Link's clock: 2 bars to re-fit
PATCH = "name: grid\ntempo: 120\nseed: 1\nstyle: [{text: test groove}]\nsampling: {temperature: 0.0}\n"


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
    state = peer.captureAppSessionState()
    frames, micros = np.array(pairs, dtype=np.float64).T
    frames = first_frame + (frames - first_frame + 2**31) % 2**32 - 2**31  # 32-bit frames unwrapped near the recording's start
    slope, intercept = np.polyfit(micros, frames, 1)  # JACK frames per Link microsecond, and where they meet
    errors, hits, after_xrun = [], [], 0
    for onset in onsets(audio):
        if onset < 480 or not recorded[onset - 480 : onset + 480].all():
            continue  # JACK skipped the recorder around it: its onset is a hole's edge
        frame = onset + first_frame
        if any(0 <= ((frame - x) & 0xFFFFFFFF) < SETTLE for x in xruns):
            after_xrun += 1  # JACK's frames jumped (a dummy server lost cycles): not the engine's to follow at once
            continue
        at = (frame - intercept) / slope  # Link micros of the recorded hit, roughly
        near = np.abs(micros - at) <= 1e6  # JACK's frames against Link's clock in the 2 s around it: a dummy
        local, offset = np.polyfit(micros[near], frames[near], 1)  # server's lose cycles in bursts, off any one line
        at = (frame - offset) / local
        beat = state.beatAtTime(round(at), QUANTUM)
        nearest = state.timeAtBeat(float(round(beat)), QUANTUM)
        errors.append((at - nearest) / 1e3)
        hits.append(onset)
    own = SR * 60 / OWN_BPM  # until the engine joins it plays its own session, at the patch's tempo
    gaps = np.diff(hits) / own
    moved = next((i + 1 for i, gap in enumerate(gaps) if abs(gap - round(gap)) * own > 96), len(hits))
    print(json.dumps({"returncode": engine.returncode, "errors_ms": errors, "moved": moved, "xruns": len(xruns),
                      "after_xrun": after_xrun,
                      "tempo": state.tempo(), "peers_seen": joined, "frames_per_us": slope,
                      "off_line_ms": float(np.abs(frames - (slope * micros + intercept)).max() / 48),
                      "clock_log": [line for line in stderr.splitlines() if "clock" in line.lower()],
                      "stderr_tail": stderr[-2000:]}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
