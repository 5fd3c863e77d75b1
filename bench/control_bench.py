"""Control-layer benchmarks: control -> parameter latency, and an OSC flood.

    python bench/control_bench.py [--runs 3] [--seconds 5] [--rate 5000]

1. latency: OSC messages over real UDP (python-osc client in another process) into the
   OscServer -> Dispatcher; a frame thread drains once per generated frame (40 ms), as the
   engine does. Latency = message sent -> event submitted to the engine at the next frame.
   This is the control -> parameter part; control -> sound adds the engine's look-ahead
   (the lead's scheduler), which this bench does not include.
2. flood: `--rate` messages/s for `--seconds` to 8 parameters and drum hits; reports the
   drain time per frame (p50/p99/max), events submitted, peak pending, and memory growth
   (tracemalloc of this process, which includes the bench's per-frame drain-time list,
   about 80 bytes per frame). Audio xruns need the engine and are not measured here.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import threading
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pythonosc.udp_client import SimpleUDPClient  # noqa: E402

from engine.control.dispatcher import FRAME_S, Dispatcher  # noqa: E402
from engine.control.osc_server import OscServer  # noqa: E402
from engine.params import ControlEvent  # noqa: E402


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


class CountingTarget(TimedTarget):
    """Counts events without keeping them, so memory growth measures the control layer only."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def submit(self, event: ControlEvent) -> None:
        self.count += 1


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
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


def flood_sender(port: int, rate: int, seconds: float, counter) -> None:
    client = SimpleUDPClient("127.0.0.1", port)
    start, n = time.perf_counter(), 0
    while (now := time.perf_counter()) - start < seconds:
        due = int((now - start) * rate)
        while n < due:
            if n % 10 == 9:
                client.send_message("/backline/drum/hit", [])
            else:
                client.send_message(f"/backline/centroid/{n % 8}/weight", (n % 100) / 100)
            n += 1
        time.sleep(0.001)
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
        p = mp.Process(target=flood_sender, args=(server.address[1], rate, seconds, counter))
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
    return {"sent": counter.value, "received": dispatcher.received, "events": events,
            "drain_p50_us": pct(drains, 50) * 1e6, "drain_p99_us": pct(drains, 99) * 1e6,
            "drain_max_us": max(drains) * 1e6, "peak_pending": peak_pending,
            "mem_growth_kib": grown / 1024, "rejects": sum(dispatcher.rejects.counts().values())}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--count", type=int, default=300, help="latency messages per run")
    ap.add_argument("--rate", type=int, default=5000)
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()
    print(f"frame = {FRAME_S * 1e3:.0f} ms (drain period); look-ahead not included (engine side)")
    for run in range(args.runs):
        lat = run_latency(args.count)
        print(f"latency run {run + 1}: n={len(lat)} control->parameter p50={pct(lat, 50):.1f} ms "
              f"p99={pct(lat, 99):.1f} ms max={max(lat):.1f} ms mean={statistics.fmean(lat):.1f} ms")
    for run in range(args.runs):
        r = run_flood(args.rate, args.seconds)
        print(f"flood run {run + 1}: {args.rate}/s for {args.seconds:g} s: sent={r['sent']} received={r['received']} "
              f"events={r['events']} drain p50={r['drain_p50_us']:.0f} us p99={r['drain_p99_us']:.0f} us "
              f"max={r['drain_max_us']:.0f} us peak_pending={r['peak_pending']} "
              f"mem_growth={r['mem_growth_kib']:.0f} KiB rejects={r['rejects']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
