"""`--generator remote` against a real `backline generator-server` (issue #17), over loopback
WebSocket: the render is the local synth's bit for bit, rollback lands through it, prompts are
embedded by the server's style model, and hostile clients leave a session playing."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import soundfile

from engine.automation import TimedEvent
from engine.errors import GeneratorError, GeneratorUnavailable
from engine.generator import create_generator
from engine.generator.remote import server_status
from engine.generator.synth import SynthGenerator
from engine.params import ControlEvent
from engine.patch import load_patch
from engine.remote import protocol as p
from engine.render import render
from engine.style.embedder import HashEmbedder
from engine.timeline import Timeline

REPO = Path(__file__).resolve().parents[2]


@contextmanager
def server(*extra: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """`backline generator-server` in its own process on a free loopback port; its ws:// URL."""
    proc = subprocess.Popen([sys.executable, "-m", "engine", "generator-server", "--listen", "127.0.0.1:0", *extra],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        found = re.search(r"wss?://127\.0\.0\.1:(\d+)", line)
        assert found, (line, proc.stderr.read() if proc.poll() is not None else "")  # type: ignore[union-attr]
        yield f"ws://127.0.0.1:{found.group(1)}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def rendered(tmp_path: Path, name: str, generator, automation=(), bars: int = 4):  # type: ignore[no-untyped-def]
    patch = load_patch(REPO / "patches/default.yaml")
    try:
        result = render(patch, bars=bars, output=tmp_path / f"{name}.wav", generator=generator, automation=list(automation),
                        ready_timeout_s=20)
    finally:
        generator.close()
    return result, soundfile.read(tmp_path / f"{name}.wav", dtype="float32", always_2d=True)[0]


def test_the_cli_render_through_a_generator_server_is_the_synth_render_bit_for_bit(tmp_path: Path) -> None:
    with server() as url:
        for name, extra in (("remote", ["--generator", "remote", "--remote", url]), ("synth", [])):
            proc = subprocess.run([sys.executable, "-m", "engine", "render", "--patch", "patches/default.yaml",
                                   "--bars", "4", "-o", str(tmp_path / f"{name}.wav"), *extra],
                                  cwd=REPO, capture_output=True, text=True, timeout=120)
            assert proc.returncode == 0, proc.stderr
    remote = soundfile.read(tmp_path / "remote.wav", dtype="float32")[0]
    local = soundfile.read(tmp_path / "synth.wav", dtype="float32")[0]
    assert len(remote) == Timeline.start(120, 4).bar_start(4)
    np.testing.assert_array_equal(remote, local)


def test_a_bar_change_inside_the_lookahead_lands_on_its_bar_through_the_server(tmp_path: Path) -> None:
    """Style change quantized to bar 3, sent 100 ms before its line (its audio generated): the
    server restores its snapshot and generates again; the file is the local synth's with the
    same change, and differs from the unchanged render from bar 3's first frame, never before."""
    change = [TimedEvent(1, Fraction(19, 5), ControlEvent("style.0.weight", 0.2, quantize="bar"))]  # bar 2, beat 4.8
    with server() as url:
        result, remote = rendered(tmp_path, "remote", create_generator("remote", url=url), change)
        _, plain = rendered(tmp_path, "plain", create_generator("remote", url=url))
    _, local = rendered(tmp_path, "local", SynthGenerator(), change)
    assert result.rollbacks >= 1
    np.testing.assert_array_equal(remote, local)
    differ = np.flatnonzero(np.any(remote != plain, axis=1))
    bar3 = result.bar_starts[2]
    assert bar3 <= differ[0] < bar3 + 2000, (differ[0], bar3)  # in bar 3's first frame (the synth's mix glides in)
    np.testing.assert_array_equal(remote[:bar3], plain[:bar3])


def test_prompts_are_embedded_by_the_servers_style_model(tmp_path: Path) -> None:
    from engine.generator.remote import RemoteGenerator

    wav = tmp_path / "prompt.wav"
    t = np.arange(48000 * 3) / 48000
    soundfile.write(wav, 0.3 * np.sin(2 * np.pi * 220 * t), 48000, subtype="FLOAT")
    with server() as url:
        generator = RemoteGenerator(url)
        try:
            embedder = generator.style_model()
            text = embedder.embed_text("warm analog pad")
            audio = embedder.embed_audio(wav, start=0.5, duration=2.0)
            assert embedder.version == "remote/hash-1"
        finally:
            generator.close()
    local = HashEmbedder()
    np.testing.assert_array_equal(text, local.embed_text("warm analog pad"))
    np.testing.assert_allclose(audio, local.embed_audio(wav, start=0.5, duration=2.0), atol=1e-6)


def one_frame(n: int = 1) -> list:
    from engine.conditioning import FrameConditioning, masked_notes

    return [FrameConditioning(HashEmbedder().embed_text("a"), masked_notes()) for _ in range(n)]


def assert_plays(url: str) -> None:
    """A session at `url` answers two frames of audio."""
    generator = create_generator("remote", url=url)
    try:
        assert generator.wait_ready(10), generator.last_error
        assert generator.generate(one_frame(2)).shape == (3840, 2)
    finally:
        generator.close()


def hello(url: str, token: str | None = None) -> tuple[object, p.Message]:
    from websockets.sync.client import connect

    ws = connect(url, open_timeout=5, legacy=True)
    ws.send(p.pack_json(p.HELLO, {"version": p.VERSION, "token": token or "", "pcm": "f32"}))
    return ws, p.unpack(ws.recv(timeout=5))


def test_a_wrong_token_is_refused_before_any_model_work(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    with server("--token-file", str(token)) as url:
        for wrong in (None, "guess"):
            ws, answer = hello(url, wrong)
            assert answer.kind == p.ERROR and "token" in answer.json()["error"]
            ws.close()
        generator = create_generator("remote", url=url)  # the client's side: refused, its fallback plays
        try:
            t0 = time.monotonic()
            assert not generator.wait_ready(10.0)
            assert time.monotonic() - t0 < 5.0  # gives up on a refused token at once, not after the timeout
            assert generator.state == "refused" and generator.refused == generator.last_error
            assert f"generator server {url} refused the token (no token" in (generator.refused or "")
            with pytest.raises(GeneratorUnavailable, match="refused the token"):
                generator.generate(one_frame(2))
        finally:
            generator.close()
        _, audio = rendered(tmp_path, "ok", create_generator("remote", url=url, token_file=str(token)), bars=1)
        assert np.abs(audio).max() > 0.05


def test_a_refused_token_file_is_read_again_at_each_retry(tmp_path: Path) -> None:
    """A wrong token file at start: refused (the fallback would play), retried with backoff, not
    spun; once the right token is written into the file, the next retry takes it, no restart."""
    token, wrong = tmp_path / "token", tmp_path / "stage-token"
    token.write_text("s3cret\n")
    wrong.write_text("guess\n")
    with server("--token-file", str(token)) as url:
        generator = create_generator("remote", url=url, token_file=str(wrong))
        try:
            assert not generator.wait_ready(5.0)
            assert generator.health()["state"] == "refused"
            assert generator.refused == (f"generator server {url} refused the token (the token file {wrong}): "
                                         "wrong or missing token")
            time.sleep(2.0)
            refusals = server_status(url, token="s3cret", timeout=5)["refused"]
            assert 2 <= refusals <= 6, refusals  # retried with backoff (0.2, 0.4, 0.8 s...), never spun
            wrong.write_text("s3cret\n")
            t0 = time.monotonic()
            while generator.state != "ready" and time.monotonic() - t0 < 15:
                time.sleep(0.05)
            print(f"\n{refusals} refusals in 2 s; the fixed token file was taken {time.monotonic() - t0:.1f} s after "
                  "it was written")
            assert generator.wait_ready(5.0), generator.last_error
            assert generator.refused is None and generator.generate(one_frame(2)).shape == (2 * 1920, 2)
        finally:
            generator.close()


def test_a_render_with_a_refused_token_fails_in_one_line(tmp_path: Path) -> None:
    """Offline there is nothing to fall back for: `backline render` says the server refused the
    token, naming the server and the token file (never the token), and exits 1 at once."""
    token, wrong = tmp_path / "token", tmp_path / "stage-token"
    token.write_text("s3cret\n")
    wrong.write_text("n0t-the-t0ken\n")
    with server("--token-file", str(token)) as url:
        t0 = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "engine", "render", "--patch", "patches/default.yaml", "--bars", "2",
                               "-o", str(tmp_path / "out.wav"), "--generator", "remote", "--remote", url,
                               "--remote-token-file", str(wrong)],
                              cwd=REPO, capture_output=True, text=True, timeout=60)
        took = time.monotonic() - t0
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    assert proc.stderr.strip().splitlines() == [
        f"error: generator server {url} refused the token (the token file {wrong}): wrong or missing token"], proc.stderr
    assert "n0t-the-t0ken" not in proc.stderr and "s3cret" not in proc.stderr
    assert not (tmp_path / "out.wav").exists() and took < 30, took


def test_a_render_against_an_unreachable_server_fails_in_one_line_within_seconds(tmp_path: Path) -> None:
    """Nothing listens at the URL: `backline render` gives up after a few connection tries (it
    used to wait out its 900 s ready timeout) and exits 1 with one line naming the server and why."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"ws://127.0.0.1:{port}"
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "engine", "render", "--patch", "patches/default.yaml", "--bars", "2",
                           "-o", str(tmp_path / "out.wav"), "--generator", "remote", "--remote", url],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    took = time.monotonic() - t0
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and re.fullmatch(rf"error: cannot reach {re.escape(url)}: .*Connection refused.* "
                                            rf"\(gave up after 4 tries in \d+\.\d s\)", lines[0]), proc.stderr
    assert not (tmp_path / "out.wav").exists() and took < 15, took
    print(f"\nunreachable render: exit 1 after {took:.1f} s: {lines[0]}")


def test_prompts_embedded_with_a_refused_token_answer_from_the_cache_or_the_stand_in(tmp_path: Path, caplog) -> None:
    """The style model's connection refused the token: a prompt the server embedded before answers
    from the cache, another gets the hash stand-in (kept to embed again), and nothing raises;
    once the token file is right, the server embeds it."""
    from engine.generator.remote import RemoteGenerator

    token, stage = tmp_path / "token", tmp_path / "stage-token"
    token.write_text("s3cret\n")
    stage.write_text("s3cret\n")
    with server("--token-file", str(token)) as url:
        generator = RemoteGenerator(url, token_file=stage)
        try:
            first = generator.style_model(cache_dir=tmp_path).embed_text("dusty breakbeat")
            stage.write_text("rotated\n")
            embedder = generator.style_model(cache_dir=tmp_path)
            np.testing.assert_array_equal(embedder.embed_text("dusty breakbeat"), first)
            stand_in = embedder.embed_text("never seen")
            np.testing.assert_array_equal(stand_in, HashEmbedder().embed_text("never seen"))
            assert embedder.take_stand_ins() == {"never seen"} and len(list((tmp_path / "remote").glob("*.npy"))) == 1
            stage.write_text("s3cret\n")
            embedder.embed_text("never seen")
        finally:
            generator.close()
    assert len(list((tmp_path / "remote").glob("*.npy"))) == 2  # the server's answer, kept
    assert embedder.version.startswith("remote/")
    assert f"refused the token (the token file {stage})" in caplog.text
    assert "PROMPT 'never seen' GETS THE HASH STAND-IN" in caplog.text and "rotated" not in caplog.text


def test_a_server_beyond_loopback_needs_a_token() -> None:
    proc = subprocess.run([sys.executable, "-m", "engine", "generator-server", "--listen", "0.0.0.0:0"],
                          cwd=REPO, capture_output=True, text=True, timeout=60, env={**os.environ, "BACKLINE_GENERATOR_TOKEN": ""})
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("error: listening on 0.0.0.0 needs a token"), proc.stderr
    assert "Traceback" not in proc.stderr


def test_hostile_clients_leave_another_session_playing(tmp_path: Path) -> None:
    """While a render plays through the server, other clients send garbage, a text frame, a
    foreign header, a newer version, conditioning out of range, a wrong token, or connect and
    say nothing (slow): each is answered or dropped, the server serves on, and the render is
    the local synth's bit for bit."""
    import threading

    from websockets.sync.client import connect

    done: list[object] = []
    with server("--max-sessions", "4") as url:
        def play() -> None:
            done.append(rendered(tmp_path, "remote", create_generator("remote", url=url), bars=6)[1])

        player = threading.Thread(target=play)
        player.start()
        slow = connect(url, open_timeout=5, legacy=True)  # says nothing: dropped after the hello timeout
        answers = []
        good_hello = p.pack_json(p.HELLO, {"version": p.VERSION, "pcm": "f32"})
        for payload in (os.urandom(200), "text frame", b"XXXX" + bytes(20), p.pack(p.HELLO)[:4] + b"\x09" + bytes(19),
                        good_hello, p.pack(p.GENERATE, b"\x00" * 10, count=1)):
            ws = connect(url, open_timeout=5, legacy=True)
            try:
                if payload is good_hello:  # a session, then conditioning of the wrong size
                    ws.send(payload)
                    assert p.unpack(ws.recv(timeout=5)).kind == p.WELCOME
                    payload = p.pack(p.GENERATE, b"\xff" * 3300, count=1)
                ws.send(payload)
                answers.append(p.unpack(ws.recv(timeout=5)).json()["error"])
            finally:
                ws.close()
        player.join(timeout=120)
        slow.close()
    assert done, "the render did not finish"
    _, local = rendered(tmp_path, "local", SynthGenerator(), bars=6)
    np.testing.assert_array_equal(done[0], local)
    assert len(answers) == 6 and all(a.startswith("malformed") for a in answers), answers


def test_an_unreachable_server_is_unavailable_at_once_then_joined_when_it_comes_up() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    generator = create_generator("remote", url=f"ws://127.0.0.1:{port}")
    try:
        t0 = time.monotonic()
        with pytest.raises(GeneratorUnavailable):
            generator.generate(one_frame(2))
        assert time.monotonic() - t0 < 0.1  # never waits: the fallback plays
        assert not generator.wait_ready(0.5)
        proc = subprocess.Popen([sys.executable, "-m", "engine", "generator-server", "--listen", f"127.0.0.1:{port}"],
                                cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            assert generator.wait_ready(30.0), generator.last_error
            assert generator.generate(one_frame(2)).shape == (2 * 1920, 2)
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    finally:
        generator.close()


def test_bad_remote_options_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(GeneratorError, match="needs a server"):
        create_generator("remote")
    with pytest.raises(GeneratorError, match="ws:// or wss://"):
        create_generator("remote", url="http://x")
    with pytest.raises(GeneratorError, match="token file .*missing"):
        create_generator("remote", url="ws://127.0.0.1:1", token_file=str(tmp_path / "missing"))
    proc = subprocess.run([sys.executable, "-m", "engine", "render", "--patch", "patches/default.yaml", "-o",
                           str(tmp_path / "x.wav"), "--generator", "remote"], cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "error: the remote generator needs a server: --remote ws://HOST:PORT " \
                                                   "(config: options: {url: ...})"


def test_int16_pcm_halves_the_bytes_at_16_bit_noise(tmp_path: Path) -> None:
    with server() as url:
        _, i16 = rendered(tmp_path, "i16", create_generator("remote", url=url, pcm="i16"), bars=2)
    _, local = rendered(tmp_path, "local", SynthGenerator(), bars=2)
    error = i16 - local
    rms = float(np.sqrt(np.mean(error**2))) * 32767
    print(f"\ni16 PCM: error {rms:.2f} LSB rms, {np.abs(error).max() * 32767:.1f} LSB at most (after the stretch)")
    # 16-bit rounding is 0.29 LSB rms (so it measures with fit: resample); the stretcher's phase
    # estimates are not linear in their input, and spread it to about 4 LSB rms (-78 dBFS)
    assert 0 < rms < 8.0
    assert np.abs(error).max() < 100 / 32767  # no glitch: -50 dBFS at the very most


def test_backline_status_lists_the_servers_sessions() -> None:
    with server("--max-sessions", "2") as url:
        generator = create_generator("remote", url=url)
        try:
            assert generator.wait_ready(10)
            generator.generate(one_frame(4))
            proc = subprocess.run([sys.executable, "-m", "engine", "status", "--server", url, "--json"], cwd=REPO,
                                  capture_output=True, text=True, timeout=60)
        finally:
            generator.close()
        assert proc.returncode == 0, proc.stderr
        import json

        status = json.loads(proc.stdout)
        assert status["max_sessions"] == 2 and len(status["sessions"]) == 1
        session = status["sessions"][0]
        assert session["frames"] == 4 and session["generator"] == "synth" and session["ms_per_frame"] > 0
    gone = subprocess.run([sys.executable, "-m", "engine", "status", "--server", url], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert gone.returncode == 1 and gone.stderr.startswith(f"error: no generator server answers at {url}")


def test_the_server_tells_systemd_it_is_ready_and_feeds_the_watchdog_through_its_own_socket(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO / "tests" / "service"))
    from notify_fake import NotifySocket

    notify = NotifySocket(str(tmp_path / "notify.sock"))
    try:
        with server(env={"NOTIFY_SOCKET": notify.name, "WATCHDOG_USEC": "1000000"}):
            ready = notify.receive(10)
            assert ready is not None and ready.get("READY") == "1" and "serving synth" in ready["STATUS"], ready
            beats = [notify.receive(5) for _ in range(3)]  # every half interval: 0.5 s
            assert all(b is not None and b.get("WATCHDOG") == "1" and "0 of 1 session(s)" in b["STATUS"] for b in beats), beats
    finally:
        notify.close()


def test_a_server_that_stops_answering_is_given_up_on_after_the_deadline() -> None:
    """A server that says welcome and then never answers (a hung GPU process, a black-holed
    link): generate() gives up after its deadline, so the scheduler plays its fallback, and the
    client reconnects."""
    import threading

    from websockets.sync.server import serve

    asked = threading.Event()

    def mute(ws) -> None:  # type: ignore[no-untyped-def]
        ws.recv(timeout=5)
        ws.send(p.pack_json(p.WELCOME, {"version": p.VERSION, "generator": "mute", "audio_lead": 0}))
        while p.unpack(ws.recv(timeout=10)).kind == p.READY:
            ws.send(p.pack(p.READIED, value=1))
        asked.set()  # a GENERATE: never answered
        time.sleep(3)

    with serve(mute, "127.0.0.1", 0) as mute_server:
        threading.Thread(target=mute_server.serve_forever, daemon=True).start()
        url = f"ws://127.0.0.1:{mute_server.socket.getsockname()[1]}"
        generator = create_generator("remote", url=url, deadline_s=0.5)
        try:
            assert generator.wait_ready(5)
            t0 = time.monotonic()
            with pytest.raises(GeneratorUnavailable, match="no answer within 0.5 s"):
                generator.generate(one_frame(2))
            assert asked.is_set() and 0.5 <= time.monotonic() - t0 < 1.5
            assert generator.state in ("restarting", "ready")  # the connector is at it again
        finally:
            generator.close()
        mute_server.shutdown()


def test_a_stage_config_plays_the_remote_generator(tmp_path: Path) -> None:
    from engine.service.config import load_config

    token = tmp_path / "token"
    token.write_text("t0k3n\n")
    config = tmp_path / "config.yaml"
    config.write_text(f"generator: {{name: remote, options: {{url: 'ws://127.0.0.1:1', token_file: {token}}}}}\n")
    loaded = load_config(config, environ={})
    assert loaded.generator == "remote" and loaded.generator_options["url"] == "ws://127.0.0.1:1"
    generator = create_generator(loaded.generator, **loaded.generator_options)
    try:
        assert generator._token == "t0k3n"  # noqa: SLF001 - read from the file the config names
    finally:
        generator.close()


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    import shutil

    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed (apt-get install openssl; .ci/setup does)")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True)
    return cert, key


def test_tls_serves_wss_to_a_client_that_trusts_its_certificate_only(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    with server("--tls-cert", str(cert), "--tls-key", str(key)) as url:
        secure = url.replace("ws://", "wss://")
        _, audio = rendered(tmp_path, "tls", create_generator("remote", url=secure, ca=str(cert)), bars=2)
        untrusting = create_generator("remote", url=secure)  # the system's CAs do not know this certificate
        try:
            assert not untrusting.wait_ready(1.0)
            assert "CERTIFICATE_VERIFY_FAILED" in (untrusting.last_error or ""), untrusting.last_error
        finally:
            untrusting.close()
        plain = create_generator("remote", url=url)  # ws:// to a wss:// server: no session
        try:
            assert not plain.wait_ready(1.0)
        finally:
            plain.close()
        status = subprocess.run([sys.executable, "-m", "engine", "status", "--server", secure, "--ca", str(cert)],
                                cwd=REPO, capture_output=True, text=True, timeout=60)
        assert status.returncode == 0 and "0 of 1 session(s)" in status.stdout, status.stderr
    _, local = rendered(tmp_path, "local", SynthGenerator(), bars=2)
    np.testing.assert_array_equal(audio, local)
    bad = subprocess.run([sys.executable, "-m", "engine", "generator-server", "--listen", "127.0.0.1:0", "--tls-cert",
                          str(key), "--tls-key", str(tmp_path / "missing.pem")], cwd=REPO, capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines()[-1].startswith("error: generator server: cannot load the TLS certificate")


def test_backline_check_names_a_remote_config_that_cannot_work(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    for options, why in (("{url: 'http://gpu:9400'}", "must start with ws:// or wss://"),
                         (f"{{url: 'ws://gpu:9400', token_file: {tmp_path / 'none'}}}", "cannot read the token file"),
                         ("{url: 'ws://gpu:9400', pcm: mp3}", "PCM must be f32 or i16"),
                         ("{url: 'ws://gpu:9400', colour: red}", "not colour")):
        config.write_text(f"generator: {{name: remote, options: {options}}}\npatch: {REPO / 'patches/default.yaml'}\n")
        proc = subprocess.run([sys.executable, "-m", "engine", "check", "--config", str(config)], cwd=REPO,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 1 and why in proc.stderr and f"{config}: generator.options" in proc.stderr, proc.stderr


def test_the_engine_status_says_how_the_remote_generator_stands(tmp_path: Path) -> None:
    """`backline status` (OSC and HTTP read Engine.status) says whether the server's session is
    up and how long its frames take, the network's round trip included."""
    from engine.audio.offline import OfflineSink
    from engine.engine import Engine

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    generator = create_generator("remote", url=f"ws://127.0.0.1:{port}")
    engine = Engine(patch=load_patch(REPO / "patches/default.yaml"), generator=generator, status_line=False,
                    sink_factory=lambda ring: OfflineSink(ring, tmp_path / "x.wav", end=lambda: 0))
    try:
        assert engine.status()["generator_state"] in ("connecting", "restarting")  # nothing listens there yet
        proc = subprocess.Popen([sys.executable, "-m", "engine", "generator-server", "--listen", f"127.0.0.1:{port}"],
                                cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            assert generator.wait_ready(30)
            generator.generate(one_frame(2))
            status = engine.status()
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    finally:
        generator.close()
    assert status["generator_state"] == "ready" and status["generator_ms"] > 0


def test_prompts_embedded_once_answer_from_the_cache_while_the_server_is_down(tmp_path: Path, caplog) -> None:
    """A stage box starts, and keeps playing, with the server down: the server's answers are
    kept on disk and answer for it; a prompt it never embedded gets the hash stand-in, loudly."""
    from engine.generator.remote import RemoteGenerator

    with server() as url:
        generator = RemoteGenerator(url)
        try:
            first = generator.style_model(cache_dir=tmp_path).embed_text("dusty breakbeat")
        finally:
            generator.close()
    generator = RemoteGenerator(url)  # the same address, nothing listening now
    try:
        embedder = generator.style_model(cache_dir=tmp_path)
        np.testing.assert_array_equal(embedder.embed_text("dusty breakbeat"), first)
        stand_in = embedder.embed_text("never seen")
    finally:
        generator.close()
    np.testing.assert_array_equal(stand_in, HashEmbedder().embed_text("never seen"))
    assert "embedded from the cache of the server's answers" in caplog.text
    assert "PROMPT 'never seen' GETS THE HASH STAND-IN" in caplog.text


def test_more_frames_a_call_over_a_slow_link_renders_the_same(tmp_path: Path) -> None:
    """`--frames-per-call 8`: a round trip carries 320 ms of audio; the file is the synth's at 8 frames a call."""
    with server() as url:
        for name, extra in (("remote", ["--generator", "remote", "--remote", url]), ("synth", [])):
            proc = subprocess.run([sys.executable, "-m", "engine", "render", "--patch", "patches/default.yaml", "--bars",
                                   "2", "--frames-per-call", "8", "-o", str(tmp_path / f"{name}.wav"), *extra],
                                  cwd=REPO, capture_output=True, text=True, timeout=120)
            assert proc.returncode == 0, proc.stderr
    np.testing.assert_array_equal(soundfile.read(tmp_path / "remote.wav", dtype="float32")[0],
                                  soundfile.read(tmp_path / "synth.wav", dtype="float32")[0])


def test_a_server_announced_with_zeroconf_is_listed_by_backline_devices_and_plays() -> None:
    """A real mDNS announcement and browse (python-zeroconf, on loopback here): the URL it gives works."""
    with server("--zeroconf") as url:
        proc = subprocess.run([sys.executable, "-m", "engine", "devices", "--servers", "2"], cwd=REPO,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        listed = re.findall(r"^  (ws://\S+)  synth, 1 session\(s\) at most", proc.stdout, re.M)
        assert url in listed, proc.stdout  # (another test run's server may be announced beside it)
        assert_plays(url)
    quiet = subprocess.run([sys.executable, "-m", "engine", "devices", "--servers", "0"], cwd=REPO,
                           capture_output=True, text=True, timeout=60)
    assert quiet.returncode == 0 and "generator servers" not in quiet.stdout


class Slow(SynthGenerator):
    """The synth at 22 ms a frame: a session uses 55 % of real time (as MRT2 small on a modest GPU)."""

    def generate(self, conditioning):
        time.sleep(0.022 * len(conditioning))
        return super().generate(conditioning)


def test_a_session_that_would_not_play_in_real_time_beside_the_others_is_refused() -> None:
    """--max-sessions 4, but one session already uses 55 % of real time: a second would need
    110 %, so it is refused with the reason (its stage box plays its fallback); once the first
    leaves, a new one is admitted."""
    import threading

    from engine.remote.server import GeneratorServer

    gen_server = GeneratorServer(Slow, port=0, max_sessions=4)
    threading.Thread(target=gen_server.serve_forever, daemon=True).start()
    url = f"ws://127.0.0.1:{gen_server.port}"
    try:
        first = create_generator("remote", url=url)
        try:
            assert first.wait_ready(10)
            first.generate(one_frame(2))
            second = create_generator("remote", url=url)
            try:
                assert not second.wait_ready(1.5)
                assert "no room for another real-time session" in (second.last_error or ""), second.last_error
            finally:
                second.close()
        finally:
            first.close()
        time.sleep(0.3)  # the first session's thread ends
        third = create_generator("remote", url=url)
        try:
            assert third.wait_ready(10)
        finally:
            third.close()
        assert gen_server.refused >= 1
    finally:
        gen_server.stop()


class Loading(SynthGenerator):
    """A generator still loading for its first 0.5 s (a magenta child): snapshot and generate
    raise GeneratorUnavailable meanwhile, as ProcessGenerator's do."""

    def __init__(self) -> None:
        super().__init__()
        self._loaded_at = time.monotonic() + 0.5

    def _check(self) -> None:
        if time.monotonic() < self._loaded_at:
            raise GeneratorUnavailable("generator loading")

    def snapshot(self):
        self._check()
        return super().snapshot()

    def generate(self, conditioning):
        self._check()
        return super().generate(conditioning)


def test_a_server_generator_still_loading_is_unavailable_not_a_dropped_session() -> None:
    import threading

    from engine.remote.server import GeneratorServer

    gen_server = GeneratorServer(Loading, port=0)
    threading.Thread(target=gen_server.serve_forever, daemon=True).start()
    generator = create_generator("remote", url=f"ws://127.0.0.1:{gen_server.port}")
    try:
        assert generator.wait_ready(10)  # connected (Loading has no wait_ready of its own)
        unavailable = 0
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            generator.snapshot()  # each GENERATE asks the server to keep one: it cannot while loading
            try:
                audio = generator.generate(one_frame(2))
                break
            except GeneratorUnavailable as err:
                assert "loading" in str(err)
                unavailable += 1
                time.sleep(0.05)
        assert unavailable >= 3 and audio.shape == (3840, 2)
        assert generator.reconnects == 0  # the same session all along: unavailable, not dropped
    finally:
        generator.close()
        gen_server.stop()


def test_a_flood_of_silent_connections_is_closed_at_once_and_the_server_serves_on() -> None:
    """Connections that never say hello hold a thread each for the hello timeout; past 16 waiting,
    new ones are closed at once (counted as refused), and once they go a real client plays."""
    import threading

    from websockets.sync.client import connect

    from engine.remote.server import MAX_WAITING, GeneratorServer

    gen_server = GeneratorServer(SynthGenerator, port=0)
    threading.Thread(target=gen_server.serve_forever, daemon=True).start()
    url = f"ws://127.0.0.1:{gen_server.port}"
    silent = [connect(url, open_timeout=5, legacy=True) for _ in range(MAX_WAITING)]
    try:
        time.sleep(0.2)
        extra = connect(url, open_timeout=5, legacy=True)
        t0 = time.monotonic()
        answer = p.unpack(extra.recv(timeout=5))
        assert answer.kind == p.ERROR and "waiting to say hello" in answer.json()["error"]
        assert time.monotonic() - t0 < 1.0 and gen_server.refused >= 1
        extra.close()
    finally:
        for ws in silent:
            ws.close()
    time.sleep(0.3)
    try:
        assert_plays(url)
    finally:
        gen_server.stop()


def test_the_server_lists_each_sessions_underruns_as_its_stage_box_hears_them(tmp_path: Path) -> None:
    """`backline run --generator remote` plays against an in-process server: about once a
    second the engine tells its session how playback goes, and the server's status (what
    `backline status --server` prints) carries its underruns and look-ahead. A report that is
    not one is malformed: counted, that connection closed, the playing session untouched."""
    import threading

    from websockets.sync.client import connect

    from engine.remote.server import GeneratorServer

    gen_server = GeneratorServer(SynthGenerator, port=0, max_sessions=2)
    threading.Thread(target=gen_server.serve_forever, daemon=True).start()
    url = f"ws://127.0.0.1:{gen_server.port}"
    run = subprocess.Popen([sys.executable, "-m", "engine", "run", "--patch", str(REPO / "patches/default.yaml"),
                            "--generator", "remote", "--remote", url, "--output", f"wav:{tmp_path / 'out.wav'}",
                            "--no-midi", "--no-osc", "--duration", "30"], cwd=tmp_path,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        def reported() -> list[dict]:
            return [s for s in gen_server.status()["sessions"] if s["underruns"] is not None]

        deadline = time.monotonic() + 30
        while not reported() and time.monotonic() < deadline:
            time.sleep(0.1)
        sessions = reported()
        assert sessions, gen_server.status()
        assert sessions[0]["underruns"] == 0 and sessions[0]["lookahead_ms"] > 0, sessions
        with connect(url, open_timeout=5) as bad:
            bad.send(p.pack_json(p.HELLO, {"version": p.VERSION, "pcm": "f32"}))
            assert p.unpack(bad.recv(timeout=5)).kind == p.WELCOME
            bad.send(p.pack_json(p.REPORT, {"underruns": -1, "lookahead_ms": "soon"}))
            assert p.unpack(bad.recv(timeout=5)).json()["error"].startswith("malformed: report")
        assert gen_server.malformed == 1
        frames = gen_server.status()["sessions"][0]["frames"]
        deadline = time.monotonic() + 10
        while gen_server.status()["sessions"][0]["frames"] <= frames + 10 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert gen_server.status()["sessions"][0]["frames"] > frames + 10
    finally:
        run.terminate()
        run.wait(20)
        gen_server.stop()


def test_prompts_given_the_stand_in_while_the_server_was_down_are_embedded_again_when_it_is_back(tmp_path: Path) -> None:
    """The stage box starts with the server down: its patch's prompts get the hash stand-in
    (loudly logged) and the synth fallback plays. Once the server comes up, the engine sends
    those prompts again, and the server's style model is asked for them: its model plays the
    real embeddings, not the stand-in, with no one touching a control."""
    import threading

    sys.path.insert(0, str(REPO / "tests" / "control"))
    from control_helpers import serving, wait_for

    from engine.remote.server import GeneratorServer

    class Recording(HashEmbedder):
        version = "recording-1"

        def __init__(self) -> None:
            super().__init__()
            self.texts: list[str] = []

        def embed_text(self, text: str) -> np.ndarray:
            self.texts.append(text)
            return super().embed_text(text) * -1.0  # unlike the stage box's stand-in

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = tmp_path / "config.yaml"
    config.write_text(f"output: wav:{tmp_path / 'out.wav'}\npatch: {REPO / 'patches/default.yaml'}\nstate_file: null\n"
                      f"cache_dir: {tmp_path / 'cache'}\nfade_s: 0.05\nosc: {{enabled: false}}\nmidi: {{enabled: false}}\n"
                      f"generator: {{name: remote, options: {{url: 'ws://127.0.0.1:{port}'}}}}\n")
    texts = [s.source for s in load_patch(REPO / "patches/default.yaml").slots if s.kind == "text"]
    embedder = Recording()
    with serving(config) as service:
        engine = service.engine
        assert wait_for(lambda: engine.status()["fallback_frames"] > 10, 10)
        stand_in = np.array(engine.scheduler.bank.mix(engine.scheduler.state))
        gen_server = GeneratorServer(SynthGenerator, port=port, embedder=embedder)
        threading.Thread(target=gen_server.serve_forever, daemon=True).start()
        try:
            assert wait_for(lambda: sorted(set(embedder.texts)) == sorted(set(texts)), 15), embedder.texts
            assert wait_for(lambda: not np.allclose(engine.scheduler.bank.mix(engine.scheduler.state), stand_in), 5)
        finally:
            gen_server.stop()
