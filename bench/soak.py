"""The whole engine for N minutes under faults (issue #20): the soak harness.

One process (the harness) starts what a stage has, each for real:
- a JACK server (dummy driver, 48 kHz / 256) and a JACK client of its own, `soak-rec`, that
  records the engine's output and stamps two MIDI inputs in JACK frames: the clock source's
  ticks (`clk`) and the engine's own MIDI clock out (`eng`);
- `jack_midi_clock` at 120 BPM as the clock the engine follows;
- `backline generator-server --generator synth` behind the delaying TCP proxy (20 ms +/- 10 ms
  each way: bench/delay_proxy.py), and `backline serve` with `generator: remote` through it,
  the shipped nanoKONTROL2 and keyboard mappings, OSC, the web page and a patch folder;
- the surfaces: a JACK MIDI controller and keyboard (mido over JACK), an OSC client (UDP) and
  two web pages (WebSockets), moving random controls all through: faders, pads, notes with
  releases, patch loads by number, prompts replaced, tempo taps.

Faults come on a schedule (a round of them every `ROUND_S`, at most 6 spread over the run; the
engine's own SIGKILL in the first round only, so its last life shows its memory), each logged
with its time: the
generator server SIGKILLed then restarted, the link held 300 ms and 2 s, the MIDI controller's
port closed and reopened, 1,000 garbage OSC datagrams and 1,000 garbage WebSocket messages,
SIGHUP with a broken mapping then a fixed one, the engine SIGKILLed and restarted as systemd
would (RestartSec=1) with its state file, and the clock gone for 5 s (jack_midi_clock ended,
then started again: the engine rebinds a port by its pattern, so pulling a connection alone
would not last).

Measured from the recording and the engine's own status: underruns and xruns, every silent
gap over 10 ms and whether a fault explains it (the engine's SIGKILL; the probe's own mute, or
a bar replayed over it by an underrun, found sample for sample), the engine's clock-out ticks against the
source's, control -> sound latency (a master-gain probe every `PROBE_EVERY_S`), the engine's
RSS and open files over time, and each fault's time to recover. `Report.lines()` is the
one-page report; `bench/soak_bench.py` prints its rows, tests/soak checks the 2-minute one.

Threads: the harness's main thread runs the schedule; `soak-controls` moves controls,
`soak-status` polls /status and /proc, the pages' threads read their sockets, JACK's process
thread runs the recorder's callback (test code: Python, which the engine's own never is).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from jackserver import jack_server, stop_process  # noqa: E402

from bench.delay_proxy import DelayProxy  # noqa: E402
from engine.jack import leave_jack  # noqa: E402
from engine.service.health import StatusUnavailable, query_http  # noqa: E402

SR = 48_000
BPM = 120.0
TICK = SR * 60 / BPM / 24  # frames per MIDI clock tick
LOOKAHEAD_MS = 400  # the remote generator over a 20 +/- 10 ms link with stalls (docs/stage-box.md)
QUIET = 1e-4  # -80 dBFS: at or below is silence
GAP_S = 0.010  # a silent run longer than this is a gap
ROUND_S = 120.0  # a round of every fault takes this long; up to 6 rounds spread over the run
PROBE_EVERY_S = 6.0
PROBE_HOLD_S = 0.5
LATE_PROBE_S = 3.0  # a probe's mute heard this late is still the probe's, if the engine underran in between
SETTLE_S = 10.0  # after the engine starts or restarts, or the clock comes back: its bar grid settles
RESTART_SEC = 1.0  # systemd/backline.service RestartSec
NANO = "soak nanoKONTROL2"  # matches the shipped mapping's port pattern '*nanoKONTROL2*'
KEYS = "soak keys"
BROKEN_MAPPING = "controls: [{name: oops, match: {midi: {cc: 300}}, target: no.such.param}\n"
PROMPTS = ("warm analog synth groove", "bright glassy arpeggio", "dub echo chords", "dusty breakbeat",
           "slow cinematic pads", "acid bassline")


PLAN = [(10.0, "kill_server"), (22.0, "hold_link_300ms"), (30.0, "hold_link_2s"), (42.0, "unplug_midi"),
        (52.0, "garbage_osc"), (60.0, "garbage_web"), (68.0, "broken_mapping"), (80.0, "kill_engine"),
        (100.0, "pull_clock")]  # a round of faults: (s into the round, Soak method)


@dataclass
class Fault:
    """One fault: when it began (monotonic, and as a recording frame), what it covered, and when the
    engine was whole again (`recovered_s` after its end; None: never)."""

    name: str
    started: float
    frame: int
    ended: float = 0.0
    end_frame: int = 0
    recovered_s: float | None = None
    detail: str = ""


@dataclass
class Report:
    minutes: float
    faults: list[Fault]
    gaps: list[tuple[float, float, str, str]]  # (at s, length ms, what explains it or "", what happened near it)
    xruns: int
    underruns: int
    crashes: list[str]
    latency_ms: list[float]
    clock_offsets_ms: np.ndarray  # engine clock-out tick - nearest source tick, every tick
    clock_drift_ms: float  # median offset of the last tenth of the run minus the first tenth's
    rss_mb: list[tuple[float, float]]  # (s since start, MB) of the engine process now running
    fds: list[tuple[float, int]]
    moves: dict[str, int]
    ticks: tuple[int, int]  # clock ticks recorded: the source's, the engine's clock out
    errors: list[str] = field(default_factory=list)

    @property
    def unexplained(self) -> list[tuple[float, float, str, str]]:
        return [g for g in self.gaps if not g[2]]

    @property
    def unrecovered(self) -> list[Fault]:
        return [f for f in self.faults if f.recovered_s is None]

    def rss_growth_mb(self, after_s: float = 300.0) -> float | None:
        """RSS growth of the last engine life from `after_s` into it (or its first reading) to its end."""
        life = self.rss_mb
        if not life:
            return None
        base = next((mb for t, mb in life if t >= after_s), life[0][1])
        return life[-1][1] - base

    def lines(self) -> list[str]:
        pct = (lambda a, q: float(np.percentile(a, q)) if len(a) else float("nan"))
        off = np.abs(self.clock_offsets_ms)
        out = [f"soak: {self.minutes:g} min, {sum(self.moves.values())} control moves ({', '.join(f'{k} {v}' for k, v in sorted(self.moves.items()))})",
               f"xruns {self.xruns}, underruns {self.underruns}, crashes {len(self.crashes)}",
               f"silent gaps > {GAP_S * 1e3:.0f} ms: {len(self.gaps)}, unexplained {len(self.unexplained)}"]
        out += [f"  gap at {at:8.2f} s, {ms:7.1f} ms: {why or 'UNEXPLAINED (' + near + ')'}" for at, ms, why, near in self.gaps]
        out.append(f"control -> sound (master gain probe, {len(self.latency_ms)} probes): p50 {pct(self.latency_ms, 50):.1f} ms, "
                   f"p99 {pct(self.latency_ms, 99):.1f} ms")
        out.append(f"engine clock-out ticks against the source's ({len(off)} of {self.ticks[1]} engine ticks; "
                   f"{self.ticks[0]} source ticks): |offset| p50 {pct(off, 50):.2f} ms, "
                   f"p99 {pct(off, 99):.2f} ms, max {off.max() if len(off) else float('nan'):.2f} ms; "
                   f"drift over the run {self.clock_drift_ms:+.3f} ms (median of the last tenth - the first's)")
        growth = self.rss_growth_mb()
        out.append(f"engine RSS {self.rss_mb[0][1] if self.rss_mb else 0:.1f} -> {self.rss_mb[-1][1] if self.rss_mb else 0:.1f} MB "
                   f"(growth after 5 min of its last life: {growth if growth is not None else float('nan'):+.2f} MB); open files "
                   f"{self.fds[0][1] if self.fds else 0} -> {self.fds[-1][1] if self.fds else 0}")
        out.append(f"faults: {len(self.faults)}, not recovered {len(self.unrecovered)}")
        out += [f"  {f.started - self.faults[0].started if self.faults else 0:8.1f} s  {f.name:<16} recovered "
                + (f"in {f.recovered_s:6.2f} s" if f.recovered_s is not None else "NEVER") + (f"  ({f.detail})" if f.detail else "")
                for f in self.faults]
        out += [f"crash: {c}" for c in self.crashes] + [f"error: {e}" for e in self.errors]
        return out


class Recorder:
    """`soak-rec`: the engine's output (left channel) and two MIDI inputs, placed by JACK frame."""

    def __init__(self, client, seconds: float) -> None:  # type: ignore[no-untyped-def]
        self.client = client
        self.ins = [client.inports.register(f"in_{i + 1}") for i in range(2)]
        self.clk = client.midi_inports.register("clk")
        self.eng = client.midi_inports.register("eng")
        self.audio = np.zeros(int(seconds * SR), dtype=np.float32)
        self.recorded = np.zeros(len(self.audio), dtype=bool)
        self.first: int | None = None
        self.pos = 0
        self.cycle: tuple[int, float] = (0, time.monotonic())
        self.source: list[int] = []  # frames of the clock source's ticks
        self.engine: list[tuple[int, int]] = []  # (frame, status byte) of the engine's clock out
        self.xruns: list[int] = []
        client.set_process_callback(self._process)
        client.set_xrun_callback(lambda _delay: self.xruns.append(self.pos))

    def _process(self, frames: int) -> None:
        """JACK's process thread: stamp the MIDI, copy the audio by frame (a skipped cycle is a hole)."""
        base = self.client.last_frame_time
        self.cycle = (base, time.monotonic())
        if self.first is None:
            self.first = base
        pos = (base - self.first) & 0xFFFFFFFF
        for offset, data in self.clk.incoming_midi_events():
            if bytes(data)[:1] == b"\xf8":
                self.source.append(pos + offset)
        for offset, data in self.eng.incoming_midi_events():
            self.engine.append((pos + offset, bytes(data)[0]))
        n = max(0, min(frames, len(self.audio) - pos))
        self.audio[pos : pos + n] = self.ins[0].get_array()[:n]
        self.recorded[pos : pos + n] = True
        self.pos = max(self.pos, pos + n)

    def frame_at(self, t: float) -> int:
        """The recording frame of monotonic time `t` (any thread; within a period)."""
        base, at = self.cycle
        return int((base - (self.first or base)) + (t - at) * SR)


class Controllers:
    """The MIDI controller and keyboard: bench/soak_midi.py in a child process, fed lines (any thread)."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.soak_midi", f"nano={NANO}", f"keys={KEYS}"], cwd=REPO,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self._lock = threading.Lock()
        if (self.proc.stdout.readline() if self.proc.stdout else "").strip() != "ready":
            raise RuntimeError("the soak's MIDI controllers did not start")

    def _line(self, line: str, answer: bool = False) -> None:
        with self._lock:
            assert self.proc.stdin is not None and self.proc.stdout is not None
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
            if answer:
                self.proc.stdout.readline()

    def send(self, port: str, message: Any) -> None:  # a mido.Message
        self._line(f"send {port} {message.hex()}")

    def unplug(self, port: str) -> None:
        self._line(f"close {port}", answer=True)

    def plug(self, port: str) -> None:
        self._line(f"open {port}", answer=True)

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        stop_process(self.proc)


class Page:
    """A web page: a WebSocket to /ws that reconnects while the engine restarts, and keeps the
    changes the engine fed it (path, value, source, monotonic time)."""

    def __init__(self, url: str, name: str) -> None:
        self.url, self.name = url, name
        self.changes: list[tuple[str, object, str, float]] = []
        self.values: dict[str, object] = {}
        self.hello: dict[str, object] = {}  # the values of the latest hello (what a fresh engine says it plays)
        self.status: dict[str, Any] = {}
        self.connects = 0
        self._ws = None
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"soak-page-{name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from websockets.sync.client import connect

        while not self._closed.is_set():
            try:
                with connect(self.url, open_timeout=2, close_timeout=1) as ws:
                    self._ws = ws
                    self.connects += 1
                    for raw in ws:
                        self._take(json.loads(raw))
            except Exception:  # noqa: BLE001 - the engine restarts: reconnect
                pass
            self._ws = None
            self._closed.wait(0.3)

    def _take(self, msg: dict[str, Any]) -> None:
        if "hello" in msg:
            self.values = dict(msg["hello"]["values"])
            self.hello = dict(self.values)
        elif "values" in msg:  # a patch load: every show value of the new patch
            self.values = dict(msg["values"])
        elif "status" in msg:
            self.status = msg["status"]
        elif "path" in msg:
            self.values[msg["path"]] = msg["value"]
            self.changes.append((msg["path"], msg["value"], msg.get("source", ""), time.monotonic()))

    def send(self, message: dict[str, object] | str) -> bool:
        ws = self._ws
        if ws is None:
            return False
        try:
            ws.send(message if isinstance(message, str) else json.dumps(message))
            return True
        except Exception:  # noqa: BLE001 - closed meanwhile (a restart, or our own garbage's 1009)
            return False

    def close(self) -> None:
        self._closed.set()
        ws = self._ws
        if ws is not None:
            ws.close()
        self._thread.join(timeout=5)


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def open_files(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


class Soak:
    """One soak run of `minutes` in `workdir` (kept: the engine's and server's logs, the report)."""

    def __init__(self, minutes: float, workdir: Path, *, seed: int = 1,
                 plan: list[tuple[float, str]] | None = None) -> None:
        self.minutes, self.dir = minutes, workdir
        self.plan = plan  # (s into a round, fault method name); None: every fault (PLAN)
        self.random = random.Random(seed)
        self.faults: list[Fault] = []
        self.crashes: list[str] = []
        self.errors: list[str] = []
        self.moves: dict[str, int] = {}
        self.probes: list[tuple[int, int]] = []  # (frame the gain went to 0, frame it went back)
        self.status: list[tuple[float, dict[str, Any]]] = []
        self.rss: list[tuple[float, float]] = []
        self.fds: list[tuple[float, int]] = []
        self.quiet_until = 0.0  # controls rest (a state snapshot is due) until this monotonic time
        self.kills: list[tuple[int, int]] = []  # (frame killed, frame its successor's audio began)
        self.done = threading.Event()
        self.engine: subprocess.Popen | None = None
        self.server: subprocess.Popen | None = None
        self._control_lock = threading.Lock()  # the schedule's checks and the random moves take turns

    # -- set-up ------------------------------------------------------------------------------
    def _write_config(self) -> Path:
        self.web_port, self.osc_port, self.server_port = free_port(), free_port(socket.SOCK_DGRAM), free_port()
        patches = self.dir / "patches"
        shutil.copytree(REPO / "patches", patches, dirs_exist_ok=True)
        self.nano_mapping = self.dir / "nanokontrol2.yaml"
        self.good_mapping = (REPO / "mappings/korg-nanokontrol2.yaml").read_text()
        self.nano_mapping.write_text(self.good_mapping)
        config = self.dir / "config.yaml"
        config.write_text(
            f"output: jack\nconnect: [soak-rec:in_1, soak-rec:in_2]\nblocksize: 256\n"
            f"clock: {{source: midi, port: 'jack_midi_clock*', out: 'soak-rec:eng', start_on: bar}}\n"
            f"osc: {{port: {self.osc_port}}}\nweb: {{port: {self.web_port}}}\nzeroconf: false\n"
            f"midi: {{api: jack, inputs: ['*{NANO}*', '*{KEYS}*']}}\n"
            f"mappings: [{self.nano_mapping}, {REPO / 'mappings/midi-keyboard.yaml'}, {REPO / 'mappings/osc-generic.yaml'}]\n"
            f"learn_file: {self.dir / 'learned.yaml'}\npatch: {patches / 'default.yaml'}\npatches: {patches}\n"
            f"generator: {{name: remote, options: {{url: 'ws://127.0.0.1:{{proxy}}'}}}}\nfallback: synth\n"
            f"lookahead_ms: {LOOKAHEAD_MS}\ncache_dir: {self.dir / 'cache'}\nstate_file: {self.dir / 'state.json'}\n"
            "fade_s: 0.05\nrealtime_priority: 0\n")
        return config

    def _start_server(self) -> None:
        log = open(self.dir / "server.log", "a")
        self.server = subprocess.Popen([sys.executable, "-m", "engine", "generator-server", "--listen",
                                        f"127.0.0.1:{self.server_port}", "--generator", "synth"],
                                       cwd=REPO, stdout=subprocess.PIPE, stderr=log, text=True)
        line = self.server.stdout.readline() if self.server.stdout else ""
        if "generator-server" not in line:
            raise RuntimeError(f"the generator server did not start: {line!r} (see {self.dir / 'server.log'})")

    def _start_engine(self) -> None:
        log = open(self.dir / "engine.log", "a")
        self.engine = subprocess.Popen([sys.executable, "-m", "engine", "serve", "--config", str(self.config)],
                                       cwd=REPO, stdout=log, stderr=log, env=dict(os.environ))

    # -- the run ------------------------------------------------------------------------------
    def run(self) -> Report:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config = self._write_config()
        seconds = self.minutes * 60
        import jack

        with ExitStack() as stack:
            server_name = stack.enter_context(jack_server())
            client = jack.Client("soak-rec", servername=server_name)
            self.rec = Recorder(client, seconds + 60)
            client.activate()
            stack.callback(leave_jack, client)
            self._start_server()
            stack.callback(lambda: self.server is not None and stop_process(self.server, timeout=10))
            self.proxy = stack.enter_context(DelayProxy(("127.0.0.1", self.server_port), delay_ms=20, jitter_ms=10,
                                                        stall_every_s=1e9, seed=7))
            self.config.write_text(self.config.read_text().replace("{proxy}", str(self.proxy.port)))
            client.transport_frame = 0
            self._start_clock()
            stack.callback(lambda: stop_process(self.clock))
            self.midi = Controllers()
            stack.callback(self.midi.close)
            self._start_engine()
            stack.callback(self._stop_engine)
            self._wait(lambda: self._connected("soak-rec:in_1") and self._connected("jack_midi_clock:mclk_out", 2),
                       60, "the engine's ports")
            client.transport_start()
            self._wait(lambda: self._playing(), 60, "the engine's first sound")
            self.first_sound = self.rec.pos / SR
            pages = [Page(f"ws://127.0.0.1:{self.web_port}/ws", n) for n in ("play", "watch")]
            self.play, self.watch = pages
            stack.callback(lambda: [p.close() for p in pages])
            self._wait(lambda: bool(self.watch.values) and bool(self.play.values), 30, "the web pages")
            from pythonosc.udp_client import SimpleUDPClient

            self.osc = SimpleUDPClient("127.0.0.1", self.osc_port)
            self.started = time.monotonic()
            threads = [threading.Thread(target=self._controls, name="soak-controls", daemon=True),
                       threading.Thread(target=self._poll, name="soak-status", daemon=True)]
            for t in threads:
                t.start()
            try:
                self._schedule(seconds)
            finally:
                self.done.set()
                for t in threads:
                    t.join(timeout=10)
            end_frame = self.rec.pos
            self._stop_engine()
            return self._report(end_frame)

    def _stop_engine(self) -> None:
        if self.engine is not None and self.engine.poll() is None:
            stop_process(self.engine, timeout=15)

    def _connected(self, port: str, at_least: int = 1) -> bool:
        try:
            return len(self.rec.client.get_all_connections(port)) >= at_least
        except Exception:  # noqa: BLE001 - not registered yet
            return False

    def _playing(self, since: int = 0) -> bool:
        """Sound in the recording after frame `since` (the last 50 ms recorded)."""
        end = self.rec.pos
        return end - 2400 > since and bool(np.abs(self.rec.audio[end - 2400 : end]).max() > QUIET)

    def _wait(self, predicate: Callable[[], bool], timeout: float, what: str) -> float:
        """Seconds until `predicate` holds; raises if it does not within `timeout`."""
        t0 = time.monotonic()
        while not predicate():
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"soak: no {what} within {timeout:g} s (logs in {self.dir})")
            self._check_alive()
            time.sleep(0.05)
        return time.monotonic() - t0

    def _check_alive(self) -> None:
        """An engine or server that exited without the schedule killing it is a crash."""
        for name, proc in (("engine", self.engine), ("generator server", self.server)):
            if proc is not None and proc.poll() is not None and not getattr(proc, "killed_by_soak", False):
                self.crashes.append(f"{name} exited {proc.returncode} at {time.monotonic() - getattr(self, 'started', 0):.1f} s")
                proc.killed_by_soak = True  # type: ignore[attr-defined]  # reported once

    # -- the surfaces ------------------------------------------------------------------------
    def _count(self, surface: str) -> None:
        self.moves[surface] = self.moves.get(surface, 0) + 1

    def _controls(self) -> None:
        """`soak-controls`: a random move on a random surface every 20-80 ms."""
        import mido

        r, held = self.random, []
        while not self.done.wait(r.uniform(0.02, 0.08)):
            if time.monotonic() < self.quiet_until:
                continue
            with self._control_lock:
                pick = r.random()
                try:
                    if pick < 0.25:  # nanoKONTROL2 faders 1-2 (style weights), knobs 5-6 (temperature, CFG style)
                        self.midi.send("nano", mido.Message("control_change", control=r.choice((0, 1, 20, 21)), value=r.randrange(20, 110)))
                        self._count("midi cc")
                    elif pick < 0.40:  # keyboard: a note on, a release of an older one
                        note = r.randrange(36, 84)
                        self.midi.send("keys", mido.Message("note_on", note=note, velocity=r.randrange(40, 127)))
                        held.append(note)
                        if len(held) > 3 or r.random() < 0.5:
                            self.midi.send("keys", mido.Message("note_off", note=held.pop(0)))
                        self._count("midi notes")
                    elif pick < 0.60:
                        path, value = self._fader()
                        self.osc.send_message(f"/backline/{path.replace('.', '/')}", value)
                        self._count("osc")
                    elif pick < 0.80:
                        path, value = self._fader()
                        self._count("web" if self.play.send({"path": path, "value": value}) else "web (closed)")
                    elif pick < 0.90:  # pads
                        (self.osc.send_message("/backline/drum/hit", []) if r.random() < 0.5
                         else self.play.send({"path": "drum.hit"}))
                        self._count("pads")
                    elif pick < 0.93:
                        self.osc.send_message("/backline/tempo/tap", [])
                        self._count("taps")
                    elif pick < 0.94:
                        self.osc.send_message("/backline/patch/load", r.randrange(0, 4))
                        self._count("patch loads")
                    elif pick < 0.95:
                        self.play.send({"path": "style.0.text", "value": r.choice(PROMPTS)})
                        self._count("prompts")
                except Exception as err:  # noqa: BLE001 - a surface closed mid-fault; the next move retries
                    self.errors.append(f"control move: {type(err).__name__}: {err}")

    def _fader(self) -> tuple[str, float]:
        r = self.random
        path = r.choice(("style.0.weight", "style.1.weight", "sampling.temperature", "sampling.cfg_style",
                         "sampling.top_k", "sampling.cfg_notes"))
        ranges = {"style.0.weight": (0.3, 1.0), "style.1.weight": (0.0, 0.8), "sampling.temperature": (0.6, 1.4),
                  "sampling.cfg_style": (1.0, 4.0), "sampling.top_k": (40, 250), "sampling.cfg_notes": (1.0, 4.0)}
        lo, hi = ranges[path]
        return path, (r.randrange(int(lo), int(hi)) if path == "sampling.top_k" else round(r.uniform(lo, hi), 3))

    def _poll(self) -> None:
        """`soak-status`: /status twice a second, RSS and open files every 5 s."""
        next_proc = 0.0
        log = open(self.dir / "status.jsonl", "a")
        while not self.done.wait(0.5):
            try:
                status = query_http(f"http://127.0.0.1:{self.web_port}/status", timeout_s=1.0)
            except StatusUnavailable:
                continue
            self.status.append((time.monotonic(), status))
            log.write(json.dumps({"t": round(time.monotonic() - self.started, 2), **status}) + "\n")
            log.flush()
            if time.monotonic() >= next_proc and self.engine is not None:
                next_proc = time.monotonic() + 5
                mb, n = rss_mb(self.engine.pid), open_files(self.engine.pid)
                if mb is not None and n is not None:
                    self.rss.append((time.monotonic(), mb))
                    self.fds.append((time.monotonic(), n))

    def last_status(self, since: float = 0.0) -> dict[str, Any] | None:
        return next((s for t, s in reversed(self.status) if t >= since), None)

    # -- the schedule -------------------------------------------------------------------------
    def _schedule(self, seconds: float) -> None:
        """The main thread: probes all through, a round of faults every ROUND_S."""
        plan = [(at, getattr(self, name)) for at, name in (self.plan or PLAN)]
        events: list[tuple[float, Callable[[], None]]] = []
        rounds = max(1, min(6, int(seconds // ROUND_S)))
        every = seconds / rounds
        for k in range(rounds):  # the engine is killed in the first round only: its last life is the run's RSS figure
            events += [(k * every + at, fault) for at, fault in plan if k == 0 or getattr(fault, "__name__", "") != "kill_engine"]
        events += [(t, self.probe) for t in np.arange(5.0, seconds - 2, PROBE_EVERY_S)]
        events.sort(key=lambda e: e[0])
        for at, action in events:
            delay = self.started + at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self._check_alive()
            try:
                action()
            except Exception as err:  # noqa: BLE001 - a fault that could not be checked is reported, the soak goes on
                self.errors.append(f"{getattr(action, '__name__', 'fault')} at {at:.0f} s: {type(err).__name__}: {err}")
        time.sleep(max(0.0, self.started + seconds - time.monotonic()))
        self._check_alive()

    def _fault(self, name: str, detail: str = "") -> Fault:
        now = time.monotonic()
        fault = Fault(name, now, self.rec.frame_at(now), detail=detail)
        self.faults.append(fault)
        print(f"# soak {now - self.started:7.1f} s: {name}", flush=True)
        return fault

    def _ended(self, fault: Fault) -> float:
        fault.ended = time.monotonic()
        fault.end_frame = self.rec.frame_at(fault.ended)
        return fault.ended

    def _recover(self, fault: Fault, predicate: Callable[[], bool], timeout: float = 30.0) -> None:
        """Time from the fault's end until `predicate` holds (polled), or None."""
        try:
            fault.recovered_s = self._wait(predicate, timeout, f"recovery from {fault.name}")
        except TimeoutError as err:
            fault.detail = f"{fault.detail}; {err}".strip("; ")

    def _status_ok(self, since: float, check: Callable[[dict[str, Any]], bool]) -> Callable[[], bool]:
        return lambda: (s := self.last_status(since)) is not None and check(s)

    def _remote_playing(self, s: dict[str, Any]) -> bool:
        return s.get("generator") == "remote" and s.get("generator_state") == "ready"

    def probe(self) -> None:
        """Control -> sound: master gain to 0 over OSC, back to 1 after PROBE_HOLD_S (frames kept)."""
        if self._busy_fault():
            return
        self.osc.send_message("/backline/master/gain", 0.0)
        down = self.rec.frame_at(time.monotonic())
        time.sleep(PROBE_HOLD_S)
        self.osc.send_message("/backline/master/gain", 1.0)
        self.probes.append((down, self.rec.frame_at(time.monotonic())))

    def _busy_fault(self) -> bool:
        """A fault still in progress (no probe into an engine restart)."""
        return bool(self.faults) and self.faults[-1].recovered_s is None and not self.faults[-1].detail

    def kill_server(self) -> None:
        fault = self._fault("server SIGKILL")
        assert self.server is not None
        self.server.killed_by_soak = True  # type: ignore[attr-defined]
        self.server.send_signal(signal.SIGKILL)
        self.server.wait(timeout=10)
        since = time.monotonic()
        self._wait(self._status_ok(since, lambda s: s.get("generator") != "remote" or s.get("generator_state") != "ready"), 15,
                   "the fallback's status")
        time.sleep(3.0)
        self._start_server()
        since = self._ended(fault)
        self._recover(fault, self._status_ok(since, self._remote_playing))

    def hold_link_300ms(self) -> None:
        self._hold_link(0.3)

    def hold_link_2s(self) -> None:
        self._hold_link(2.0)

    def _hold_link(self, seconds: float) -> None:
        fault = self._fault(f"link held {seconds * 1e3:.0f} ms")
        self.proxy.hold(seconds)
        time.sleep(seconds)
        since = self._ended(fault)
        self._recover(fault, self._status_ok(since, lambda s: self._remote_playing(s)
                                             and s.get("lookahead_ms", 0) >= LOOKAHEAD_MS / 2))

    def _seen(self, page: Page, path: str, since: float, source: str) -> Callable[[], bool]:
        return lambda: any(p == path and src.startswith(source) and t >= since for p, _, src, t in list(page.changes))

    def _move_nano(self, since: float) -> Callable[[], bool]:
        """Sweep fader 1 across its range (soft takeover picks it up) until the page sees it."""
        import mido

        def moved() -> bool:
            with self._control_lock:
                for value in (10, 60, 120, 60):
                    self.midi.send("nano", mido.Message("control_change", control=0, value=value))
            time.sleep(0.1)
            return self._seen(self.watch, "style.0.weight", since, "midi")()
        return moved

    def unplug_midi(self) -> None:
        fault = self._fault("MIDI port gone 3 s")
        with self._control_lock:
            self.midi.unplug("nano")
        time.sleep(3.0)
        with self._control_lock:
            self.midi.plug("nano")
        since = self._ended(fault)
        self._recover(fault, self._move_nano(since))

    def garbage_osc(self) -> None:
        fault = self._fault("1000 garbage OSC")
        r = self.random
        before = (self.last_status() or {}).get("rejected", 0)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for i in range(1000):
                junk = [bytes(r.randrange(256) for _ in range(r.randrange(1, 200))), b"/backline/sampling/temperature\0\0,f\0\0",
                        b"/backline/nope\0\0\0,s\0\0abc\0", b"/backline/tempo/bpm\0,f\0\0\x7f\xc0\0\0"][i % 4]
                s.sendto(junk, ("127.0.0.1", self.osc_port))
        since = self._ended(fault)
        value = round(self.random.uniform(0.6, 1.4), 3)

        def through() -> bool:
            self.osc.send_message("/backline/sampling/temperature", value)
            time.sleep(0.1)
            return self._seen(self.watch, "sampling.temperature", since, "osc")()
        self._recover(fault, through)
        self._wait(lambda: self.last_status(since + 1.0) is not None, 10, "a status after the garbage")
        after = (self.last_status(since + 1.0) or {}).get("rejected", 0)
        fault.detail = f"rejected +{after - before} (the rest coalesced)"

    def garbage_web(self) -> None:
        from websockets.sync.client import connect

        fault = self._fault("1000 garbage WS")
        r, sent = self.random, 0
        try:
            with connect(f"ws://127.0.0.1:{self.web_port}/ws", open_timeout=2) as ws:
                for i in range(1000):
                    junk = ["{", "[1,2]", '{"path": "no.such", "value": 1}', '{"path": "sampling.temperature", "value": "hot"}',
                            '{"path": "patch.load", "value": "/etc/passwd"}', json.dumps({"x": r.random()}), "\x00\xff"][i % 7]
                    ws.send(junk)
                    sent += 1
                ws.send("x" * 5000)  # too large: the engine closes this connection (1009)
        except Exception:  # noqa: BLE001 - the engine closed the hostile connection
            pass
        since = self._ended(fault)
        value = round(self.random.uniform(0.6, 1.4), 3)

        def through() -> bool:
            with self._control_lock:
                self.play.send({"path": "sampling.cfg_style", "value": value})
            time.sleep(0.1)
            return self._seen(self.watch, "sampling.cfg_style", since, "web")()
        self._recover(fault, through)
        fault.detail = f"{sent} sent"

    def broken_mapping(self) -> None:
        fault = self._fault("SIGHUP broken map")
        assert self.engine is not None
        self.nano_mapping.write_text(BROKEN_MAPPING)
        self.engine.send_signal(signal.SIGHUP)
        time.sleep(1.0)
        kept = self._move_nano(time.monotonic())
        try:
            self._wait(kept, 10, "the old mapping after a broken one")
            detail = "old mapping kept"
        except TimeoutError:
            detail = "OLD MAPPING LOST"
        self.nano_mapping.write_text(self.good_mapping)
        self.engine.send_signal(signal.SIGHUP)
        since = self._ended(fault)
        time.sleep(0.5)
        self._recover(fault, self._move_nano(since))
        if detail != "old mapping kept":
            fault.recovered_s = None
        fault.detail = detail

    def kill_engine(self) -> None:
        """SIGKILL the engine once the state file has its values, restart it after RestartSec, and
        check the show state came back (the values the watch page had before)."""
        self.quiet_until = float("inf")
        time.sleep(2.5)  # the state writer saves within a second of a change
        before = {k: v for k, v in self.watch.values.items() if k.startswith(("sampling.", "style.0.weight", "style.1.weight"))}
        fault = self._fault("engine SIGKILL")
        assert self.engine is not None
        self.engine.killed_by_soak = True  # type: ignore[attr-defined]
        self.engine.send_signal(signal.SIGKILL)
        self.engine.wait(timeout=10)
        time.sleep(RESTART_SEC)
        self.watch.hello = {}
        self._start_engine()
        self._ended(fault)
        self._recover(fault, lambda: self._playing(since=self.rec.frame_at(fault.ended)) and bool(self.watch.hello), 60)
        self.kills.append((fault.frame, self.rec.pos))
        self.quiet_until = 0.0
        after = {k: self.watch.hello.get(k) for k in before}
        lost = {k: (v, after[k]) for k, v in before.items() if not _same(v, after[k])}
        if lost:
            fault.recovered_s = None
        fault.detail = f"{len(before)} values restored" if not lost else f"STATE LOST: {lost}"
        self.rss.append((time.monotonic(), float("nan")))  # a new life begins

    def _start_clock(self) -> None:
        """jack_midi_clock at BPM into the recorder (the engine binds it by its port pattern)."""
        self.clock = subprocess.Popen(["jack_midi_clock", "-b", f"{BPM:g}", "-B", "soak-rec:clk"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def pull_clock(self) -> None:
        """The clock goes for 5 s: jack_midi_clock ended, then started again on the rolling transport
        (the engine rebinds a port by its pattern, so pulling its connection alone would not last)."""
        fault = self._fault("clock gone 5 s")
        stop_process(self.clock)
        time.sleep(5.0)
        held = self.last_status(fault.started + 3.0) or {}
        self._start_clock()
        since = self._ended(fault)
        state = (held.get("clock") or {}).get("state")
        fault.detail = f"status during: clock {state}"
        self._recover(fault, self._status_ok(since, lambda s: (s.get("clock") or {}).get("state") == "running"))
        if state != "lost":  # a clock gone 5 s is past the grace period: the status must say so
            fault.recovered_s, fault.detail = None, f"{fault.detail}, NOT REPORTED LOST"

    # -- the report --------------------------------------------------------------------------
    def _report(self, end: int) -> Report:
        audio, recorded = self.rec.audio[:end], self.rec.recorded[:end]
        loud = np.flatnonzero(np.abs(audio) > QUIET)
        gaps: list[tuple[float, float, str, str]] = []
        if len(loud):
            quiet = np.concatenate([[False], (np.abs(audio) <= QUIET) & recorded, [False]])
            quiet[: loud[0] + 1] = False
            edges = np.flatnonzero(np.diff(quiet.astype(np.int8)))
            starts, stops = edges[::2], edges[1::2]
            explained: list[tuple[int, int]] = []
            for a, b in zip(starts, stops):
                if b - a > GAP_S * SR:
                    why = self._explain(int(a), int(b)) or _replay_of(audio, int(a), int(b), explained)
                    if why:
                        explained.append((int(a), int(b)))
                    if not why:
                        self._keep(int(a), int(b))
                    gaps.append((a / SR, (b - a) / SR * 1e3, why, "" if why else self._context(int(a), int(b))))
        statuses = [s for _, s in self.status]
        xruns = len(self.rec.xruns)
        underruns = sum(_increments([s.get("underruns", 0) for s in statuses]))
        offsets, drift = self._clock_offsets()
        t0 = self.started
        lives, rss = [], []
        for t, mb in self.rss:
            if mb != mb:  # a restart: a new life's readings
                lives.append(rss)
                rss = []
            else:
                rss.append((t - t0, mb))
        lives.append(rss)
        last_life = lives[-1]
        life_t0 = last_life[0][0] if last_life else 0.0
        return Report(self.minutes, self.faults, gaps, xruns, underruns, self.crashes, self._latencies(audio),
                      offsets, drift, [(t - life_t0, mb) for t, mb in last_life],
                      [(t - t0, n) for t, n in self.fds], dict(self.moves),
                      (len(self.rec.source), sum(b == 0xF8 for _, b in self.rec.engine)), self.errors)

    def _context(self, a: int, b: int) -> str:
        """What else happened around an unexplained gap: JACK's xruns in it, the engine's counters."""
        jack = sum(a - SR // 2 <= x <= b + SR // 2 for x in self.rec.xruns)
        counters = ("xruns", "underruns", "rollbacks", "silence_ms", "dry_replay_ms", "skipped_ms")
        grew = {k: round(self._grew(a, b, k), 1) for k in counters} if len(self._near(a, b)) > 1 else {}
        probe = min((down - a for down, _ in self.probes), key=abs, default=0) / SR
        period = self.rec.client.blocksize  # the recording starts on a cycle: whole cycles of zeros start at 0
        return (f"JACK xruns {jack}; engine " + ", ".join(f"{k} +{v}" for k, v in grew.items())
                + f"; nearest probe {probe:+.2f} s; starts {a % period}, ends {b % period} frames into a {period}-frame cycle")

    def _keep(self, a: int, b: int) -> None:
        """The recording around a gap nothing explains, 1 s either side (gap-<s>.wav), to listen to and read."""
        import soundfile

        lo, hi = max(0, a - SR), min(self.rec.pos, b + SR)
        soundfile.write(self.dir / f"gap-{a / SR:.2f}s.wav", self.rec.audio[lo:hi], SR, subtype="FLOAT")

    def _explain(self, a: int, b: int) -> str:
        for down, up in self.probes:
            if down <= a <= up + SR // 2:
                return "the master-gain probe"
        for down, up in self.probes:  # a probe sent while the look-ahead ran dry lands when fresh audio is back
            if down < a <= down + LATE_PROBE_S * SR and not self._heard(down, up) and self._underran(down, b):
                return f"the master-gain probe, heard {(a - down) / SR:.2f} s after it was sent (an underrun in between)"
        for killed, back in self.kills:
            if killed - SR // 2 <= a <= back:
                return "engine SIGKILL"
        silent = self._grew(a, b, "silence_ms")
        if silent and silent >= ((b - a) / SR - GAP_S) * 1e3:  # the status counts it a block or two late
            return f"the engine's own silence: nothing generated yet and no bar to loop (its status's silence_ms +{silent:.0f})"
        skipped = self._skipped_in(a, b)
        if skipped.any() and _longest_run(~skipped) <= GAP_S * SR:
            return (f"JACK did not run the engine for {int(skipped.sum())} of its {b - a} frames (the status's skips), "
                    f"the rest shorter than a gap")
        return ""

    def _skipped_in(self, a: int, b: int) -> np.ndarray:
        """Which frames of [a, b) JACK moved on without a block from the engine: the spans its
        status lists (`skips`, in JACK frames) placed on the recording by JACK's frame counter."""
        mask = np.zeros(b - a, dtype=bool)
        first = self.rec.first or 0
        for span in {tuple(x) for s in self._near(a, b) for x in s.get("skips") or []}:
            lo = ((int(span[0]) - first) & 0xFFFFFFFF) - a
            mask[max(0, lo) : max(0, lo + int(span[1]))] = True
        return mask

    def _heard(self, down: int, up: int) -> bool:
        """Did the probe's mute sound in its own window (5 ms of silence within up + 0.5 s)?"""
        return _first_silence(self.rec.audio[down : up + SR // 2]) is not None

    def _near(self, a: int, b: int) -> list[dict[str, Any]]:
        """The engine's statuses read from a second before frame a to a second after frame b."""
        return [s for t, s in self.status if a - SR <= self.rec.frame_at(t) <= b + SR]

    def _grew(self, a: int, b: int, counter: str) -> float:
        """How much the engine's status `counter` grew from a second before frame a to a second after b."""
        near = [s.get(counter, 0) for s in self._near(a, b)]
        return sum(_increments(near[1:], start=near[0])) if len(near) > 1 else 0

    def _underran(self, a: int, b: int) -> bool:
        """Did the engine count an underrun (the ring replayed a bar) between frames a and b?"""
        near = [s.get("underruns", 0) for s in self._near(a, b)]
        return len(near) > 1 and near[-1] > near[0]

    def _latencies(self, audio: np.ndarray) -> list[float]:
        """Each probe's send -> the first 5 ms of silence after it, in ms: within LATE_PROBE_S
        (one sent while the look-ahead ran dry lands when fresh audio is back; the next probe
        is PROBE_EVERY_S later)."""
        out = []
        for down, _ in self.probes:
            hit = _first_silence(audio[down : down + int(LATE_PROBE_S * SR)])
            if hit is not None:
                out.append(hit / SR * 1e3)
        return out

    def _clock_offsets(self) -> tuple[np.ndarray, float]:
        """Every engine clock-out tick against the nearest source tick (ms), and their drift (ms/h),
        outside the clock's own outages and the engine's restarts (a new jack_midi_clock starts its
        ticks at a phase of its own, a restarted engine joins the clock where it finds it)."""
        src = np.array(self.rec.source, dtype=np.float64)
        eng = np.array([f for f, b in self.rec.engine if b == 0xF8], dtype=np.float64)
        np.savez(self.dir / "ticks.npz", source=src, engine=eng, probes=np.array(self.probes), xruns=np.array(self.rec.xruns),
                 first=self.rec.first or 0, rss=np.array([(t - self.started, mb) for t, mb in self.rss]).reshape(-1, 2),
                 **({"audio": self.rec.audio[: self.rec.pos]} if self.minutes <= 5 else {}))
        windows = [(0.0, (self.first_sound + SETTLE_S) * SR)]  # the bridge onto the clock's grid at start
        windows += [(f.frame, f.end_frame + ((f.recovered_s or 30.0) + SETTLE_S) * SR)
                    for f in self.faults if f.name in ("clock gone 5 s", "engine SIGKILL")]
        for lo, hi in windows:
            src = src[(src < lo) | (src > hi)]
            eng = eng[(eng < lo) | (eng > hi)]
        if len(src) < 2 or not len(eng):
            return np.zeros(0), float("nan")
        idx = np.clip(np.searchsorted(src, eng), 1, len(src) - 1)
        near = np.where(np.abs(src[idx] - eng) < np.abs(src[idx - 1] - eng), src[idx], src[idx - 1])
        off = (eng - near) / SR * 1e3
        keep = np.abs(off) < TICK / SR * 1e3 / 2
        off = off[keep]
        tenth = len(off) // 10
        drift = float(np.median(off[-tenth:]) - np.median(off[:tenth])) if tenth else float("nan")
        return off, drift


def _longest_run(mask: np.ndarray) -> int:
    """The longest run of True in `mask`."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], mask.astype(np.int8), [0]))))
    return int((edges[1::2] - edges[::2]).max()) if len(edges) else 0


def _replay_of(audio: np.ndarray, a: int, b: int, explained: list[tuple[int, int]], edge: int = 1200) -> str:
    """"a replay" if the silence [a, b) is a bar replayed (an underrun) over an earlier explained one:
    the 25 ms after it (or before it) are, sample for sample, those after (before) that one, within
    a crossfade. The probe's mute is in the ring, so a replay of its bar plays the mute again."""
    after, before = audio[b : b + edge], audio[max(0, a - edge) : a]
    if not (np.abs(after) > QUIET).any():  # silence matches any silence: it proves nothing
        after = after[:0]
    if not (np.abs(before) > QUIET).any():
        before = before[:0]
    for start, end in explained:
        if not a - 10 * SR <= end <= a:  # a replay plays a bar of the last few seconds
            continue
        for k in range(-480, 481):
            if (len(after) == edge and end + k + edge <= a and np.array_equal(audio[end + k : end + k + edge], after)) or \
               (len(before) == edge and start + k - edge >= 0 and np.array_equal(audio[start + k - edge : start + k], before)):
                return f"a bar replayed (underrun) over the silence at {start / SR:.2f} s, sample for sample"
    return ""


def _first_silence(audio: np.ndarray, win: int = SR // 200) -> int | None:
    """Where the first `win` samples (5 ms) in a row at or below QUIET begin in `audio`; None if nowhere."""
    if len(audio) < win:
        return None
    run = np.convolve((np.abs(audio) <= QUIET).astype(np.int32), np.ones(win, np.int32), "valid")
    hit = np.flatnonzero(run == win)
    return int(hit[0]) if len(hit) else None


def _increments(counts: list[float], start: float = 0) -> Iterator[float]:
    """What a counter that restarts at 0 (a new engine) added in all, from `start`."""
    last = start
    for c in counts:
        yield c - last if c >= last else c
        last = c


def _same(a: object, b: object) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(a - b) < 1e-6
    return a == b


def run_soak(minutes: float, workdir: Path, *, seed: int = 1, plan: list[tuple[float, str]] | None = None) -> Report:
    """A soak of `minutes`; its report (also written to workdir/report.txt)."""
    report = Soak(minutes, workdir, seed=seed, plan=plan).run()
    (workdir / "report.txt").write_text("\n".join(report.lines()) + "\n")
    return report
