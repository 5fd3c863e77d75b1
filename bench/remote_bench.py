"""The remote generator's cost (issue #17): what a network hop adds to a generator call.

A `backline generator-server --generator synth` in its own process on loopback; the stage-box
side is `RemoteGenerator`, called as the scheduler calls it (2 frames, 80 ms of audio, a call).
Side by side in one run: the synth in-process (the reference), the same synth through the
server directly, and through `bench/delay_proxy.py` at 20 ms +/- 10 ms each way (no stalls).
Figures are per call: p50 and p99 of the wall time, over several rounds; the server's CPU
(its process's user + system time) per second of audio it generated. Then the live engine
(`backline run --output jack` on a dummy JACK server) through the proxy at 20 ms each way
and growing jitter, at 200 and 400 ms look-ahead: the largest jitter it played with 0
underruns and no fallback.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bench import Row
from bench.delay_proxy import DelayProxy
from engine.conditioning import FrameConditioning, masked_notes
from engine.generator.remote import RemoteGenerator
from engine.generator.synth import SynthGenerator
from engine.style.embedder import HashEmbedder
from engine.units import FRAME_SAMPLES, SAMPLE_RATE

REPO = Path(__file__).resolve().parents[1]
JITTERS_MS = (0, 10, 20, 40, 80)
CALL = 2  # frames a call, as the scheduler asks


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _times_ms(generator, calls: int, frames_per_call: int = CALL) -> np.ndarray:  # type: ignore[no-untyped-def]
    frames = [FrameConditioning(HashEmbedder().embed_text("bench"), masked_notes()) for _ in range(frames_per_call)]
    out = []
    for _ in range(calls):
        t0 = time.perf_counter()
        generator.generate(frames)
        out.append((time.perf_counter() - t0) * 1e3)
    return np.array(out)


def _live_run(url: str, lookahead_ms: int, seconds: float) -> tuple[int, int]:
    """`backline run` through `url` on the JACK server in $JACK_DEFAULT_SERVER: (underruns, fallback chunks logged)."""
    run = subprocess.run([sys.executable, "-m", "engine", "run", "--patch", "patches/default.yaml", "--output", "jack",
                          "--generator", "remote", "--remote", url, "--lookahead-ms", str(lookahead_ms), "--no-midi",
                          "--no-osc", "--duration", str(seconds)], cwd=REPO, capture_output=True, text=True, timeout=120)
    stopped = next((line for line in run.stderr.splitlines() if "stopped:" in line), "")
    found = re.search(r"\| underruns (\d+) \|", stopped)
    return (int(found.group(1)) if found else -1), run.stderr.count("unavailable")


def jitter_rows(port: int, quick: bool) -> list[Row]:
    sys.path.insert(0, str(REPO / "tests"))
    from jackserver import jack_server  # the tests' JACK starter (one copy)

    seconds = 6.0 if quick else 10.0
    out = []
    with jack_server() as name:
        os.environ["JACK_DEFAULT_SERVER"] = name
        for lookahead in (200, 400):
            played, tried = None, []
            for jitter in JITTERS_MS:
                with DelayProxy(("127.0.0.1", port), delay_ms=20, jitter_ms=jitter, stall_ms=0, stall_every_s=1e9) as proxy:
                    underruns, fallbacks = _live_run(f"ws://127.0.0.1:{proxy.port}", lookahead, seconds)
                tried.append(f"+/-{jitter} ms: {underruns} underruns, {fallbacks} fallback lines")
                if underruns != 0 or fallbacks:
                    break
                played = jitter
            out.append(Row(f"remote.max_jitter@{lookahead}ms", "none" if played is None else played, "ms",
                           f"largest jitter (uniform, each way, on 20 ms each way) played {seconds:g} s with 0 "
                           f"underruns and no fallback, 2 frames a call; tried " + "; ".join(tried)))
    return out


def rows(quick: bool) -> list[Row]:
    calls, rounds = (50, 2) if quick else (300, 3)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "engine", "generator-server", "--listen", f"127.0.0.1:{port}",
                               "--max-sessions", "2"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert server.stdout is not None and re.search(r"ws://", server.stdout.readline())
        results: dict[str, list[np.ndarray]] = {"local": [], "loopback": [], "delayed": [], "delayed_8": []}
        cpu_ms_per_s: list[float] = []
        with DelayProxy(("127.0.0.1", port), delay_ms=20, jitter_ms=10, stall_ms=0, stall_every_s=1e9) as proxy:
            for _ in range(rounds):
                results["local"].append(_times_ms(SynthGenerator(), calls))
                for name, url in (("loopback", f"ws://127.0.0.1:{port}"), ("delayed", f"ws://127.0.0.1:{proxy.port}")):
                    remote = RemoteGenerator(url, deadline_s=5.0)
                    try:
                        if not remote.wait_ready(10):
                            raise RuntimeError(f"no session at {url}: {remote.last_error}")
                        _times_ms(remote, 5)  # warm
                        cpu = _cpu_s(server.pid)
                        results[name].append(_times_ms(remote, calls))
                        if name == "loopback":
                            cpu_ms_per_s.append((_cpu_s(server.pid) - cpu) * 1e3 / (calls * CALL * FRAME_SAMPLES / SAMPLE_RATE))
                        else:  # a slow link: more frames a call, so a round trip carries more audio
                            results["delayed_8"].append(_times_ms(remote, calls // 4, frames_per_call=8))
                    finally:
                        remote.close()
        try:
            jitter = jitter_rows(port, quick)
        except Exception as err:  # noqa: BLE001 - no jackd here: the other rows still count
            jitter = [Row("remote.max_jitter", "n/a", "", f"needs jackd: {err}")]
    finally:
        server.terminate()
        server.wait(timeout=10)
    out = []
    local = np.concatenate(results["local"])
    for name in ("local", "loopback", "delayed"):
        per_round = [f"{np.percentile(r, 50):.2f}/{np.percentile(r, 99):.2f}" for r in results[name]]
        joined = np.concatenate(results[name])
        what = {"local": "the synth in-process (the reference)", "loopback": "through the server on loopback",
                "delayed": "through the server and a 20 +/- 10 ms proxy each way"}[name]
        out.append(Row(f"remote.call_p50@{name}", round(float(np.percentile(joined, 50)), 3), "ms",
                       f"{what}; {CALL} frames a call, {calls} calls x {rounds} rounds; p50/p99 by round: {', '.join(per_round)}"))
        out.append(Row(f"remote.call_p99@{name}", round(float(np.percentile(joined, 99)), 3), "ms", what))
    for name in ("loopback", "delayed"):
        added = (np.percentile(np.concatenate(results[name]), 50) - np.percentile(local, 50)) / CALL
        out.append(Row(f"remote.added_per_frame@{name}", round(float(added), 3), "ms",
                       f"p50 call time over the in-process synth's, per frame ({name})"))
    for name, frames in (("delayed", CALL), ("delayed_8", 8)):
        speed = frames * FRAME_SAMPLES / SAMPLE_RATE * 1e3 / np.percentile(np.concatenate(results[name]), 50)
        out.append(Row(f"remote.realtime@{name}", round(float(speed), 2), "x real time",
                       f"audio per p50 call through the 20 +/- 10 ms proxy at {frames} frames a call "
                       f"(--frames-per-call {frames}): one request in flight, so a round trip a call"))
    out.append(Row("remote.server_cpu", round(float(np.median(cpu_ms_per_s)), 2), "ms CPU / s audio",
                   f"the server process (synth session, loopback), median of {rounds} rounds: "
                   + ", ".join(f"{c:.1f}" for c in cpu_ms_per_s)))
    return out + jitter
