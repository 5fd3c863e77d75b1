"""xruns side by side: backline, JACK's C example client and a bare Python client.

What: how many xruns a JACK server counts while each of three clients plays alone on it,
at 256 and 128 frames, on an idle machine, under a 5,000 OSC msg/s flood and under a
garbage-collection storm (issue: backline within 1.2x of the C client in every cell, and
below the bare Python client). The clients:

- backline: the real engine (`backline serve`'s runner, synth generator, 200 ms
  look-ahead, `output: jack` at the block size, OSC and the HTTP status on) in its own
  process; its audio callback is C (engine/audio/rtout.c).
- C: `jack_simple_client` (jackd2's example, a sine, no Python at all).
- python: a bare sounddevice client in its own process (`python -c PYTHON_CLIENT BLOCK`,
  nothing imported but sounddevice), a Python callback that fills zeros and counts
  PortAudio underflows.

How: one dummy JACK server (`jackd -d dummy --no-realtime`, period = block size; with
`--realtime`, `jackd --realtime` as the shipped systemd/jackd.service runs it) per block
size; on it, rounds (3; quick: 1) x conditions (idle, flood, gc) x clients, each span 30 s
(quick: 5 s). Inside a condition the clients take turns (round-robin), and the order
rotates every round, so a slow drift of the machine does not land on one client. Each
span starts its client, waits until it plays, starts the load, lets it settle 1.5 s, then
counts for the span and only then stops the load and the client: start and stop transients
are not counted. The count is JACK's: a watcher client of ours on the same server (no
process callback) counts its xrun callbacks, the same counter for all three clients.
Beside it each client's own count where it has one: backline's status `xruns` (PortAudio
underflows + blocks the C callback found not fed; the unfed blocks alone as gaps) and
`server_xruns`, and the Python client's PortAudio underflows.

The loads: the flood is control_bench's `flood_sender` (5,000 msg/s to 8 parameters and
drum hits) at the engine's OSC port for backline, and at a socket nobody reads for the
other two (the sender's and the kernel's share of the machine is then the same). The GC
storm (`while True: junk = [[i] * 50 for i in range(20000)]; gc.collect()`, no sleep) runs
as a thread inside the engine's process (a bench-only option of `engine_child`) and inside
the Python client's process; the C client has no interpreter, so there it runs in a
process of its own.

Every client process has a timeout: a span that hangs or fails is reported as n/a (its
reason on stderr), never a hung bench. The engine's log (WARNING and up, and its stderr)
goes to a file per span; anything in it is printed to stderr after the span.

The machine is shared (2 cores here; the bench's own process, the flood sender and the
storm run beside the client): these are xruns of this machine as well as of the client,
which is why the three clients are measured interleaved on one server and read against
each other, not against 0.
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing as mp
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench import Row
from bench.control_bench import FLOOD_ADDRESSES, FLOOD_RATE, Engine, flood_sender, free_port, stop_engine

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from jackserver import jack_server, stop_process  # noqa: E402  (the tests' JACK starter; one copy)

BLOCKS = (256, 128)
CONDITIONS = ("idle", "flood", "gc")
CLIENTS = ("backline", "c", "python")
LABELS = {"backline": "backline", "c": "C client", "python": "python"}
SETTLE_S = 1.5  # after the client plays and the load runs, before counting
LOOKAHEAD_MS = 200
START_TIMEOUT_S = 60.0  # a client that does not play by then: n/a
STOP_TIMEOUT_S = 15.0
TARGET_C = 1.2  # backline within 1.2x of the C client
C_CLIENT = "jack_simple_client"
C_CLIENT_NAME = "jack_simple_client"  # its JACK client name (its argv[0])

# The storm, one source for the thread (engine, Python client) and the C client's process.
STORM_SOURCE = """
import gc

def gc_storm():
    while True:
        junk = [[i] * 50 for i in range(20000)]
        gc.collect()
"""


def gc_storm() -> None:
    """Allocate and collect in a loop, forever (run it on a daemon thread or in its own process)."""
    namespace: dict[str, object] = {}
    exec(STORM_SOURCE, namespace)  # noqa: S102 - our own constant, shared with the storm process
    namespace["gc_storm"]()  # type: ignore[operator]


def _storm_when(event: object) -> None:
    event.wait()  # type: ignore[attr-defined]
    gc_storm()


# -- backline: the engine in its own process ---------------------------------------------------
def engine_child(config: str, log_file: str, storm: object | None) -> None:
    """The engine process: the service runner as `backline serve` runs it, its log and stderr to
    `log_file`. Bench-only: `storm` (an Event) starts the GC storm on a daemon thread in this
    process once set; the status also carries the C ring's gaps and callback timing."""
    fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(fd, 2)
    sys.stderr = os.fdopen(2, "w", buffering=1)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="engine %(levelname)s %(name)s: %(message)s")
    from engine import engine as engine_module
    from engine.service import runner
    from engine.service.config import load_config

    status = engine_module.Engine.status

    def status_with_ring(self: engine_module.Engine) -> dict[str, object]:
        out = status(self)
        ring = getattr(self.sink, "out", None)
        if ring is not None:
            out.update(bench_gaps=ring.gaps, bench_callbacks=ring.callbacks, bench_busy_ns=ring.busy_ns,
                       bench_max_ns=ring.max_ns)
        return out

    engine_module.Engine.status = status_with_ring  # type: ignore[method-assign]
    if storm is not None:
        threading.Thread(target=_storm_when, args=(storm,), name="gc-storm", daemon=True).start()
    sys.exit(runner.run_service(lambda: load_config(config)))


class Backline(Engine):
    """control_bench's handles on the engine process, ready once its status says it plays."""

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        """Until the status says it plays its second bar: the first is then in the ring, the bar
        an underrun replays. A load started sooner (the GC storm slows the in-process generator
        below real time) finds no bar to loop and measures the start's silence, not the callback."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.is_alive():
            try:
                status = self.status()
                if status.get("playing") and status.get("bar", 0) >= 2:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError("the engine did not start playing" + ("" if self.proc.is_alive() else f" (exit {self.proc.exitcode})"))


@contextmanager
def running_backline(blocksize: int, tmp: Path, log_file: Path, storm: object | None) -> Iterator[Backline]:
    osc_port, http_port = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM)
    config = tmp / "config.yaml"
    config.write_text(
        f"output: jack\nblocksize: {blocksize}\npatch: {REPO / 'patches/default.yaml'}\nstate_file: null\n"
        f"lookahead_ms: {LOOKAHEAD_MS}\nfade_s: 0.05\nosc: {{port: {osc_port}}}\nmidi: {{enabled: false}}\n"
        f"web: {{port: {http_port}}}\nlearn_file: {tmp / 'learned.yaml'}\ncache_dir: {tmp / 'cache'}\n")
    proc = mp.get_context("spawn").Process(target=engine_child, args=(str(config), str(log_file), storm), name="engine")
    proc.start()
    try:
        engine = Backline(proc, osc_port, http_port)
        engine.wait_ready()
        yield engine
    finally:
        stop_engine(proc, STOP_TIMEOUT_S)


# -- the bare Python client ------------------------------------------------------------------
# `python -c PYTHON_CLIENT BLOCK`: nothing imported but sounddevice (and NumPy through it), so
# the process holds no more than a Python callback needs. A sounddevice stream on JACK whose
# callback fills zeros and counts PortAudio's underflow flags. stdin commands, one a line:
# `count` (answers {"underflows": n}), `gc` (starts the GC storm on a thread in this process),
# `stop`. Prints `ready` once the stream plays.
PYTHON_CLIENT = STORM_SOURCE + """
import json
import sys
import threading

import sounddevice as sd

underflows = [0]


def callback(outdata, frames, time_info, status):
    outdata.fill(0)
    if status.output_underflow:
        underflows[0] += 1


api = next(a for a in sd.query_hostapis() if a["name"] == "JACK Audio Connection Kit")
device = next(d for d in api["devices"] if sd.query_devices(d)["max_output_channels"] >= 2)
with sd.OutputStream(samplerate=48000, blocksize=int(sys.argv[1]), device=device, channels=2, dtype="float32",
                     callback=callback):
    print("ready", flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command == "count":
            print(json.dumps({"underflows": underflows[0]}), flush=True)
        elif command == "gc":
            threading.Thread(target=gc_storm, name="gc-storm", daemon=True).start()
            print("storm", flush=True)
        elif command == "stop":
            break
"""


class LineChild:
    """A child process spoken to by lines on stdin/stdout, every read with a deadline."""

    def __init__(self, argv: list[str], stderr: object) -> None:
        self.proc = subprocess.Popen(argv, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
                                     start_new_session=True)
        self._buf = b""

    def read_line(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()  # type: ignore[union-attr]
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError(f"no answer within {timeout:g} s")
            chunk = os.read(fd, 4096)
            if not chunk:
                raise RuntimeError(f"the child exited ({self.proc.wait()})")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode()

    def ask(self, command: str, timeout: float = 10.0) -> str:
        self.proc.stdin.write(command.encode() + b"\n")  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]
        return self.read_line(timeout)

    def close(self) -> None:
        try:
            self.proc.stdin.write(b"stop\n")  # type: ignore[union-attr]
            self.proc.stdin.close()  # type: ignore[union-attr]
            self.proc.wait(STOP_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired):
            pass
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


# -- spans ----------------------------------------------------------------------------------
@dataclass
class Span:
    """One client playing alone through one span of one condition."""

    client: str
    condition: str
    round: int
    server: int | None  # JACK xruns our watcher counted in the span; None: n/a
    own: int | None = None  # the client's own count (backline: status xruns; python: PortAudio underflows)
    own_server: int | None = None  # backline's JACK count (its monitor client)
    gaps: int | None = None  # backline: blocks the C callback found not fed
    underruns: int | None = None  # backline: generation underruns (the playback ring ran dry)
    callback_us: tuple[float, float] | None = None  # backline: C callback mean, max over its life (µs)
    rate: float | None = None  # flood messages/s actually sent
    seconds: float = 0.0
    error: str = ""
    log: tuple[str, ...] = ()  # backline: its log's lines past the expected ones
    policy: str = ""  # backline: its audio thread's scheduling, as its status says


class Watcher:
    """Our JACK client on the server: counts the server's xruns (no process callback)."""

    def __init__(self) -> None:
        import jack

        self.client = jack.Client("xrun-watch", no_start_server=True)
        self.count = 0
        self.client.set_xrun_callback(self._xrun)
        self.client.activate()

    def _xrun(self, delay_usecs: float) -> None:
        self.count += 1

    def wait_for_ports(self, prefix: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.client.get_ports(prefix, is_output=True, is_audio=True):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {prefix} ports within {timeout:g} s")
            time.sleep(0.1)

    def close(self) -> None:
        self.client.deactivate()
        self.client.close()


EXPECTED_LOG = ("runs at normal (JACK runs without real-time)",)  # a dummy server run --no-realtime


def _engine_log(log_file: Path, what: str, span: Span) -> None:
    text = log_file.read_text(errors="replace").strip() if log_file.exists() else ""
    lines = [line for line in text.splitlines() if not any(e in line for e in EXPECTED_LOG)]
    span.log = tuple(lines)
    if lines:
        print(f"xrun bench: {what}: engine log, {len(lines)} line(s):\n  " + "\n  ".join(lines[-8:]), file=sys.stderr)


def measure_span(client: str, condition: str, rnd: int, blocksize: int, seconds: float, watcher: Watcher) -> Span:
    """Start `client`, wait until it plays, start the load, settle, count for `seconds`, stop all."""
    spawn = mp.get_context("spawn")
    what = f"{client}@{blocksize}/{condition} round {rnd + 1}"
    span = Span(client, condition, rnd, None)
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="xrun-bench-")))
        log_file = tmp / "client.log"
        own: Callable[[], dict[str, int]]
        start_storm: Callable[[], None] = lambda: None
        blind = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        blind.bind(("127.0.0.1", 0))  # the flood's destination for the clients without OSC: nobody reads it
        flood_port = blind.getsockname()[1]
        try:
            if client == "backline":
                storm = spawn.Event() if condition == "gc" else None
                stack.callback(_engine_log, log_file, what, span)
                engine = stack.enter_context(running_backline(blocksize, tmp, log_file, storm))
                flood_port = engine.osc_port
                if storm is not None:
                    start_storm = storm.set

                def own() -> dict[str, int]:
                    s = engine.status()
                    return {"own": s["xruns"], "own_server": s["server_xruns"], "gaps": s.get("bench_gaps", 0),
                            "underruns": s["underruns"],
                            "callbacks": s.get("bench_callbacks", 0), "busy": s.get("bench_busy_ns", 0),
                            "max": s.get("bench_max_ns", 0)}
            elif client == "c":
                if shutil.which(C_CLIENT) is None:
                    raise RuntimeError(f"{C_CLIENT} is not installed (jackd2's examples)")
                proc = subprocess.Popen([C_CLIENT], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        start_new_session=True)
                stack.callback(stop_process, proc)
                watcher.wait_for_ports(f"{C_CLIENT_NAME}:", START_TIMEOUT_S)
                own = dict  # no count of its own
                if condition == "gc":
                    def start_storm() -> None:
                        storm_proc = subprocess.Popen([sys.executable, "-c", STORM_SOURCE + "gc_storm()\n"],
                                                      start_new_session=True)
                        stack.callback(stop_process, storm_proc)
            else:
                child = LineChild([sys.executable, "-c", PYTHON_CLIENT, str(blocksize)],
                                  stderr=stack.enter_context(log_file.open("wb")))
                stack.callback(child.close)
                if child.read_line(START_TIMEOUT_S) != "ready":
                    raise RuntimeError("the Python client did not start")

                def own() -> dict[str, int]:
                    return {"own": json.loads(child.ask("count"))["underflows"]}

                if condition == "gc":
                    def start_storm() -> None:
                        child.ask("gc")
            sender = None
            if condition == "flood":
                counter, started = spawn.Value("l", 0), spawn.Event()
                flood_s = SETTLE_S + seconds + 0.5
                sender = spawn.Process(target=flood_sender,
                                       args=(flood_port, FLOOD_RATE, flood_s, counter, FLOOD_ADDRESSES, started))
                sender.start()
                stack.callback(lambda: sender.is_alive() and sender.kill())
                if not started.wait(START_TIMEOUT_S):
                    raise RuntimeError("the flood sender did not start")
            start_storm()
            if client == "backline":
                span.policy = str(engine.status().get("realtime", ""))
            time.sleep(SETTLE_S)
            before, count0, t0 = own(), watcher.count, time.monotonic()
            time.sleep(seconds)
            count1, after = watcher.count, own()
            span.seconds = time.monotonic() - t0
            span.server = count1 - count0
            for key in ("own", "own_server", "gaps", "underruns"):
                if key in after:
                    setattr(span, key, after[key] - before[key])
            if after.get("callbacks"):
                span.callback_us = (after["busy"] / after["callbacks"] / 1000, after["max"] / 1000)
            if sender is not None:
                sender.join(seconds + 30)
                span.rate = counter.value / flood_s
        except Exception as err:  # noqa: BLE001 - one span that fails is n/a, the bench goes on
            span.server = None
            span.error = f"{type(err).__name__}: {err}"
            print(f"xrun bench: {what} n/a: {span.error}", file=sys.stderr)
            if client == "python":
                stack.callback(_child_log, log_file, what)
    return span


def _child_log(log_file: Path, what: str) -> None:
    text = log_file.read_text(errors="replace").strip() if log_file.exists() else ""
    if text:
        print(f"xrun bench: {what}: client stderr:\n  " + "\n  ".join(text.splitlines()[-8:]), file=sys.stderr)


def run_block(blocksize: int, rounds: int, seconds: float, *, realtime: bool = False) -> list[Span]:
    """Every span at one block size, on one server, interleaved."""
    spans: list[Span] = []
    with jack_server(period=blocksize, realtime=realtime):
        watcher = Watcher()
        try:
            for rnd in range(rounds):
                order = CLIENTS[rnd % len(CLIENTS):] + CLIENTS[: rnd % len(CLIENTS)]
                for condition in CONDITIONS:
                    for client in order:
                        t0 = time.monotonic()
                        span = measure_span(client, condition, rnd, blocksize, seconds, watcher)
                        spans.append(span)
                        print(f"# xrun {client}@{blocksize}/{condition} round {rnd + 1}: "
                              f"{'n/a' if span.server is None else span.server} (own {span.own}), "
                              f"{time.monotonic() - t0:.0f} s, load avg {os.getloadavg()[0]:.1f}", file=sys.stderr, flush=True)
                        time.sleep(0.5)  # the last client's ports gone before the next one starts
        finally:
            watcher.close()
    return spans


# -- rows ----------------------------------------------------------------------------------
def _fmt(values: list[int | None]) -> str:
    return ", ".join("n/a" if v is None else str(v) for v in values)


def _total(values: list[int | None]) -> int | None:
    got = [v for v in values if v is not None]
    return sum(got) if got else None


def ratio(b: int | None, c: int | None) -> tuple[float | str, str]:
    """b / c, or (b + 1) / (c + 1) where c is 0 (said so), or n/a."""
    if b is None or c is None:
        return "n/a", "a client's count is missing"
    if c == 0:
        return (b + 1) / (c + 1), f"(b+1)/(c+1) = ({b}+1)/({c}+1), the divisor being 0"
    return b / c, f"{b}/{c}"


def _paired(a: list[Span], b: list[Span]) -> tuple[int | None, int | None, int]:
    """Totals of two clients' counts over the rounds where both have one."""
    pairs = [(x.server, y.server) for x, y in zip(a, b) if x.server is not None and y.server is not None]
    if not pairs:
        return None, None, 0
    return sum(p[0] for p in pairs), sum(p[1] for p in pairs), len(pairs)


def block_rows(blocksize: int, spans: list[Span], seconds: float, *, realtime: bool = False
               ) -> tuple[list[Row], list[str], list[str], list[str]]:
    out: list[Row] = []
    over_c, not_below_py, gapped = [], [], []
    for condition in CONDITIONS:
        cell = f"@{blocksize}/{condition}" + ("/rt" if realtime else "")
        by = {c: sorted((s for s in spans if s.client == c and s.condition == condition), key=lambda s: s.round)
              for c in CLIENTS}
        counts = {c: [s.server for s in by[c]] for c in CLIENTS}
        totals = {c: _total(counts[c]) for c in CLIENTS}
        rates = [f"{s.rate:.0f}/s" for c in CLIENTS for s in by[c] if s.rate is not None]
        load = {"idle": "idle", "flood": f"OSC flood {FLOOD_RATE}/s (sent: {', '.join(rates)}; at the engine's port for "
                "backline, an unread socket for the others)",
                "gc": "GC storm (a thread in backline's and the Python client's process; its own process beside the C client)"
                }[condition]
        span_note = f"{len(by['backline'])} rounds of {seconds:g} s after {SETTLE_S:g} s settling, {load}"
        errors = "; ".join(f"{s.client} round {s.round + 1}: {s.error}" for c in CLIENTS for s in by[c] if s.error)
        b_c, c_b, n_c = _paired(by["backline"], by["c"])
        b_p, p_b, n_p = _paired(by["backline"], by["python"])
        r_c, how_c = ratio(b_c, c_b)
        r_p, how_p = ratio(b_p, p_b)
        bl = by["backline"]
        cb = [s.callback_us for s in bl if s.callback_us is not None]
        out.append(Row(f"xrun.backline{cell}", "n/a" if totals["backline"] is None else totals["backline"], "xruns",
                       f"JACK xruns per round: {_fmt(counts['backline'])}; {span_note}; backline's own xruns "
                       f"(PortAudio underflows + unfed blocks) {_fmt([s.own for s in bl])}, of them gaps "
                       f"{_fmt([s.gaps for s in bl])}, its JACK count {_fmt([s.own_server for s in bl])}, "
                       f"generation underruns {_fmt([s.underruns for s in bl])}"
                       + (f"; C callback mean {max(x[0] for x in cb):.1f} us at most, longest {max(x[1] for x in cb):.0f} us"
                          if cb else "")
                       + f"; C client {totals['c']} ({_fmt(counts['c'])}), python {totals['python']} "
                       f"({_fmt(counts['python'])}); ratio backline/C {_ratio_text(r_c)}"
                       + (f"; audio thread {', '.join(sorted({s.policy for s in bl if s.policy}))}" if realtime else "")
                       + _log_note(bl)
                       + (f"; n/a: {errors}" if errors else "")))
        gaps = _total([s.gaps for s in bl])
        if gaps:
            gapped.append(f"{blocksize}/{condition} ({gaps})")
        out.append(Row(f"xrun.backline_gaps{cell}", "n/a" if gaps is None else gaps, "blocks",
                       f"blocks backline's C callback found not fed (the feeder late: zeros played; not a JACK xrun, "
                       f"not in the ratios) per round: {_fmt([s.gaps for s in bl])}; PortAudio underflows "
                       f"{_fmt([None if s.own is None or s.gaps is None else s.own - s.gaps for s in bl])}"))
        out.append(Row(f"xrun.c{cell}", "n/a" if totals["c"] is None else totals["c"], "xruns",
                       f"{C_CLIENT} (C, no Python); JACK xruns per round: {_fmt(counts['c'])}; {span_note}"))
        py = by["python"]
        out.append(Row(f"xrun.python{cell}", "n/a" if totals["python"] is None else totals["python"], "xruns",
                       f"bare sounddevice client (Python callback filling zeros); JACK xruns per round: "
                       f"{_fmt(counts['python'])}; its PortAudio underflows {_fmt([s.own for s in py])}; {span_note}"))
        out.append(Row(f"xrun.ratio_c{cell}", r_c, "x", f"backline / C client, JACK xruns over {n_c} paired rounds: "
                       f"{how_c}; target <= {TARGET_C:g}"))
        out.append(Row(f"xrun.ratio_python{cell}", r_p, "x", f"backline / bare Python client, JACK xruns over {n_p} "
                       f"paired rounds: {how_p}; target < 1"))
        if not isinstance(r_c, float) or r_c > TARGET_C:
            over_c.append(f"{blocksize}/{condition} ({b_c} vs {c_b})")
        if b_p is None or p_b is None or not (b_p < p_b or b_p == p_b == 0):
            not_below_py.append(f"{blocksize}/{condition} ({b_p} vs {p_b})")
    return out, over_c, not_below_py, gapped


def _log_note(spans: list[Span]) -> str:
    """How many unexpected lines the engine logged per round, and the distinct messages (tid and numbers cut)."""
    if not any(s.log for s in spans):
        return "; engine log clean"
    kinds = sorted({" ".join(line.split(": ", 1)[-1].split()[:8]) for s in spans for line in s.log})
    return f"; engine log lines per round {', '.join(str(len(s.log)) for s in spans)}: " + " | ".join(kinds[:4])


def _ratio_text(r: float | str) -> str:
    return f"{r:.2f}" if isinstance(r, float) and math.isfinite(r) else str(r)


def rows(quick: bool, *, realtime: bool = False, blocks: tuple[int, ...] = BLOCKS) -> list[Row]:
    rounds, seconds = (1, 5.0) if quick else (3, 30.0)
    out: list[Row] = []
    over_c: list[str] = []
    not_below_py: list[str] = []
    gapped: list[str] = []
    cells = 0
    for blocksize in blocks:
        spans = run_block(blocksize, rounds, seconds, realtime=realtime)
        got, over, below, gaps = block_rows(blocksize, spans, seconds, realtime=realtime)
        out += got
        over_c += over
        not_below_py += below
        gapped += gaps
        cells += len(CONDITIONS)
    cpus = len(os.sched_getaffinity(0))
    where = (f"JACK dummy 48 kHz {'--realtime' if realtime else '--no-realtime'}, {cpus} CPUs shared with the bench, "
             "the flood sender and the storm")
    if gapped:
        where = (f"JACK xruns only: backline also played unfed blocks (gaps, zeros) in {', '.join(gapped)}, "
                 f"which are not in these counts; {where}")
    suffix = "@rt" if realtime else ""
    out.append(Row(f"xrun.target_c{suffix}", f"{cells - len(over_c)} of {cells}", "cells",
                   f"cells where backline's JACK xruns <= {TARGET_C:g}x the C client's (ratio as in ratio_c)"
                   + (f"; not: {', '.join(over_c)}" if over_c else "") + f"; {where}"))
    out.append(Row(f"xrun.target_python{suffix}", f"{cells - len(not_below_py)} of {cells}", "cells",
                   "cells where backline's JACK xruns are below the bare Python client's (both 0 counts as below)"
                   + (f"; not: {', '.join(not_below_py)}" if not_below_py else "") + f"; {where}"))
    return out


def main(argv: list[str] | None = None) -> None:
    """`python -m bench.xrun_bench [--quick] [--realtime] [--blocks 256 128] [--format markdown]`."""
    import argparse

    from bench.__main__ import table

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 round of 5 s spans (a smoke test)")
    parser.add_argument("--realtime", action="store_true",
                        help="run jackd --realtime (SCHED_FIFO where granted), as a stage box's jackd.service does")
    parser.add_argument("--blocks", type=int, nargs="+", default=list(BLOCKS))
    parser.add_argument("--format", choices=("text", "markdown"), default="text")
    args = parser.parse_args(argv)
    print(table(rows(args.quick, realtime=args.realtime, blocks=tuple(args.blocks)), fmt=args.format))


if __name__ == "__main__":
    main()
