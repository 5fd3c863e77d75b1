"""Service start-up: time from process start to `READY=1` (audio flowing, generator warm).

    python -m bench --only service

Each run starts `backline serve` as a fresh process with the `synth` generator and a
real-time WAV sink (no sound card here), with `$NOTIFY_SOCKET` pointing at a datagram
socket this bench reads, exactly as systemd would. The clock starts just before the
process is spawned, so the figure includes the Python interpreter and every import.
`magenta` start-up with a warm compilation cache needs a GPU box: not measured here.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import Row
from bench.timing import spread

REPO = Path(__file__).resolve().parents[1]


def _ready_after(work: Path, *, timeout_s: float = 60.0) -> float:
    """Seconds from spawn to READY=1 for one fresh `backline serve`."""
    sock_path = work / "notify.sock"
    sock_path.unlink(missing_ok=True)
    config = work / "config.yaml"
    config.write_text(
        f"output: wav:{work / 'out.wav'}\npatch: {REPO / 'patches/default.yaml'}\nstate_file: {work / 'state.json'}\n"
        f"cache_dir: {work / 'cache'}\nosc: {{enabled: false}}\nmidi: {{enabled: false}}\nfade_s: 0.05\n")
    env = {**os.environ, "NOTIFY_SOCKET": str(sock_path), "PYTHONPATH": str(REPO)}
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(sock_path))
        sock.settimeout(timeout_s)
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "engine", "serve", "--config", str(config)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while True:
                message = sock.recv(4096).decode()
                if "READY=1" in message.split("\n"):
                    return time.perf_counter() - start
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)


def rows(quick: bool) -> list[Row]:
    runs = 3 if quick else 7
    with tempfile.TemporaryDirectory(prefix="backline-bench-") as tmp:
        times = [_ready_after(Path(tmp)) for _ in range(runs)]
    median, note = spread(times)
    return [Row("service.time_to_ready@synth", round(median, 2), "s",
                f"process start -> READY=1, synth, WAV sink; {note}")]
