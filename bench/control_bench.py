"""Control-layer figures: control -> parameter and control -> sound latency, and an OSC flood.

1. control -> parameter (in-process): OSC over real UDP from another process into the
   OscServer -> Dispatcher; a thread drains once per generated frame (40 ms), as the engine
   does. Latency = message sent -> event submitted to the engine at the next frame.
2. flood drain (in-process): 5,000 messages/s to 8 parameters and drum hits; drain time
   per frame and memory growth of the control layer (tracemalloc).
3. control -> sound, through the real engine: `backline serve`'s runner in its own process
   on a dummy JACK server (tests/jackserver.py), PortAudio/JACK sink, default patch at
   120 BPM, at a stated look-ahead. The generator does the synth's work (and keeps the
   synth's snapshots, so rollback works) but outputs a 1 kHz tone of a known level, halved
   in a frame whose top-k is below 20. A JACK client of ours records the engine's output;
   latency = JACK frame time of the sample where the tone's level passes halfway to the new
   one - JACK frame time when the message was sent (the device's own output latency, one
   period, comes on top). `/backline/master/gain` shapes the output after the fitter;
   `/backline/sampling/top_k` reaches the generator's frames, so through the stretcher's
   window with `fit: stretch` (`control.sound_latency_*@top_k.stretch|resample`, both
   fitters interleaved in one run). Look-ahead 100, 200 and 400 ms, each with rollback on
   and off, interleaved in one run (#14's target with rollback: p99 <= one frame + one period
   + a chunk's compute, about 60 ms, at every look-ahead; #15's stretcher adds its 26.5 ms window).
4. flood through the engine: spans of 30 s (quick: 5 s) alternate, idle then 5,000 OSC
   messages/s, several times on one running engine; for each span: PortAudio xruns, JACK
   server xruns (seen by our client), ring underruns, engine CPU, control -> sound latency
   measured all through the span, and the engine process's RSS before and after. A third
   span sends the same flood to a socket nobody reads: the sender's own load. This VM
   has its own xrun floor (a C JACK client alone gets some), so the idle spans are the
   baseline. The audio callback is C (engine/audio/rtout.c), so the flood's Python work
   no longer competes with it for the GIL; bench/xrun_bench.py sets these xruns beside a
   C and a bare Python JACK client.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import multiprocessing as mp
import os
import signal
import socket
import statistics
import sys
import tempfile
import threading
import time
import tracemalloc
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.udp_client import SimpleUDPClient

from bench import Row
from engine.conditioning import FrameConditioning
from engine.control.dispatcher import FRAME_S, Dispatcher
from engine.control.osc_server import OscServer
from engine.generator.base import Generator
from engine.generator.synth import SynthGenerator
from engine.jack import leave_jack
from engine.params import ControlEvent
from engine.units import FIT_MODES, FRAME_SAMPLES, SAMPLE_RATE

REPO = Path(__file__).resolve().parents[1]
LEVEL = 0.5
TONE_HZ = 1000  # 48 samples a period
FLOOD_RATE = 5000
FLOOD_ADDRESSES = ("/backline/style/0/weight", "/backline/style/1/weight", "/backline/mean/weight",
                   "/backline/sampling/temperature", "/backline/style/ramp_beats", "/backline/sampling/cfg_style",
                   "/backline/sampling/cfg_notes", "/backline/sampling/cfg_drums")


class TimedTarget:
    """Records when each event reached the engine side."""

    def __init__(self) -> None:
        self.arrivals: list[tuple[float, ControlEvent]] = []

    def submit(self, event: ControlEvent) -> None:
        self.arrivals.append((time.perf_counter(), event))

    def status(self) -> dict[str, object]:
        return {}

    def add_listener(self, fn) -> None:
        return None

    def value_of(self, path: str) -> object:
        return None

    def playhead(self) -> int:
        return 0


class CountingTarget(TimedTarget):
    """Counts events without keeping them, so memory growth measures the control layer only."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def submit(self, event: ControlEvent) -> None:
        self.count += 1


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    return s[min(len(s) - 1, int(q / 100 * len(s)))]


def frame_thread(dispatcher: Dispatcher, stop: threading.Event, drains: list[float]) -> None:
    """Plays the engine: drain once per generated frame, timing each drain."""
    next_t = time.perf_counter()
    while not stop.is_set():
        next_t += FRAME_S
        t0 = time.perf_counter()
        dispatcher.drain()
        drains.append(time.perf_counter() - t0)
        stop.wait(max(0.0, next_t - time.perf_counter()))


def latency_sender(port: int, count: int, gap: float, sent) -> None:
    client = SimpleUDPClient("127.0.0.1", port)
    for i in range(count):
        sent[i] = time.perf_counter()
        client.send_message("/backline/mean/weight", (i % 1000) / 1000 + 0.0001)
        time.sleep(gap)  # pacing a load generator, not a deadline


def flood_sender(port: int, rate: int, seconds: float, counter, addresses: Sequence[str], started=None) -> None:
    """Another process: `rate` messages/s, every tenth a drum hit, the rest to `addresses` (values 0..0.99).

    The datagrams are built once, so that the sender's own CPU (it shares the machine) stays
    small. Sets the `started` event (if given) just before the first message."""
    def dgram(n: int) -> bytes:
        if n % 10 == 9:
            return OscMessageBuilder("/backline/drum/hit").build().dgram
        builder = OscMessageBuilder(addresses[n % len(addresses)])
        builder.add_arg((n % 100) / 100)
        return builder.build().dgram

    cycle = [dgram(n) for n in range(math.lcm(10, len(addresses), 100))]
    dest = ("127.0.0.1", port)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        if started is not None:
            started.set()
        start, n = time.perf_counter(), 0
        while (now := time.perf_counter()) - start < seconds:
            due = int((now - start) * rate)
            while n < due:
                sock.sendto(cycle[n % len(cycle)], dest)
                n += 1
            time.sleep(0.001)  # pacing a load generator, not a deadline
    counter.value = n


def run_latency(count: int) -> list[float]:
    target = TimedTarget()
    dispatcher = Dispatcher(target)
    stop, drains = threading.Event(), []
    with OscServer(dispatcher, port=0) as server:
        ft = threading.Thread(target=frame_thread, args=(dispatcher, stop, drains), daemon=True)
        ft.start()
        sent = mp.Array("d", count)
        p = mp.Process(target=latency_sender, args=(server.address[1], count, 0.0173, sent))  # 17.3 ms: not frame-locked
        p.start()
        p.join()
        time.sleep(3 * FRAME_S)
        stop.set()
        ft.join()
    # message i counts as applied when an event carrying it, or a later message that superseded
    # it in the same frame, reaches the engine
    applied = sorted((t, round((e.value - 0.0001) * 1000)) for t, e in target.arrivals)
    latencies = []
    for i in range(count):
        first = next((t for t, idx in applied if idx >= i % 1000 and t >= sent[i]), None)
        if first is not None:
            latencies.append((first - sent[i]) * 1e3)
    return latencies


def run_flood(rate: int, seconds: float) -> dict[str, float]:
    target = CountingTarget()
    dispatcher = Dispatcher(target, max_queued=4096)
    stop, drains = threading.Event(), []
    with OscServer(dispatcher, port=0) as server:
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        ft = threading.Thread(target=frame_thread, args=(dispatcher, stop, drains), daemon=True)
        ft.start()
        counter = mp.Value("l", 0)
        centroids = [f"/backline/centroid/{i}/weight" for i in range(8)]
        p = mp.Process(target=flood_sender, args=(server.address[1], rate, seconds, counter, centroids))
        p.start()
        peak_pending = 0
        while p.is_alive():
            peak_pending = max(peak_pending, dispatcher.pending)
            p.join(0.005)
        time.sleep(3 * FRAME_S)
        stop.set()
        ft.join()
        grown = tracemalloc.get_traced_memory()[0] - base
        tracemalloc.stop()
    events = target.count
    return {"sent": counter.value, "received": server.received, "handled": server.handled, "events": events,
            "drain_p50_us": pct(drains, 50) * 1e6, "drain_p99_us": pct(drains, 99) * 1e6,
            "drain_max_us": max(drains) * 1e6, "peak_pending": peak_pending,
            "mem_growth_kib": grown / 1024, "rejects": sum(dispatcher.rejects.counts().values())}


class LevelGenerator(Generator):
    """Does the synth's work, then outputs a 1 kHz sine of a known level: a change shows on
    the sample where it starts (a tone, not a constant: a stretcher's phase vocoder does not
    hold a constant level through steps, a tone's it does)."""

    name = "synth-level"

    def __init__(self) -> None:
        self._synth = SynthGenerator()
        self._pos = 0  # samples generated: the tone's phase, kept in snapshots

    def reset(self, seed: int) -> None:
        self._synth.reset(seed)
        self._pos = 0

    def generate(self, conditioning: Sequence[FrameConditioning]) -> np.ndarray:
        """Amplitude LEVEL, or half of it in a frame generated with top-k below 20: a sampling
        change shows where the frame it reached starts to play, through the fitter (the
        flood moves other sampling settings, never top-k)."""
        out = self._synth.generate(conditioning)
        n = len(out)
        tone = np.sin(2 * np.pi * TONE_HZ * (self._pos + np.arange(n)) / SAMPLE_RATE)
        amplitude = np.repeat([LEVEL if f.sampling.top_k >= 20 else LEVEL / 2 for f in conditioning], FRAME_SAMPLES)[:n]
        out[:] = (amplitude * tone)[:, None]
        self._pos += n
        return out

    def snapshot(self) -> object:
        return self._synth.snapshot(), self._pos

    def restore(self, snapshot: object) -> None:
        synth, self._pos = snapshot  # type: ignore[misc]
        self._synth.restore(synth)


def engine_main(config: str) -> None:
    """The engine process: the service runner with the level generator (quiet log)."""
    logging.basicConfig(level=logging.WARNING, format="engine %(levelname)s %(name)s: %(message)s")
    from engine.service import runner
    from engine.service.config import load_config

    runner.create_generator = lambda name, **options: LevelGenerator()
    sys.exit(runner.run_service(lambda: load_config(config)))


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Engine:
    """Handles on the engine process: OSC, the HTTP status, its RSS."""

    def __init__(self, proc: mp.Process, osc_port: int, http_port: int) -> None:
        self.proc, self.osc_port, self.http_port = proc, osc_port, http_port
        self.osc = SimpleUDPClient("127.0.0.1", osc_port)

    def status(self) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/status", timeout=5) as reply:
            return json.loads(reply.read())

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def cpu_s(self) -> float:
        """User + system CPU seconds of the engine process so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until the engine answers /backline/status over OSC (audio is flowing by then)."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            s.settimeout(0.5)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.proc.is_alive():
                s.sendto(OscMessageBuilder("/backline/status").build().dgram, ("127.0.0.1", self.osc_port))
                try:
                    if OscMessage(s.recv(65536)).address == "/backline/status":
                        return
                except TimeoutError:
                    continue
        raise RuntimeError("the engine did not start")


@contextmanager
def running_engine(lookahead_ms: float, *, rollback: bool = True, fit: str | None = None) -> Iterator[Engine]:
    """The runner in its own process on the current JACK server (JACK_DEFAULT_SERVER); stopped with SIGTERM.

    `rollback=False` writes `rollback: false` into its config (the engine's default is on);
    `fit` writes `fit:` (default: the engine's, stretch)."""
    osc_port, http_port = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM)
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "config.yaml"
        config.write_text(
            f"output: jack\npatch: {REPO / 'patches/default.yaml'}\nstate_file: null\nlookahead_ms: {lookahead_ms}\n"
            f"fade_s: 0.05\nosc: {{port: {osc_port}}}\nmidi: {{enabled: false}}\nweb: {{port: {http_port}}}\n"
            f"learn_file: {Path(tmp) / 'learned.yaml'}\n" + ("" if rollback else "rollback: false\n")
            + (f"fit: {fit}\n" if fit else ""))
        proc = mp.get_context("spawn").Process(target=engine_main, args=(str(config),), name="engine")
        proc.start()
        engine = Engine(proc, osc_port, http_port)
        try:
            engine.wait_ready()
            yield engine
        finally:
            stop_engine(proc)


def stop_engine(proc: mp.Process, timeout: float = 15.0) -> None:
    """SIGTERM, as systemd stops the service; SIGKILL if it has not exited after `timeout`."""
    if proc.is_alive():
        os.kill(proc.pid, signal.SIGTERM)
    proc.join(timeout)
    if proc.is_alive():
        proc.kill()
        proc.join()


class Probe:
    """Our JACK client: records the engine's left output (LevelGenerator's tone) and notices
    where its level crosses halfway to the one asked for.

    Rising: the first sample above halfway. Falling: the sample after the last one above
    halfway, once a whole period of the tone has stayed below. A stretched step is smeared
    over the stretcher's window, so halfway is the point taken as heard; the gain
    envelope's step is a short ramp."""

    PERIOD = SAMPLE_RATE // TONE_HZ

    def __init__(self) -> None:
        import jack

        self.client = jack.Client("bench-probe", no_start_server=True)
        self.port = self.client.inports.register("in")
        self.last = float("nan")  # the tone's level over the latest block
        self.halfway = float("nan")
        self.falling = True
        self.found: int | None = None
        self._above: int | None = None  # frame of the latest sample above halfway (falling)
        self.armed = False
        self.xruns = 0
        self.client.set_process_callback(self._process)
        self.client.set_xrun_callback(self._xrun)
        self.client.activate()
        source = self.client.get_ports("backline:", is_output=True, is_audio=True)[0]
        self.client.connect(source, self.port)

    def arm(self, steady: float, target: float) -> None:
        self.halfway, self.falling, self.found, self._above = (steady + target) / 2, target < steady, None, None
        self.armed = True

    def _process(self, frames: int) -> None:
        """JACK's process thread: follow the tone's level past halfway (test code: it allocates)."""
        buf = np.abs(self.port.get_array())
        base = self.client.last_frame_time
        if self.armed and self.found is None:
            above = np.flatnonzero(buf > self.halfway)
            if not self.falling and len(above):
                self.found = base + int(above[0])
            elif self.falling:
                if len(above):
                    self._above = base + int(above[-1])
                elif self._above is not None and base + frames - self._above > self.PERIOD:
                    self.found = self._above + 1
        self.last = float(buf.max())

    def _xrun(self, delay_usecs: float) -> None:
        """JACK's notification thread: count the server's xruns."""
        self.xruns += 1

    def close(self) -> None:
        leave_jack(self.client)


PROBES: dict[str, tuple[str, float, float]] = {
    "gain": ("/backline/master/gain", 1.0, 0.5),  # applied after the generator and fitter (the gain envelope)
    "top_k": ("/backline/sampling/top_k", 40, 5),  # reaches the generator's frames (LevelGenerator)
}
"""A probe's OSC address and the values that give LEVEL and LEVEL / 2."""


def sound_latencies(engine: Engine, probe: Probe, control: str = "gain") -> Iterator[float | None]:
    """Toggle `control` (PROBES) between full and half level; each time: JACK frame time at
    send -> the output sample where the tone's level passes halfway (ms), or None if no change showed within 5 s.
    Endless: the caller stops."""
    address, full, half = PROBES[control]
    wait = threading.Event()
    for i in itertools.count():
        deadline = time.monotonic() + 5
        while not any(abs(probe.last - x) < 0.05 * LEVEL for x in (LEVEL, LEVEL / 2)) and time.monotonic() < deadline:
            wait.wait(0.002)
        steady = LEVEL if abs(probe.last - LEVEL) < abs(probe.last - LEVEL / 2) else LEVEL / 2
        probe.arm(steady, LEVEL / 2 if steady == LEVEL else LEVEL)
        sent = probe.client.frame_time
        engine.osc.send_message(address, half if steady == LEVEL else full)
        deadline = time.monotonic() + 5
        while probe.found is None and time.monotonic() < deadline:
            wait.wait(0.001)
        probe.armed = False
        yield None if probe.found is None else (probe.found - sent) * 1e3 / SAMPLE_RATE
        wait.wait(0.05 + (i % 7) * 0.0131)  # not locked to the frame or block grid


@dataclass
class Span:
    """What one idle or flood span of the running engine did."""

    seconds: float
    xruns: int
    server_xruns: int
    underruns: int
    cpu_pct: float
    latencies: list[float]
    lost: int  # gain changes that never showed
    rss_kib: tuple[int, int]
    sent: int = 0


SpanKind = Literal["idle", "blind", "flood"]
SPAN_KINDS: tuple[SpanKind, ...] = ("idle", "blind", "flood")


def measure_span(engine: Engine, probe: Probe, seconds: float, kind: SpanKind) -> Span:
    """`seconds` with no OSC (idle), with the flood sent to a socket nobody reads (blind: the
    sender's and the kernel's share of the machine) or with the flood at the engine; the
    control -> sound latency is probed all through."""
    spawn = mp.get_context("spawn")
    counter, started = spawn.Value("l", 0), spawn.Event()
    sender = None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as blind:
        blind.bind(("127.0.0.1", 0))
        if kind != "idle":  # the span starts with the first message, not with the sender's start-up
            port = engine.osc_port if kind == "flood" else blind.getsockname()[1]
            sender = spawn.Process(target=flood_sender, args=(port, FLOOD_RATE, seconds, counter, FLOOD_ADDRESSES, started))
            sender.start()
            started.wait(60)
        return _span(engine, probe, seconds, sender, counter)


def _span(engine: Engine, probe: Probe, seconds: float, sender: mp.Process | None, counter) -> Span:
    before, server0, cpu0, rss0 = engine.status(), probe.xruns, engine.cpu_s(), engine.rss_kib()
    t0 = time.monotonic()
    latencies, lost = [], 0
    for latency in sound_latencies(engine, probe):
        if latency is None:
            lost += 1
        else:
            latencies.append(latency)
        if not (sender.is_alive() if sender is not None else time.monotonic() - t0 < seconds):
            break
    if sender is not None:
        sender.join()
    elapsed = time.monotonic() - t0
    cpu = (engine.cpu_s() - cpu0) / elapsed * 100
    after, server1 = engine.status(), probe.xruns
    time.sleep(1.0)  # RSS once the last messages are handled
    return Span(elapsed, after["xruns"] - before["xruns"], server1 - server0, after["underruns"] - before["underruns"],
                cpu, latencies, lost, (rss0, engine.rss_kib()), counter.value)


def engine_rows(quick: bool) -> list[Row]:
    """Control -> sound latency and the flood, through the engine on a dummy JACK server."""
    sys.path.insert(0, str(REPO / "tests"))
    from jackserver import jack_server

    rows: list[Row] = []
    cpus = len(os.sched_getaffinity(0))
    where = f"JACK dummy 48 kHz/256, engine in its own process, {cpus} CPUs shared with other work"
    with jack_server():
        if not quick:
            rows += rollback_rows(where)
        rows += fit_rows(where, rounds=1 if quick else 3)
        with running_engine(200) as engine:
            probe = Probe()
            try:
                spans = [measure_span(engine, probe, 5.0 if quick else 30.0, kind)
                         for _ in range(1 if quick else 3) for kind in SPAN_KINDS]
            finally:
                probe.close()
        rows += flood_engine_rows("sink", spans, f"C audio callback, look-ahead 200 ms, {where}")
    return rows


ROLLBACK_LOOKAHEADS_MS = (100, 200, 400)
ROLLBACK_PROBES = 60


def fit_rows(where: str, *, rounds: int) -> list[Row]:
    """Control -> sound with rollback at 200 ms look-ahead through each fitter, interleaved in
    `rounds`: master gain (after the fitter) and top-k (through the generator's frames,
    so through the stretcher's window: issue #15's added latency, measured live)."""
    got: dict[tuple[str, str], list[float]] = {}
    lost: dict[tuple[str, str], int] = {}
    for _ in range(rounds):
        for fit in FIT_MODES:
            with running_engine(200, fit=fit) as engine:
                probe = Probe()
                try:
                    for control in PROBES:
                        values = list(itertools.islice(sound_latencies(engine, probe, control), ROLLBACK_PROBES))
                        got.setdefault((control, fit), []).extend(x for x in values if x is not None)
                        lost[control, fit] = lost.get((control, fit), 0) + values.count(None)
                        address, full, _ = PROBES[control]
                        engine.osc.send_message(address, full)  # back to full level for the next probe
                        time.sleep(0.5)
                finally:
                    probe.close()
    out = []
    for (control, fit), lat in got.items():
        note = (f"n={len(lat)} ({lost[control, fit]} never showed) over {rounds} interleaved rounds, look-ahead 200 ms, "
                f"rollback on, fit {fit}, {control} toggled (heard: where the tone passes halfway); {where}")
        out += [Row(f"control.sound_latency_p50@{control}.{fit}", pct(lat, 50), "ms", note),
                Row(f"control.sound_latency_p99@{control}.{fit}", pct(lat, 99), "ms", note)]
    return out


def rollback_rows(where: str) -> list[Row]:
    """Control -> sound at each look-ahead with rollback on and off, interleaved in one run;
    the engine's own status (margin, rollbacks, work) read just before it stops."""
    out = []
    for lookahead in ROLLBACK_LOOKAHEADS_MS:
        for rollback in (True, False):
            t0 = time.monotonic()
            with running_engine(lookahead, rollback=rollback) as engine:
                probe = Probe()
                try:
                    got = list(itertools.islice(sound_latencies(engine, probe), ROLLBACK_PROBES))
                    server_xruns = probe.xruns
                finally:
                    probe.close()
                status = engine.status()
            lat = [x for x in got if x is not None]
            kind = "rollback" if rollback else "no_rollback"
            note = (f"n={len(lat)} ({len(got) - len(lat)} never showed), look-ahead {lookahead} ms, rollback "
                    f"{'on' if rollback else 'off'}; engine at the end: margin_ms {status.get('margin_ms')}, "
                    f"rollbacks {status.get('rollbacks')}, missed {status.get('rollbacks_missed')}, "
                    f"late splices {status.get('late_splices', 'n/a')}, "
                    f"work {status.get('work')}, underruns {status.get('underruns')}, xruns {status.get('xruns')} "
                    f"(JACK {server_xruns}); {time.monotonic() - t0:.0f} s; load avg {os.getloadavg()[0]:.1f}; {where}")
            out += [Row(f"control.sound_latency_p50@{lookahead}ms.{kind}", pct(lat, 50), "ms", note),
                    Row(f"control.sound_latency_p99@{lookahead}ms.{kind}", pct(lat, 99), "ms", note)]
    return out


def flood_engine_rows(variant: str, spans: list[Span], where: str) -> list[Row]:
    """Idle, blind and flood spans side by side: each figure is the median over the runs, every run in the notes."""
    by_kind = {kind: spans[i::len(SPAN_KINDS)] for i, kind in enumerate(SPAN_KINDS)}
    med = statistics.median
    out = []
    for kind, of in by_kind.items():
        what = {"idle": "no OSC", "blind": "the flood sent to a socket nobody reads",
                "flood": "the flood at the engine"}[kind]
        sent = f" ({', '.join(f'{s.sent / s.seconds:.0f}/s' for s in of)})" if kind != "idle" else ""
        out.append(Row(f"control.{kind}_xruns@{variant}", med(s.xruns for s in of), "xruns",
                       f"PortAudio xruns per {of[0].seconds:.0f} s, {what}{sent}, runs: {_runs(of, 'xruns')}; "
                       f"JACK server xruns {_runs(of, 'server_xruns')}; underruns {_runs(of, 'underruns')}; "
                       f"engine CPU {', '.join(f'{s.cpu_pct:.0f}%' for s in of)}; {where}"))
    flood = by_kind["flood"]
    out.append(Row(f"control.flood_rss_growth@{variant}", sum(s.rss_kib[1] - s.rss_kib[0] for s in flood), "KiB",
                   "engine VmRSS over the flood spans (before -> 1 s after): "
                   + "; ".join(f"{s.rss_kib[0]} -> {s.rss_kib[1]}" for s in flood)))
    for kind in ("idle", "flood"):
        values = [x for s in by_kind[kind] for x in s.latencies]
        note = f"n={len(values)} ({sum(s.lost for s in by_kind[kind])} never showed) through the {kind} spans; {where}"
        out += [Row(f"control.sound_latency_p50@{variant}.{kind}", pct(values, 50), "ms", note),
                Row(f"control.sound_latency_p99@{variant}.{kind}", pct(values, 99), "ms", note)]
    return out


def _runs(spans: list[Span], field: str) -> str:
    return ", ".join(str(getattr(s, field)) for s in spans)


def rows(quick: bool) -> list[Row]:
    """Every control figure; the engine rows need jackd (skipped with the reason if it cannot start)."""
    runs = 1 if quick else 3
    param = [x for _ in range(runs) for x in run_latency(100 if quick else 300)]
    note = f"n={len(param)} over {runs} runs, drained once per 40 ms frame; no look-ahead (engine side)"
    out = [Row("control.param_latency_p50", pct(param, 50), "ms", note),
           Row("control.param_latency_p99", pct(param, 99), "ms", note)]
    seconds = 2.0 if quick else 5.0
    flood = run_flood(FLOOD_RATE, seconds)
    note = (f"{flood['sent']} sent in {seconds:g} s, {flood['received']} received, {flood['handled']} parsed "
            f"(the rest coalesced unread), {flood['events']} events")
    out += [Row("control.flood_drain_p99", flood["drain_p99_us"], "us", note),
            Row("control.flood_drain_max", flood["drain_max_us"], "us", note),
            Row("control.flood_mem_growth", flood["mem_growth_kib"], "KiB", "tracemalloc, control layer in-process")]
    try:
        out += engine_rows(quick)
    except Exception as err:  # noqa: BLE001 - no jackd here: the in-process rows still count
        if os.environ.get("CI"):
            raise
        print(f"control bench: engine rows skipped: {type(err).__name__}: {err}", file=sys.stderr)
    return out


if __name__ == "__main__":
    from bench.__main__ import table

    print(table(rows("--quick" in sys.argv), fmt="text"))
