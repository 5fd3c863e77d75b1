"""Live output figures: callback time, xruns under load, and the look-ahead actually kept.

Each run plays the synth generator through the real Engine and DeviceSink into a dummy
JACK server (period = block size) for 60 s (quick: 10 s). The callback is C
(engine/audio/rtout.c: PortAudio's audio thread never enters the interpreter) and times
itself with CLOCK_MONOTONIC around each armed block; the rows read its counters
(`sink.out.busy_ns / sink.out.callbacks` for the mean, `sink.out.max_ns` for the
longest), so the figure is our callback's own work, not PortAudio's or JACK's around it.
No per-block times are kept, hence no percentiles. Background load is 0, 1 or 2
busy-loop processes (`while True: pass`) on a 2-core machine; the first level that shows
an xrun is reported. Look-ahead is sampled on every scheduling-loop tick as
`ring.written - playhead`. xruns are the sink's: PortAudio's underflow flags plus blocks
the C callback found not fed (`sink.out.gaps`, also shown alone); JACK's own xrun count
while playing is beside them.

Each run is its own process (`python -m bench.audio_bench BLOCK LOAD SECONDS RATE`, one
JSON line out): PortAudio keeps one JACK client per process, and a run that hangs (seen
here: PortAudio waiting in start/stop for a JACK cycle that never came, on the first
128-frame server after 256-frame ones in one process) is cut by a timeout and reported.

The machine's own floor is measured beside each block size, because a VM can miss a
period with no help from us: `cyclictest` (rt-tests; SCHED_FIFO 80) wakes a thread every
period for the same time and reports how late it woke, and `jack_simple_client` (JACK's
C example, a sine, no Python) plays alone through the same dummy server while JACK's
xrun callback counts. A third reference is a bare sounddevice client, a Python callback
that fills zeros (`python -m bench.audio_bench --python-reference BLOCK SECONDS`): the
cost of PortAudio plus a Python callback, without backline's other threads. backline's
xruns are read against those three (bench/xrun_bench.py compares the three clients side
by side, interleaved, under load).

The machine is shared while these run: quote figures with the load they ran under.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import jack
import numpy as np

from bench import Row
from engine.audio.sinks import DeviceSink, OutputSpec, find_device
from engine.engine import Engine
from engine.generator import create_generator
from engine.patch import load_patch
from engine.units import SAMPLE_RATE

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from jackserver import jack_server, portaudio_jack, stop_process  # noqa: E402  (the tests' JACK starter; one copy)

PATCH = REPO / "patches" / "default.yaml"
LOADS = (0, 1, 2)
BLOCKS = (256, 128)
LARGER_BLOCKS = (512, 1024)  # idle only: the smallest block this machine plays without an xrun


def _busy(n: int, stack: ExitStack) -> None:
    for _ in range(n):
        proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        stack.callback(proc.wait)
        stack.callback(proc.kill)


def _play(blocksize: int, load: int, seconds: float, *, rate: int = SAMPLE_RATE) -> dict[str, float]:
    """One run through a fresh dummy JACK server: the C callback's counters, look-ahead percentiles."""
    ticks: list[int] = []
    with ExitStack() as stack:
        stack.enter_context(portaudio_jack(rate=rate, period=blocksize))
        spec = OutputSpec("jack", blocksize=blocksize)
        engine = Engine(patch=load_patch(PATCH), generator=create_generator("synth"), status_line=False,
                        sink_factory=lambda ring: DeviceSink(ring, spec))
        sink = engine.sink
        assert isinstance(sink, DeviceSink)
        engine.on_tick = lambda: ticks.append(engine.ring.written - sink.playhead)
        _busy(load, stack)
        engine.run(duration_s=seconds)
    out = sink.out
    ahead = np.asarray(ticks[len(ticks) // 10 :], dtype=np.float64) * 1000 / SAMPLE_RATE  # after start-up
    return {
        "mean": out.busy_ns / max(1, out.callbacks) / 1000.0, "max": out.max_ns / 1000.0,
        "xruns": sink.xruns, "gaps": out.gaps, "server": sink.server_xruns, "underruns": engine.ring.underruns,
        "ahead_p50": float(np.percentile(ahead, 50)), "ahead_min": float(ahead.min()), "blocks": out.callbacks,
    }


def _reference_xruns(blocksize: int, seconds: float) -> int | None:
    """JACK's xrun count with `jack_simple_client` as the only audio client: the floor of this
    machine and driver for a client with no Python in it. None where it is not installed."""
    if shutil.which("jack_simple_client") is None:
        return None
    with jack_server(period=blocksize):
        client = subprocess.Popen(["jack_simple_client"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            with _server_xruns() as xruns:
                time.sleep(seconds)
        finally:
            stop_process(client)
    return xruns[0]


@contextmanager
def _server_xruns() -> Iterator[list[int]]:
    """A JACK client on the current server that only counts its xruns; yields [count]."""
    watcher = jack.Client("xrun-watch", no_start_server=True)
    xruns = [0]
    watcher.set_xrun_callback(lambda _delay: xruns.__setitem__(0, xruns[0] + 1))
    watcher.activate()
    try:
        yield xruns
    finally:
        watcher.deactivate()
        watcher.close()


def _python_reference(blocksize: int, seconds: float) -> dict[str, int]:
    """A bare sounddevice client on JACK: a Python callback that fills zeros, nothing else in the
    process. Its xruns are the cost of PortAudio plus a Python callback (the GIL to take, the
    binding's calls) on this machine, with no scheduler, generator or control thread beside it."""
    import sounddevice as sd

    underflows = [0]

    def callback(outdata: np.ndarray, frames: int, time_info: object, status: sd.CallbackFlags) -> None:
        outdata.fill(0)
        if status.output_underflow:
            underflows[0] += 1

    with portaudio_jack(period=blocksize), _server_xruns() as server:
        sd._terminate()  # PortAudio scans for JACK when it starts: again, now the server runs
        sd._initialize()
        with sd.OutputStream(samplerate=SAMPLE_RATE, blocksize=blocksize, device=find_device(sd, "jack", None), channels=2,
                             dtype="float32", callback=callback):
            time.sleep(seconds)
    return {"xruns": underflows[0], "server": server[0]}


def _wakeup_latency(blocksize: int, seconds: float) -> dict[str, float] | None:
    """`cyclictest` at one wake-up per period (SCHED_FIFO 80): how late this machine wakes a
    real-time thread, in µs. None where rt-tests is missing or RT priority is refused."""
    if shutil.which("cyclictest") is None:
        return None
    period_us = round(blocksize * 1e6 / SAMPLE_RATE)
    loops = int(seconds * 1e6 / period_us)
    proc = subprocess.run(["cyclictest", "-m", "-q", "-t", "1", "-p", "80", "-i", str(period_us), "-l", str(loops),
                           "-h", "100000"], capture_output=True, text=True)
    bins = [tuple(map(int, line.split()[:2])) for line in proc.stdout.splitlines() if line[:1].isdigit()]
    late = np.repeat([b for b, _ in bins], [n for _, n in bins])
    if proc.returncode or late.size == 0:
        return None
    return {"p99": float(np.percentile(late, 99)), "p999": float(np.percentile(late, 99.9)), "max": float(late.max()),
            "over_half": int((late > period_us / 2).sum()), "period": period_us, "wakeups": int(late.size)}


def _floor_rows(blocksize: int, seconds: float) -> list[Row]:
    out: list[Row] = []
    ref = _reference_xruns(blocksize, seconds)
    out.append(Row(f"audio.reference_xruns@{blocksize}", "n/a" if ref is None else ref, "count",
                   f"jack_simple_client (C) alone on the same dummy server, {seconds:g} s, idle"))
    py = _child(["--python-reference", str(blocksize), str(seconds)], f"python reference {blocksize}", seconds)
    out.append(Row(f"audio.python_reference_xruns@{blocksize}", "n/a" if py is None else int(py["xruns"]), "count",
                   f"a bare sounddevice client (Python callback filling zeros) alone, {seconds:g} s, idle"
                   + ("; the run hung or failed (see stderr)" if py is None else f"; JACK server {int(py['server'])}")))
    lat = _wakeup_latency(blocksize, seconds)
    if lat is None:
        out.append(Row(f"audio.wakeup_late_max@{blocksize}", "n/a", "us", "cyclictest (rt-tests) missing or no RT priority"))
    else:
        out.append(Row(f"audio.wakeup_late_max@{blocksize}", lat["max"], "us",
                       f"cyclictest SCHED_FIFO 80 every {lat['period']} us, {lat['wakeups']} wake-ups: p99 {lat['p99']:g}, "
                       f"p99.9 {lat['p999']:g}; {lat['over_half']} woke over half a period late"))
    return out


def _run(blocksize: int, load: int, seconds: float, *, rate: int = SAMPLE_RATE) -> dict[str, float] | None:
    """`_play` in a fresh process; None if it hung or failed."""
    return _child([str(blocksize), str(load), str(seconds), str(rate)], f"audio bench {blocksize}/{load}/{rate}", seconds)


def _child(args: list[str], what: str, seconds: float) -> dict[str, float] | None:
    """`python -m bench.audio_bench ARGS` in a fresh process (PortAudio keeps one JACK client per
    process); its last JSON line, or None if it hung or failed (its stderr tail is printed)."""
    limit = seconds * 2 + 60
    child = subprocess.Popen([sys.executable, "-m", "bench.audio_bench", *args],
                             cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = child.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)  # the run and its busy loops (its jackd has its own session)
        child.communicate()
        print(f"{what}: hung, cut after {limit:g} s", file=sys.stderr)
        return None
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if child.returncode or not lines:
        print(f"{what} failed:\n{stderr[-1500:]}", file=sys.stderr)
        return None
    return json.loads(lines[-1])


def _rows(where: str, r: dict[str, float] | None, note: str) -> list[Row]:
    if r is None:
        return [Row(f"audio.xruns{where}", "hung", "", note + "; the run hung or failed (see stderr)")]
    return [
        Row(f"audio.callback_mean{where}", r["mean"], "us",
            f"C callback, busy_ns / callbacks over {int(r['blocks'])} armed blocks; {note}"),
        Row(f"audio.callback_max{where}", r["max"], "us", f"C callback, longest armed block (max_ns); {note}"),
        Row(f"audio.xruns{where}", int(r["xruns"]), "count",
            f"PortAudio underflows + unfed blocks (gaps {int(r['gaps'])}); JACK server {int(r['server'])}; "
            f"generation underruns {int(r['underruns'])}"),
        Row(f"audio.lookahead_p50{where}", r["ahead_p50"], "ms", "ring.written - playhead per loop tick"),
        Row(f"audio.lookahead_min{where}", r["ahead_min"], "ms", "after the first 10% of the run"),
    ]


def rows(quick: bool) -> list[Row]:
    seconds = 10.0 if quick else 60.0
    out: list[Row] = []
    first_xrun: dict[int, int | str] = {}
    for blocksize in BLOCKS:
        first_xrun[blocksize] = "none"
        for load in LOADS:
            r = _run(blocksize, load, seconds)
            out += _rows(f"@{blocksize}/load{load}", r, f"{seconds:g} s, {load} busy process(es)")
            if first_xrun[blocksize] == "none" and r is not None and r["xruns"] + r["server"] > 0:
                first_xrun[blocksize] = load
        out += _floor_rows(blocksize, seconds)
    for blocksize in LARGER_BLOCKS:
        out += _rows(f"@{blocksize}/load0", _run(blocksize, 0, seconds), f"{seconds:g} s, idle")
        out += _floor_rows(blocksize, seconds)
    for blocksize, load in first_xrun.items():
        out.append(Row(f"audio.first_xrun_load@{blocksize}", load, "busy processes",
                       f"lowest of {LOADS} with a PortAudio or JACK xrun"))
    out += _rows("@256/44k1", _run(256, 0, seconds, rate=44100), f"JACK at 44.1 kHz, soxr HQ feeder, {seconds:g} s")
    return out


if __name__ == "__main__":
    if sys.argv[1] == "--python-reference":
        print(json.dumps(_python_reference(int(sys.argv[2]), float(sys.argv[3]))))
    else:
        block, load_, secs, rate_ = sys.argv[1:5]
        print(json.dumps(_play(int(block), int(load_), float(secs), rate=int(rate_))))
