"""The service end to end: the real runner and engine, a fake `$NOTIFY_SOCKET` the test reads.

Output goes to `wav:FILE` (the real-time WAV sink) since this machine has no sound card;
the notify protocol, signals, state file and HTTP status are all real.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile
from notify_fake import NotifySocket, notify_socket  # noqa: F401  (fixture)

from engine.params import ControlEvent
from engine.service.config import load_config
from engine.service.notify import Notifier
from engine.service.runner import Service

REPO = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).with_name("serve_driver.py")
WATCHDOG_USEC = 200_000  # a ping every 0.1 s


def make_config(tmp_path: Path, **extra: str) -> Path:
    patch = tmp_path / "show.yaml"
    if not patch.exists():
        patch.write_text((REPO / "patches/default.yaml").read_text())
    lines = {
        "output": f"wav:{tmp_path / 'out.wav'}",
        "patch": str(patch),
        "state_file": str(tmp_path / "state" / "state.json"),
        "cache_dir": str(tmp_path / "cache"),
        "lookahead_ms": "120",
        "fade_s": "0.3",
        "web": "{port: 0}",
        "osc": "{port: 0}",
        **extra,
    }
    config = tmp_path / "config.yaml"
    config.write_text("".join(f"{k}: {v}\n" for k, v in lines.items()))
    return config


class ServeProcess:
    """`backline serve` (or the stdin driver) as a child process; stderr is collected."""

    def __init__(self, config: Path, notify: NotifySocket, *, driver: bool = False, prefix: tuple[str, ...] = ()) -> None:
        env = {**os.environ, "NOTIFY_SOCKET": notify.name, "WATCHDOG_USEC": str(WATCHDOG_USEC),
               "PYTHONPATH": str(REPO), "BACKLINE_CONFIG": str(config)}
        args = [sys.executable, str(DRIVER), str(config)] if driver else [sys.executable, "-m", "engine", "serve", "--config", str(config)]
        args = [*prefix, *args]
        self.proc = subprocess.Popen(args, cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line.rstrip())

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def wait_log(self, pattern: str, timeout_s: float = 10.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if match := re.search(pattern, line):
                    return match
            time.sleep(0.05)
        raise AssertionError(f"no log line matching {pattern!r}:\n{self.log}")

    def status(self) -> dict[str, object]:
        port = self.wait_log(r"web page on http://127\.0\.0\.1:(\d+)/").group(1)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=2) as reply:
            return json.loads(reply.read())

    def command(self, line: str) -> str:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline() if line == "dump" else ""

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


@pytest.fixture
def serve(tmp_path: Path, notify_socket: NotifySocket) -> Iterator[callable]:
    started: list[ServeProcess] = []

    def start(config: Path, *, driver: bool = False, prefix: tuple[str, ...] = ()) -> ServeProcess:
        process = ServeProcess(config, notify_socket, driver=driver, prefix=prefix)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


def until(notify: NotifySocket, key: str, timeout_s: float = 20.0) -> tuple[dict[str, str], list[dict[str, str]]]:
    """Read datagrams until one has `key`; returns it and those before it."""
    before: list[dict[str, str]] = []
    deadline = time.monotonic() + timeout_s
    while (left := deadline - time.monotonic()) > 0:
        message = notify.receive(timeout_s=left)
        if message is None:
            break
        if key in message:
            return message, before
        before.append(message)
    raise AssertionError(f"no {key} within {timeout_s} s; got {before}")


def drain(notify: NotifySocket, seconds: float) -> list[dict[str, str]]:
    messages, deadline = [], time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        message = notify.receive(timeout_s=left)
        if message is not None:
            messages.append(message)
    return messages


def test_ready_watchdog_and_stopping_on_sigterm(tmp_path: Path, serve, notify_socket: NotifySocket) -> None:
    process = serve(make_config(tmp_path))
    ready, before = until(notify_socket, "READY")
    assert ready["READY"] == "1" and ready["STATUS"].startswith("playing default on wav at 120 BPM")
    assert any(m.get("STATUS", "").startswith("loading patch") for m in before)
    pings = [m for m in drain(notify_socket, 1.0) if m.get("WATCHDOG") == "1"]
    assert len(pings) >= 5  # 0.1 s apart; the exact number depends on load
    process.proc.send_signal(signal.SIGTERM)
    stopping, _ = until(notify_socket, "STOPPING")
    assert stopping["STOPPING"] == "1"
    assert process.proc.wait(timeout=15) == 0
    audio, rate = soundfile.read(tmp_path / "out.wav")
    assert rate == 48000 and len(audio) > rate * 0.5
    fade = audio[-round(0.3 * rate):]  # fade_s: 0.3
    assert abs(audio[-32:]).max() == 0.0 < abs(fade[: len(fade) // 2]).max()  # sound in the fade, silence at its end


@pytest.fixture
def in_process(tmp_path: Path, notify_socket: NotifySocket) -> Iterator[Service]:
    """The runner in this process (no signals), so a test can reach into the engine."""
    notifier = Notifier(environ={"NOTIFY_SOCKET": notify_socket.name, "WATCHDOG_USEC": str(WATCHDOG_USEC)})
    service = Service(load_config(make_config(tmp_path), environ={}), notifier=notifier)
    yield service
    service.terminate()
    service.close()


def test_ready_only_after_audio_starts(in_process: Service, notify_socket: NotifySocket) -> None:
    engine = in_process.start()
    gate = threading.Event()
    real_start = engine.sink.start

    def held_start() -> None:  # the real sink starts only when the test opens the gate
        gate.wait()
        real_start()

    engine.sink.start = held_start
    runner = threading.Thread(target=in_process.run)
    runner.start()
    assert not any("READY" in m for m in drain(notify_socket, 1.0))
    assert engine.sink.playhead == 0
    gate.set()
    until(notify_socket, "READY", timeout_s=5)
    assert engine.sink.playhead > 0
    in_process.terminate()
    runner.join(timeout=10)
    assert not runner.is_alive()


def test_watchdog_stops_while_the_loop_stalls(in_process: Service, notify_socket: NotifySocket) -> None:
    engine = in_process.start()
    runner = threading.Thread(target=in_process.run)
    runner.start()
    until(notify_socket, "READY")
    assert sum(m.get("WATCHDOG") == "1" for m in drain(notify_socket, 0.6)) >= 3
    engine.stall_s = 2.5  # the scheduling loop now sleeps 2.5 s per iteration
    drain(notify_socket, 0.3)  # the iteration in progress may still ping once
    assert not any("WATCHDOG" in m for m in drain(notify_socket, 1.5))
    engine.stall_s = 0.0
    until(notify_socket, "WATCHDOG", timeout_s=4)
    in_process.terminate()
    runner.join(timeout=10)


def test_sighup_keeps_a_broken_patch_out_and_applies_the_fixed_one(tmp_path: Path, serve, notify_socket) -> None:
    config = make_config(tmp_path)
    process = serve(config)
    until(notify_socket, "READY")
    patch = tmp_path / "show.yaml"
    original = patch.read_text()
    patch.write_text(original.replace("tempo: 120", "tempo: fast"))
    process.proc.send_signal(signal.SIGHUP)
    until(notify_socket, "RELOADING")
    until(notify_socket, "READY")
    process.wait_log(rf"patch {re.escape(str(patch))}: at tempo: 'fast' is not of type 'number'.*running patch keeps playing")
    assert process.status()["tempo"] == 120.0
    patch.write_text(original.replace("tempo: 120", "tempo: 90"))
    process.proc.send_signal(signal.SIGHUP)
    until(notify_socket, "RELOADING")
    deadline = time.monotonic() + 10
    while process.status()["tempo"] != 90.0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert process.status()["tempo"] == 90.0
    assert process.stop() == 0


def test_sighup_reports_a_config_change_that_needs_a_restart(tmp_path: Path, serve, notify_socket) -> None:
    config = make_config(tmp_path)
    process = serve(config)
    until(notify_socket, "READY")
    config.write_text(config.read_text().replace("lookahead_ms: 120", "lookahead_ms: 300"))
    process.proc.send_signal(signal.SIGHUP)
    process.wait_log(r"config changes that need a restart .*: lookahead_ms")
    config.write_text(config.read_text() + "bogus: 1\n")
    process.proc.send_signal(signal.SIGHUP)
    process.wait_log(r"config .*config\.yaml: at <top>: .*'bogus' was unexpected\) \(keeping the running config\)")
    assert process.proc.poll() is None


SHOW_CHANGES = {  # over OSC, each a show-state value the default patch does not already have
    "/backline/tempo/bpm": 97.0, "/backline/style/1/weight": 0.75, "/backline/sampling/temperature": 0.875,
    "/backline/master/gain": 0.5, "/backline/style/0/text": "dub techno chords, deep echo",
    "/backline/tempo/lock": "none", "/backline/style/ramp_beats": 8.0, "/backline/style/ramp_curve": "equal_power",
    "/backline/tempo/ramp_bars": 2,
}


def test_sigkill_then_restart_resumes_the_whole_show_state(tmp_path: Path, serve, notify_socket) -> None:
    """Every show-state value moved over OSC (a replaced prompt, tempo lock, the style ramp,
    tempo.ramp_bars and freeze included) is back after SIGKILL and a restart."""
    from pythonosc.udp_client import SimpleUDPClient

    config = make_config(tmp_path)
    first = serve(config, driver=True)
    until(notify_socket, "READY")
    port = int(first.wait_log(r"OSC server on 127\.0\.0\.1:(\d+)").group(1))
    client = SimpleUDPClient("127.0.0.1", port)
    state_file = tmp_path / "state/state.json"

    def saved_when(want: dict[str, object]) -> dict[str, object]:
        deadline, saved = time.monotonic() + 15, {}
        while time.monotonic() < deadline:
            saved = json.loads(state_file.read_text())["engine"]["values"] if state_file.exists() else {}
            if all(saved.get(path) == value for path, value in want.items()):
                break
            time.sleep(0.05)
        assert {path: saved.get(path) for path in want} == want
        return saved

    for address, value in SHOW_CHANGES.items():
        client.send_message(address, value)
    saved_when({address.removeprefix("/backline/").replace("/", "."): v for address, v in SHOW_CHANGES.items()})
    client.send_message("/backline/safety/freeze", 1.0)  # last: a frozen engine holds changes back until release
    saved = saved_when({"safety.freeze": True})
    before = json.loads(first.command("dump"))
    assert before["values"] == saved
    first.proc.kill()  # SIGKILL mid-performance: no clean-up at all
    assert first.proc.wait(timeout=5) == -signal.SIGKILL
    second = serve(config, driver=True)
    until(notify_socket, "READY")
    deadline = time.monotonic() + 10  # the replaced prompt is embedded again off the audio path
    while (after := json.loads(second.command("dump"))) != before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert after == before
    status = second.status()
    assert status["tempo"] == 97.0 and status["frozen"] is True and before["patch"] == str(tmp_path / "show.yaml")
    assert second.stop() == 0


def test_a_corrupt_state_file_is_set_aside_and_the_show_starts(tmp_path: Path, serve, notify_socket) -> None:
    state = tmp_path / "state/state.json"
    state.parent.mkdir()
    state.write_text('{"version": 2, "engine": {"tempo": 9')
    process = serve(make_config(tmp_path))
    until(notify_socket, "READY")
    aside = list(state.parent.glob("state.json.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_text() == '{"version": 2, "engine": {"tempo": 9'
    process.wait_log(r"state file .* is corrupt .*moved to .*state\.json\.corrupt-")
    assert process.status()["tempo"] == 120.0


def test_a_control_event_in_process_reaches_the_state_file(in_process: Service, notify_socket) -> None:
    engine = in_process.start()
    runner = threading.Thread(target=in_process.run)
    runner.start()
    until(notify_socket, "READY")
    engine.submit(ControlEvent("mean.weight", 0.25, source="test", quantize="now"))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and (in_process.store.load() or {}).get("values", {}).get("mean.weight") != 0.25:
        time.sleep(0.05)
    assert in_process.store.load()["values"]["mean.weight"] == 0.25
    in_process.terminate()
    runner.join(timeout=10)


def mapping(address: str) -> str:
    return f"""info: {{name: test surface}}
controls:
- name: fader
  match: {{osc: {address}}}
  target: style.1.weight
  options: {{range: [0.0, 1.0]}}
"""


def osc_send(port: int, address: str, value: float) -> None:
    from pythonosc.udp_client import SimpleUDPClient

    SimpleUDPClient("127.0.0.1", port).send_message(address, value)


def saved_weight(state_file: Path, want: float, timeout_s: float = 5.0) -> float | None:
    deadline, weight = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        if state_file.exists():
            weight = json.loads(state_file.read_text())["engine"]["values"]["style.1.weight"]
            if weight == pytest.approx(want):
                break
        time.sleep(0.05)
    return weight


def test_sighup_keeps_the_old_mapping_on_error_and_applies_a_fixed_one(tmp_path: Path, serve, notify_socket) -> None:
    surface = tmp_path / "surface.yaml"
    surface.write_text(mapping("/test/fader"))
    process = serve(make_config(tmp_path, mappings=f"[{surface}]"))
    until(notify_socket, "READY")
    port = int(process.wait_log(r"OSC server on 127\.0\.0\.1:(\d+)").group(1))
    state_file = tmp_path / "state/state.json"
    osc_send(port, "/test/fader", 0.25)
    assert saved_weight(state_file, 0.25) == pytest.approx(0.25)

    surface.write_text(mapping("/test/fader").replace("style.1.weight", "style.1.wieght"))  # no such parameter
    process.proc.send_signal(signal.SIGHUP)
    process.wait_log(rf"mapping {re.escape(str(surface))}: .*keeping the running mappings")
    osc_send(port, "/test/fader", 0.5)  # the old mapping still works
    assert saved_weight(state_file, 0.5) == pytest.approx(0.5)

    surface.write_text(mapping("/test/other"))
    process.proc.send_signal(signal.SIGHUP)
    process.wait_log(r"mappings reloaded: 1 files, 0 kept")
    osc_send(port, "/test/other", 0.75)
    assert saved_weight(state_file, 0.75) == pytest.approx(0.75)
    osc_send(port, "/test/fader", 0.1)  # the old address is gone with the old mapping
    assert saved_weight(state_file, 0.1, timeout_s=1.0) == pytest.approx(0.75)

    reply = subprocess.run([sys.executable, "-m", "engine", "status", "--port", str(port), "--json"], cwd=REPO,
                           capture_output=True, text=True, timeout=30, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert reply.returncode == 0, reply.stderr
    assert json.loads(reply.stdout)["patch"] == "default"
    assert process.stop() == 0


def test_a_start_failure_is_reported_and_exits_non_zero(tmp_path: Path, serve, notify_socket) -> None:
    process = serve(make_config(tmp_path, output="alsa", device="no-such-device-backline-test"))
    failed, before = until(notify_socket, "STATUS")
    while not failed["STATUS"].startswith("failed"):
        failed, _ = until(notify_socket, "STATUS")
    assert "no-such-device-backline-test" in failed["STATUS"] or "ALSA" in failed["STATUS"]
    assert process.proc.wait(timeout=15) == 1
    assert not any("READY" in m for m in before)


@pytest.mark.magenta
def test_magenta_without_its_weights_plays_the_fallback_or_exits_with_one_line(tmp_path: Path, serve,
                                                                               notify_socket) -> None:
    """docs/stage-box.md: the fallback plays if magenta fails to start. Missing weights with
    `fallback: synth`: READY, the synth plays and the log says why, loudly. With `fallback: null`:
    exit 1 and one line naming the missing file and the command that fetches it."""
    pytest.importorskip("magenta_rt")
    missing = tmp_path / "weights" / "mrt2_small.safetensors"
    generator = f"{{name: magenta, options: {{checkpoint: {missing}, style_model: mock}}}}"
    process = serve(make_config(tmp_path, generator=generator, fallback="synth"))
    until(notify_socket, "READY", timeout_s=60)
    assert process.status()["generator"] == "synth"
    process.wait_log(rf"MAGENTA CANNOT START, PLAYING THE SYNTH INSTEAD.*{re.escape(str(missing))}")
    assert process.stop() == 0

    refused = serve(make_config(tmp_path, generator=generator, fallback="null"))
    assert refused.proc.wait(timeout=60) == 1
    refused._reader.join(5)
    assert str(missing) in refused.log and "backline models fetch" in refused.log
    assert "Traceback" not in refused.log


def test_an_unreachable_generator_server_at_start_is_ready_on_the_fallback_then_taken_over(tmp_path: Path, serve,
                                                                                      notify_socket) -> None:
    """`generator: remote` whose server is down at boot: READY once the fallback plays, its
    STATUS saying why (else systemd's start timeout restarts a playing box in a loop); when a
    real `backline generator-server` starts on that port, the remote generator takes over and
    READY comes again with the usual status."""
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"ws://127.0.0.1:{port}"
    process = serve(make_config(tmp_path, generator=f'{{name: remote, options: {{url: "{url}"}}}}', fallback="synth"))
    t0 = time.monotonic()
    ready, _ = until(notify_socket, "READY", timeout_s=20)
    took = time.monotonic() - t0
    assert ready["READY"] == "1" and ready["STATUS"].startswith(f"playing the fallback: cannot reach {url}"), ready
    status = process.status()
    assert status["generator"] == "remote" and status["generator_state"] == "connecting", status
    assert url in str(status["generator_error"]) and status["fallback_frames"] > 0, status
    server = subprocess.Popen([sys.executable, "-m", "engine", "generator-server", "--listen", f"127.0.0.1:{port}"],
                              cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        t1 = time.monotonic()
        again, _ = until(notify_socket, "READY", timeout_s=30)  # the connector retries at most 10 s apart
        joined = time.monotonic() - t1
        assert again["STATUS"].startswith("playing default on wav at 120 BPM"), again
        status = process.status()
        assert status["generator_state"] == "ready" and status["generator_error"] is None, status
        deadline = time.monotonic() + 10
        while True:  # the server's audio comes in on the next bar line (2 s at 120 BPM), then no more fallback
            before = process.status()["fallback_frames"]
            time.sleep(1.0)
            if process.status()["fallback_frames"] == before:
                break
            assert time.monotonic() < deadline, "the fallback still plays 10 s after the server's session"
        assert process.stop() == 0
    finally:
        server.terminate()
        server.wait(timeout=10)
    audio, rate = soundfile.read(tmp_path / "out.wav")
    assert np.sqrt(np.mean(audio[: 2 * rate] ** 2)) > 0.01, "the fallback plays from the start, not silence"
    assert "Traceback" not in process.log, process.log
    assert sum("the fallback plays until it is back" in line for line in process.lines) == 1, process.log
    print(f"\nunreachable at start: READY after {took:.1f} s ({ready['STATUS']}); the server's session took "
          f"over {joined:.1f} s after it started")


def _fifo_allowed_here() -> str | None:
    """Why this process may not have SCHED_FIFO (None: it may), tried on a short-lived thread."""
    result: list[str | None] = []

    def probe() -> None:
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
            result.append(None)
        except OSError as err:
            result.append(f"SCHED_FIFO refused to this test process: {err}")

    thread = threading.Thread(target=probe)
    thread.start()
    thread.join()
    return result[0]


@pytest.mark.parametrize("granted", [True, False], ids=["granted", "refused"])
def test_the_audio_thread_asks_for_sched_fifo_and_reports_what_it_got(tmp_path: Path, serve, notify_socket,
                                                                      granted: bool) -> None:
    """`realtime_priority: 60`: as root (where the kernel allows it) the audio thread runs at
    SCHED_FIFO 60; without CAP_SYS_NICE and with RLIMIT_RTPRIO 0 (setpriv and prlimit, as an
    unprivileged user has it) it is refused. Either way the log and `/backline/status` say
    so, and the kernel's own view of the thread agrees."""
    if granted and (why := _fifo_allowed_here()):
        pytest.skip(why)
    if not granted and not (shutil.which("setpriv") and shutil.which("prlimit")):
        pytest.skip("setpriv and prlimit (util-linux) are needed to drop the privilege")
    prefix = () if granted else ("prlimit", "--rtprio=0:0", "setpriv", "--bounding-set", "-sys_nice", "--")
    process = serve(make_config(tmp_path, realtime_priority="60"), prefix=prefix)
    until(notify_socket, "READY")
    line = process.wait_log(r"audio thread \(wav, tid (\d+)\) runs at (.*)$")
    tid, said = int(line.group(1)), line.group(2)
    reply = subprocess.run([sys.executable, "-m", "engine", "status", "--port",
                            process.wait_log(r"OSC server on 127\.0\.0\.1:(\d+)").group(1), "--json"],
                           cwd=REPO, capture_output=True, text=True, timeout=20)
    assert reply.returncode == 0, reply.stderr
    status = json.loads(reply.stdout)
    assert status["realtime"] == said
    if granted:
        assert said == "fifo 60"
        assert os.sched_getscheduler(tid) == os.SCHED_FIFO and os.sched_getparam(tid).sched_priority == 60
    else:
        assert said.startswith("normal (SCHED_FIFO 60 refused: RLIMIT_RTPRIO is 0")
        assert os.sched_getscheduler(tid) == os.SCHED_OTHER
    assert process.stop() == 0


def test_sighup_sees_a_patch_added_to_the_folder(tmp_path: Path, serve, notify_socket) -> None:
    """A patch file copied into `patches:` is in the set after `systemctl reload` (SIGHUP), so a
    control can pick it by name; before the reload it is refused (not in the set)."""
    folder = tmp_path / "set"
    folder.mkdir()
    (folder / "a.yaml").write_text((REPO / "patches/default.yaml").read_text())
    process = serve(make_config(tmp_path, patches=str(folder), patch=str(folder / "a.yaml")))
    until(notify_socket, "READY")
    port = int(process.wait_log(r"OSC server on 127\.0\.0\.1:(\d+)").group(1))
    (folder / "b.yaml").write_text((REPO / "patches/waltz.yaml").read_text())
    osc_send(port, "/backline/patch/load", "b")
    process.wait_log(r"patch\.load from osc:.*no patch named 'b' in the set \(a\)")
    process.proc.send_signal(signal.SIGHUP)
    until(notify_socket, "READY")  # reloaded
    osc_send(port, "/backline/patch/load", "b")
    deadline = time.monotonic() + 10
    while process.status()["patch"] != "waltz" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert process.status()["patch"] == "waltz"
    assert process.stop() == 0
