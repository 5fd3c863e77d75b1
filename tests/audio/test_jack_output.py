"""Live output through PortAudio to a real JACK server (dummy driver), recorded by a JACK client."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

jack_client = pytest.importorskip("jack", reason="JACK-Client is in the test extra")
from jackrec import Recorder  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def run_engine(patch: str, seconds: float, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "engine", "run", "--patch", patch, "--output", "jack", "--duration", str(seconds),
         "--connect", "recorder:in_1,recorder:in_2", *extra],
        cwd=REPO, capture_output=True, text=True, timeout=60, env=dict(os.environ),
    )


def test_jack_output_is_the_exact_stream_with_bars_where_the_timeline_says(jack, tmp_path) -> None:
    rec = Recorder(30.0)  # room for a slow start on a loaded machine
    with rec:
        proc = run_engine("patches/night-drive.yaml", 4.0)
        recorded = rec.buf[: rec.pos].copy()
    assert proc.returncode == 0, proc.stderr
    assert rec.pos < len(rec.buf), "the recording filled up before the engine stopped"
    ports = re.search(r"JACK ports \['backline:out_0', 'backline:out_1'\]", proc.stderr)
    assert ports, proc.stderr  # the client is named backline and its ports are ours
    # the test server runs --no-realtime: JACK decides its clients' priority, the engine only reports it
    assert "audio thread (jack, tid " in proc.stderr and ") runs at normal (JACK runs without real-time)" in proc.stderr
    # memory: all of it where the limits allow (root here has CAP_IPC_LOCK), else at least the C ring
    assert re.search(r"memory: (all locked \(mlockall\)|output ring locked)", proc.stderr), proc.stderr
    reference = tmp_path / "ref.wav"
    subprocess.run([sys.executable, "-m", "engine", "render", "--patch", "patches/night-drive.yaml", "--bars", "3",
                    "-o", str(reference)], cwd=REPO, check=True, capture_output=True)
    expected, _ = soundfile.read(reference, dtype="float32")
    # The first sample of bar 0 is the first non-silent recorded sample (the render's sample 0 is not silent).
    assert np.abs(expected[0]).max() > 0
    audible = np.flatnonzero(np.abs(recorded).max(axis=1) > 0)
    start, end = int(audible[0]), int(audible[-1])
    live = recorded[start : start + 4 * 48000 - 4800]  # up to the fade-out
    # No sample lost or duplicated across blocks: every recorded 256-sample block is the
    # exact next block of the offline render, except right where JACK itself reported an
    # xrun (a cycle the server skipped, under load on a 2-core machine).
    def find(block: np.ndarray) -> int | None:
        for o in np.flatnonzero(expected[:, 0] == block[0, 0]):
            if np.array_equal(expected[o : o + 256], block):
                return int(o)
        return None

    offset, jumps = -256, []
    for pos in range(0, min(len(live), len(expected)) - 256, 256):
        if offset >= 4 * 48000 - 4 * 256:
            break  # the fade-out begins at the requested duration
        block = live[pos : pos + 256]
        if np.array_equal(block, expected[offset + 256 : offset + 512]):
            offset += 256
            continue
        found = find(block)
        jumps.append(start + pos)  # a skipped cycle may also leave a partial block behind
        offset = found if found is not None else offset + 256
    assert offset > 3 * 48000 - 256 * 40
    for jump in jumps:
        assert any(abs(jump - p) <= 2048 for p in rec.xrun_positions), (jump, rec.xrun_positions)
    # Bar 1 begins where the timeline says, counted from the first sample (when no xrun came before it).
    bar1 = 126177
    if not any(start <= p <= start + bar1 for p in rec.xrun_positions):
        assert np.array_equal(recorded[start + bar1 : start + bar1 + 256], expected[bar1 : bar1 + 256])
    # xruns: the engine's count of the server's xruns agrees with JACK's own xrun callback
    # in our recorder while our audio ran (clients joining the graph cause xruns with the
    # dummy driver before we start). PortAudio's underflow flags coalesce, so they can
    # only be fewer.
    xruns_seen_by_jack = sum(start <= p <= end + 256 for p in rec.xrun_positions)
    portaudio, server = map(int, re.search(r"xruns (\d+) \(server (\d+)\)", proc.stderr.splitlines()[-1]).groups())
    near = [(p - start, p - end) for p in rec.xrun_positions if start - 48_000 <= p <= end + 48_000]  # (from start, from end)
    print(f"\nxruns: engine {server} (server), recorder {xruns_seen_by_jack} in the audible span; near it (from start, from end): {near}")
    assert abs(server - xruns_seen_by_jack) <= 1, (server, xruns_seen_by_jack, near)
    assert portaudio <= server


def test_missing_device_gives_one_clear_error(jack) -> None:
    proc = run_engine("patches/default.yaml", 1.0, "--device", "no-such-card")
    assert proc.returncode == 1
    assert "no jack output device matches 'no-such-card'" in proc.stderr
    assert "system" in proc.stderr and "--output wav:FILE" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_jack_not_running_gives_one_clear_error() -> None:
    env = dict(os.environ, JACK_DEFAULT_SERVER="nobody-runs-this", JACK_NO_START_SERVER="1")
    proc = subprocess.run([sys.executable, "-m", "engine", "run", "--patch", "patches/default.yaml", "--output", "jack",
                           "--duration", "1"], cwd=REPO, capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 1
    assert "JACK Audio Connection Kit is not available" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_alsa_output_reports_why_it_cannot_run_here() -> None:
    """ALSA needs /dev/snd, which this machine lacks: the engine must say so clearly."""
    if Path("/dev/snd").exists():
        pytest.skip("this machine has ALSA devices; the live ALSA path is exercised manually (README)")
    proc = subprocess.run([sys.executable, "-m", "engine", "run", "--patch", "patches/default.yaml", "--output", "alsa",
                           "--duration", "1"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "no alsa output device" in proc.stderr.lower() and "--output wav:FILE" in proc.stderr


def test_a_taken_client_name_still_routes_our_own_ports(jack) -> None:
    """JACK renames a second `backline` (backline-01); routing must find the renamed ports."""
    squatter = jack_client.Client("backline", no_start_server=True)
    rec = Recorder(30.0)
    try:
        with rec:
            proc = run_engine("patches/default.yaml", 1.0)
            recorded = rec.buf[: rec.pos].copy()
    finally:
        squatter.close()
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"JACK ports \['backline-\d+:out_0', 'backline-\d+:out_1'\]", proc.stderr), proc.stderr
    assert np.abs(recorded).max() > 0.01


@pytest.mark.parametrize("thaw", ["after the error", "never"])
def test_a_stalled_audio_server_ends_the_run_with_exit_1(thaw: str) -> None:
    """SIGSTOP on jackd stops our callbacks mid-show: the engine says so and exits 1, so systemd restarts it,
    even when the server never comes back (PortAudio's stop would wait for it forever).

    Its own server: freezing the module's shared one would disturb the other tests.
    """
    import signal
    import threading
    import time

    from jackserver import jack_server

    with jack_server() as name:
        jackd = int(subprocess.check_output(["pgrep", "-f", f"jackd -n {name} "]).split()[0])
        proc = subprocess.Popen([sys.executable, "-m", "engine", "run", "--patch", "patches/default.yaml", "--output",
                                 "jack", "--no-osc", "--no-midi", "--duration", "120"], cwd=REPO,
                                env={**os.environ, "JACK_DEFAULT_SERVER": name}, stderr=subprocess.PIPE, text=True)
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
        reader.start()
        deadline = time.monotonic() + 30
        while not any("playing default" in line for line in lines) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert any("playing default" in line for line in lines), "".join(lines)
        time.sleep(1.0)
        os.kill(jackd, signal.SIGSTOP)
        try:
            deadline = time.monotonic() + 15
            while proc.poll() is None and not any("no audio block" in line or "ended unexpectedly" in line
                                                  for line in lines) and time.monotonic() < deadline:
                time.sleep(0.1)
            if thaw == "never":
                assert proc.wait(timeout=30) == 1, "the run hung on a frozen server"
        finally:
            os.kill(jackd, signal.SIGCONT)
        assert proc.wait(timeout=30) == 1
        reader.join(timeout=5)
        assert any("no audio block" in line or "ended unexpectedly" in line for line in lines), "".join(lines)
