"""`backline run --generator remote` on JACK while its generator server is killed and restarted
(issue #17): the recorded output has no silent gap longer than the ring's crossfade, the
fallback (the synth) covers the outage, and the server's audio takes over again on a bar line.
The same when the server refuses the stage box's token: the fallback plays, the status says
why, and fixing the token file brings the server's audio in with no restart.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "clock"))
from jack_rx import receiver, wait_for  # noqa: E402

from engine.audio.ring import XFADE  # noqa: E402
from engine.render import render  # noqa: E402
from engine.generator.synth import SynthGenerator  # noqa: E402
from engine.patch import load_patch  # noqa: E402


def start_server(port: int, *extra: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "engine", "generator-server", "--listen", f"127.0.0.1:{port}", *extra],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert "generator-server" in (proc.stdout.readline() if proc.stdout else "")  # listening
    return proc


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def longest_silence(mono: np.ndarray) -> tuple[int, int]:
    """The longest run of samples at or below -80 dBFS: (length, where it starts)."""
    quiet = np.concatenate([[False], np.abs(mono) <= 1e-4, [False]])
    edges = np.flatnonzero(np.diff(quiet.astype(np.int8)))
    if not len(edges):
        return 0, 0
    runs = edges[1::2] - edges[::2]
    return int(runs.max()), int(edges[::2][np.argmax(runs)])


@pytest.mark.jack
def test_a_killed_server_is_covered_by_the_fallback_and_taken_back_on_a_bar_line(jack: str, tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    seconds = 14.0
    server = start_server(port)
    with receiver(jack, audio_seconds=seconds + 10) as rx:
        engine = subprocess.Popen(
            [sys.executable, "-m", "engine", "run", "--patch", "patches/default.yaml", "--output", "jack",
             "--connect", "bl-rx:in_1,bl-rx:in_2", "--generator", "remote", "--remote", f"ws://127.0.0.1:{port}",
             "--no-midi", "--no-osc", "--duration", str(seconds)],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
        try:
            wait_for(lambda: rx.audio_pos > 4 * 48000, timeout=30, what="4 s of audio")
            server.send_signal(signal.SIGKILL)
            server.wait(timeout=5)
            time.sleep(3.0)
            server = start_server(port)
            _, stderr = engine.communicate(timeout=seconds + 30)
        finally:
            engine.kill() if engine.poll() is None else None
            server.terminate()
            server.wait(timeout=10)
        audio = rx.audio[: rx.audio_pos].copy()
        recorded = rx.recorded[: rx.audio_pos].copy()
    assert engine.returncode == 0, stderr
    assert "generator remote unavailable" in stderr and "playing synth" in stderr, stderr
    back = [line for line in stderr.splitlines() if "generator remote is back: it plays from this bar line" in line]
    assert len(back) == 1, stderr
    assert "Traceback" not in stderr
    mono = audio.mean(axis=1)
    first, last = np.flatnonzero(np.abs(mono) > 1e-4)[[0, -1]]
    played = mono[first:last][recorded[first:last]]  # JACK's skipped cycles are holes in the recording, not ours
    patch = load_patch(REPO / "patches/default.yaml")
    render(patch, bars=6, output=tmp_path / "ref.wav", generator=SynthGenerator())
    import soundfile

    reference, _ = longest_silence(soundfile.read(tmp_path / "ref.wav", dtype="float32")[0].mean(axis=1))
    gap, where = longest_silence(played)
    print(f"\nremote killed 4 s in, back 3 s later: longest quiet run {gap} samples at {where / 48000:.2f} s (the "
          f"synth's own: {reference}); "
          + "; ".join(line.split(": ", 1)[-1] for line in stderr.splitlines() if "remote" in line)[:600])
    assert gap <= reference + XFADE, (gap, reference)
    stopped = next(line for line in stderr.splitlines() if "stopped:" in line)
    assert re.search(r"\| underruns 0 \|", stopped), stopped  # the look-ahead never ran dry: no bar replayed


@pytest.mark.jack
def test_a_delayed_jittery_stalling_link_plays_with_no_underrun_at_400_ms(jack: str) -> None:
    """20 ms +/- 10 ms each way, and a 300 ms stall every 3 s (a lost TCP segment): the 400 ms
    look-ahead covers it; the ring never runs dry and the fallback never plays."""
    from bench.delay_proxy import DelayProxy

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = start_server(port)
    try:
        with DelayProxy(("127.0.0.1", port), delay_ms=20, jitter_ms=10, stall_ms=300, stall_every_s=3.0) as proxy:
            engine = subprocess.run(
                [sys.executable, "-m", "engine", "run", "--patch", "patches/default.yaml", "--output", "jack",
                 "--generator", "remote", "--remote", f"ws://127.0.0.1:{proxy.port}", "--lookahead-ms", "400",
                 "--no-midi", "--no-osc", "--duration", "12"],
                cwd=REPO, capture_output=True, text=True, timeout=60, env=dict(os.environ))
            stalls = proxy.stalls
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert engine.returncode == 0, engine.stderr
    stopped = next(line for line in engine.stderr.splitlines() if "stopped:" in line)
    print(f"\ndelayed link, {stalls} stalls of 300 ms: {stopped.split('stopped: ')[1]}")
    assert stalls >= 3
    assert re.search(r"\| underruns 0 \|", stopped), stopped
    assert "unavailable" not in engine.stderr, engine.stderr  # the fallback never played


@pytest.mark.jack
def test_a_refused_token_plays_the_fallback_and_a_fixed_token_file_takes_over_without_a_restart(
        jack: str, tmp_path: Path) -> None:
    """A wrong token file on the stage box: `backline run` keeps playing (the synth fallback),
    says once that the server refused the token, tells systemd it is READY (else the start
    timeout would restart it in a loop), and `/backline/status` and `GET /status` name the
    refusal. The right token written into the file is read at the next retry, and the server's
    audio takes over on a bar line, with no restart and no silence longer than the synth's own."""
    from engine.service.health import StatusUnavailable, query_http, query_osc

    sys.path.insert(0, str(REPO / "tests" / "service"))
    from notify_fake import NotifySocket

    port, osc, web = free_port(), free_port(socket.SOCK_DGRAM), free_port()
    secret, stage = tmp_path / "server-token", tmp_path / "stage-token"
    secret.write_text("r1ght-t0ken\n")
    stage.write_text("wr0ng-t0ken\n")
    url = f"ws://127.0.0.1:{port}"
    server = start_server(port, "--token-file", str(secret))
    notify = NotifySocket(str(tmp_path / "notify.sock"))
    log = tmp_path / "engine.log"
    took: dict[str, float] = {}
    with receiver(jack, audio_seconds=60) as rx, log.open("w") as err:
        engine = subprocess.Popen(
            [sys.executable, "-m", "engine", "run", "--patch", "patches/default.yaml", "--output", "jack",
             "--connect", "bl-rx:in_1,bl-rx:in_2", "--generator", "remote", "--remote", url,
             "--remote-token-file", str(stage), "--no-midi", "--osc-port", str(osc), "--web-port", str(web),
             "--duration", "50"],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=err, text=True,
            env={**os.environ, "NOTIFY_SOCKET": notify.name})
        try:
            def status() -> dict:
                try:
                    return query_http(f"http://127.0.0.1:{web}/status", timeout_s=3)
                except StatusUnavailable:  # not listening yet
                    return {}

            wait_for(lambda: engine.poll() is not None or status().get("fallback_frames", 0) > 50, timeout=30,
                     what="2 s of the fallback")
            assert engine.poll() is None, log.read_text()  # still playing: a refused token does not stop the show
            ready = next((d for d in iter(lambda: notify.receive(10), None) if "READY" in d), None)
            assert ready is not None and ready["READY"] == "1", log.read_text()
            assert ready["STATUS"].startswith(f"playing the fallback: generator server {url} refused the token"), ready
            osc_status = query_osc("127.0.0.1", osc, timeout_s=3)
            http_status = status()
            assert osc_status["generator_state"] == "refused", osc_status  # what `backline status` prints
            assert osc_status["generator_error"] == http_status["generator_error"], osc_status
            assert http_status["generator_state"] == "refused" and http_status["generator_error"] == (
                f"generator server {url} refused the token (the token file {stage}): wrong or missing token"), http_status
            assert http_status["fallback_frames"] > 50, http_status
            stage.write_text("r1ght-t0ken\n")  # fixed while the show plays
            fixed = time.monotonic()
            wait_for(lambda: status()["generator_state"] == "ready",
                     timeout=20, what="the server's session with the fixed token")
            took["session"] = time.monotonic() - fixed

            def fallback_stopped() -> bool:
                before = status()["fallback_frames"]
                time.sleep(1.0)
                return status()["fallback_frames"] == before

            wait_for(fallback_stopped, timeout=10, what="the server's audio instead of the fallback")
            took["audio"] = time.monotonic() - fixed
            assert query_osc("127.0.0.1", osc, timeout_s=3)["generator_state"] == "ready"
            time.sleep(2.0)  # a bar of the server's audio in the recording
            engine.send_signal(signal.SIGTERM)
            engine.wait(timeout=30)
        finally:
            engine.kill() if engine.poll() is None else None
            server.terminate()
            server.wait(timeout=10)
            notify.close()
        audio = rx.audio[: rx.audio_pos].copy()
        recorded = rx.recorded[: rx.audio_pos].copy()
    stderr = log.read_text()
    assert engine.returncode == 0, stderr
    assert "Traceback" not in stderr and "wr0ng-t0ken" not in stderr and "r1ght-t0ken" not in stderr, stderr
    loud = [line for line in stderr.splitlines() if "REFUSED THE TOKEN" in line]
    assert len(loud) == 1 and url in loud[0] and str(stage) in loud[0], stderr
    back = [line for line in stderr.splitlines() if "generator remote is back: it plays from this bar line" in line]
    assert len(back) == 1, stderr
    mono = audio.mean(axis=1)
    first, last = np.flatnonzero(np.abs(mono) > 1e-4)[[0, -1]]
    played = mono[first:last][recorded[first:last]]
    assert np.sqrt(np.mean(played[: 2 * 48000] ** 2)) > 0.01  # the fallback plays from the start, not silence
    import soundfile

    render(load_patch(REPO / "patches/default.yaml"), bars=6, output=tmp_path / "ref.wav", generator=SynthGenerator())
    reference, _ = longest_silence(soundfile.read(tmp_path / "ref.wav", dtype="float32")[0].mean(axis=1))
    gap, where = longest_silence(played)
    print(f"\nrefused token: {ready['STATUS']}; fixed file: session after {took['session']:.1f} s, server's audio "
          f"after {took['audio']:.1f} s; longest quiet run {gap} samples at {where / 48000:.2f} s (the synth's own: "
          f"{reference}); {len(played) / 48000:.1f} s recorded")
    assert gap <= reference + XFADE, (gap, reference)
