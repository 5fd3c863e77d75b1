"""Live output figures: callback time, xruns under load, and the look-ahead actually kept.

Each run plays the synth generator through the real Engine and DeviceSink into a dummy
JACK server (period = block size) for 60 s (quick: 10 s). The callback is timed inside
PortAudio's audio thread: a subclass wraps `_callback` with `perf_counter_ns` and stores
the difference into a preallocated int64 array (no allocation besides the ints Python
makes anyway), so the figure includes the binding's own cost of calling us but not
PortAudio's. Background load is 0, 1 or 2 busy-loop processes (`while True: pass`) on a
2-core machine; the first level that shows an xrun is reported. Look-ahead is sampled
on every scheduling-loop tick as `ring.written - playhead`.

Each run is its own process (`python -m bench.audio_bench BLOCK LOAD SECONDS RATE`, one
JSON line out): PortAudio keeps one JACK client per process, and a run that hangs (seen
here: PortAudio waiting in start/stop for a JACK cycle that never came, on the first
128-frame server after 256-frame ones in one process) is cut by a timeout and reported.

The machine is shared while these run: quote figures with the load they ran under.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from bench import Row
from engine.audio.ring import PlaybackRing
from engine.audio.sinks import DeviceSink, OutputSpec
from engine.conditioning import SAMPLE_RATE
from engine.engine import Engine
from engine.generator import create_generator
from engine.patch import load_patch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from jackserver import portaudio_jack  # noqa: E402  (the tests' JACK starter; one copy of it)

PATCH = REPO / "patches" / "default.yaml"
LOADS = (0, 1, 2)
BLOCKS = (256, 128)


class TimedDeviceSink(DeviceSink):
    """A DeviceSink whose callback time is recorded per block, inside the audio thread."""

    def __init__(self, ring: PlaybackRing, spec: OutputSpec, *, capacity: int) -> None:
        super().__init__(ring, spec)
        self.times_ns = np.zeros(capacity, dtype=np.int64)
        self.timed = 0

    def _callback(self, outdata: np.ndarray, frames: int, time_info: object, status: object) -> None:
        """PortAudio's audio thread: the real callback, timed into the preallocated array."""
        t0 = time.perf_counter_ns()
        super()._callback(outdata, frames, time_info, status)
        i = self.timed
        if i < len(self.times_ns):
            self.times_ns[i] = time.perf_counter_ns() - t0
            self.timed = i + 1


def _busy(n: int, stack: ExitStack) -> None:
    for _ in range(n):
        proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        stack.callback(proc.wait)
        stack.callback(proc.kill)


def _play(blocksize: int, load: int, seconds: float, *, rate: int = SAMPLE_RATE) -> dict[str, float]:
    """One run through a fresh dummy JACK server; counters and percentiles."""
    ticks: list[int] = []
    with ExitStack() as stack:
        stack.enter_context(portaudio_jack(rate=rate, period=blocksize))
        spec = OutputSpec("jack", blocksize=blocksize)
        blocks = int(seconds * rate / blocksize) + 1000
        engine = Engine(patch=load_patch(PATCH), generator=create_generator("synth"), status_line=False,
                        sink_factory=lambda ring: TimedDeviceSink(ring, spec, capacity=blocks))
        sink = engine.sink
        assert isinstance(sink, TimedDeviceSink)
        engine.on_tick = lambda: ticks.append(engine.ring.written - sink.playhead)
        _busy(load, stack)
        engine.run(duration_s=seconds)
    times = sink.times_ns[: sink.timed] / 1000.0
    ahead = np.asarray(ticks[len(ticks) // 10 :], dtype=np.float64) * 1000 / SAMPLE_RATE  # after start-up
    return {
        "p50": float(np.percentile(times, 50)), "p99": float(np.percentile(times, 99)), "max": float(times.max()),
        "xruns": sink.xruns, "server": sink.server_xruns, "underruns": engine.ring.underruns,
        "ahead_p50": float(np.percentile(ahead, 50)), "ahead_min": float(ahead.min()), "blocks": sink.timed,
    }


def _run(blocksize: int, load: int, seconds: float, *, rate: int = SAMPLE_RATE) -> dict[str, float] | None:
    """`_play` in a fresh process; None if it hung or failed (its stderr tail is printed)."""
    limit = seconds * 2 + 60
    child = subprocess.Popen([sys.executable, "-m", "bench.audio_bench", str(blocksize), str(load), str(seconds), str(rate)],
                             cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = child.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)  # the run and its busy loops (its jackd has its own session)
        child.communicate()
        print(f"audio bench {blocksize}/{load}/{rate}: hung, cut after {limit:g} s", file=sys.stderr)
        return None
    proc = subprocess.CompletedProcess(child.args, child.returncode, stdout, stderr)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode or not lines:
        print(f"audio bench {blocksize}/{load}/{rate} failed:\n{proc.stderr[-1500:]}", file=sys.stderr)
        return None
    return json.loads(lines[-1])


def _rows(where: str, r: dict[str, float] | None, note: str) -> list[Row]:
    if r is None:
        return [Row(f"audio.xruns{where}", "hung", "", note + "; the run hung or failed (see stderr)")]
    return [
        Row(f"audio.callback_p50{where}", r["p50"], "us", f"{note}, {int(r['blocks'])} blocks"),
        Row(f"audio.callback_p99{where}", r["p99"], "us", note),
        Row(f"audio.callback_max{where}", r["max"], "us", note),
        Row(f"audio.xruns{where}", int(r["xruns"]), "count", f"PortAudio (+FIFO); JACK server {int(r['server'])}; "
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
    for blocksize, load in first_xrun.items():
        out.append(Row(f"audio.first_xrun_load@{blocksize}", load, "busy processes",
                       f"lowest of {LOADS} with a PortAudio or JACK xrun"))
    out += _rows("@256/44k1", _run(256, 0, seconds, rate=44100), f"JACK at 44.1 kHz, soxr HQ feeder, {seconds:g} s")
    return out


if __name__ == "__main__":
    block, load_, secs, rate_ = sys.argv[1:5]
    print(json.dumps(_play(int(block), int(load_), float(secs), rate=int(rate_))))
