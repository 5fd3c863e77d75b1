"""The web page's figures, through the real engine: `backline run --web-port` in its own
process (synth, real-time WAV output), reached over real sockets.

1. page -> parameter: a plain WebSocket client (the page's protocol, no browser) sends a new
   temperature; the time until a registered OSC client receives the engine's feedback for
   it (the change applied at its frame, then sent on). The OSC round trip beside it, in the
   same run, is the reference: an OSC message from one socket, feedback to another.
2. OSC -> page: the same OSC message's change as the page receives it.
   Both include the wait for the next generated frame (the control drain runs once a
   frame, 40 ms), so about 20 ms on average is the frame, not the transport.
3. engine CPU with 0 and with 10 pages connected (each receives the status ten times a
   second and every change), spans alternating, several rounds.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder
from websockets.sync.client import connect

from bench import Row

REPO = Path(__file__).resolve().parents[1]


def _free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _osc(address: str, *args: object) -> bytes:
    builder = OscMessageBuilder(address)
    for arg in args:
        builder.add_arg(arg)
    return builder.build().dgram


class _Page:
    """The page's WebSocket: every change message with the time it arrived."""

    def __init__(self, url: str) -> None:
        self.ws = connect(url, open_timeout=5).__enter__()
        self.changes: list[tuple[float, str, object]] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for text in self.ws:
                m = json.loads(text)
                if "path" in m:
                    self.changes.append((time.perf_counter(), m["path"], m["value"]))
        except Exception:  # noqa: BLE001 - closed
            pass

    def close(self) -> None:
        self.ws.close()


def _wait(pred, timeout: float = 1.0) -> bool:
    end = time.perf_counter() + timeout
    while time.perf_counter() < end:
        if pred():
            return True
        time.sleep(0.0005)
    return False


def rows(quick: bool) -> list[Row]:
    web_port, osc_port = _free_port(socket.SOCK_STREAM), _free_port(socket.SOCK_DGRAM)
    samples, span_s, rounds = (20, 3.0, 1) if quick else (200, 10.0, 3)
    with tempfile.TemporaryDirectory() as tmp:
        duration = 30 + samples * 0.2 + rounds * 2 * span_s
        cmd = [sys.executable, "-m", "engine", "run", "--patch", str(REPO / "patches/default.yaml"),
               "--output", f"wav:{Path(tmp) / 'out.wav'}", "--web-port", str(web_port), "--osc-port", str(osc_port),
               "--no-midi", "--duration", str(duration)]
        log = open(Path(tmp) / "engine.log", "w")
        engine = subprocess.Popen(cmd, cwd=tmp, stdout=log, stderr=subprocess.STDOUT)
        try:
            if not _wait(lambda: _status(web_port) is not None, 60):
                raise RuntimeError(f"the engine did not serve /status: {(Path(tmp) / 'engine.log').read_text()[-800:]}")
            return _measure(engine.pid, web_port, osc_port, samples, span_s, rounds)
        finally:
            engine.terminate()
            engine.wait(20)
            log.close()


def _status(port: int) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=1) as reply:
            return json.loads(reply.read())
    except OSError:
        return None


def _measure(pid: int, web_port: int, osc_port: int, samples: int, span_s: float, rounds: int) -> list[Row]:
    engine_osc = ("127.0.0.1", osc_port)
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # registered: gets every change
    listener.bind(("127.0.0.1", 0))
    listener.settimeout(1.0)
    listener.sendto(_osc("/backline/register"), engine_osc)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # unregistered: sends only
    page = _Page(f"ws://127.0.0.1:{web_port}/ws")
    time.sleep(0.5)
    page_to_param, osc_to_page, osc_to_osc, missed = [], [], [], 0
    rng = np.random.default_rng(1)

    def feedback(value: float) -> float | None:
        while True:
            try:
                data = listener.recv(4096)
            except OSError:
                return None
            m = OscMessage(data)
            if m.address == "/backline/sampling/temperature" and abs(m.params[0] - value) < 1e-4:
                return time.perf_counter()

    for i in range(samples):
        value = round(0.2 + 0.001 * i, 4)  # every value new: its feedback is unambiguous
        t0 = time.perf_counter()
        page.ws.send(json.dumps({"path": "sampling.temperature", "value": value}))
        got = feedback(value)
        if got is None:
            missed += 1
        else:
            page_to_param.append(got - t0)
        time.sleep(rng.uniform(0.02, 0.06))
        value = round(2.2 + 0.001 * i, 4)
        t0 = time.perf_counter()
        sender.sendto(_osc("/backline/sampling/temperature", value), engine_osc)
        got = feedback(value)
        if got is None or not _wait(lambda: any(abs(v - value) < 1e-4 for _, p, v in page.changes
                                                if p == "sampling.temperature")):
            missed += 1
        else:
            osc_to_osc.append(got - t0)
            arrived = next(t for t, p, v in page.changes if p == "sampling.temperature" and abs(v - value) < 1e-4)
            osc_to_page.append(arrived - t0)
        time.sleep(rng.uniform(0.02, 0.06))
    page.close()

    cpu: dict[int, list[float]] = {0: [], 10: []}
    for _ in range(rounds):
        for pages in (0, 10):
            clients = [_Page(f"ws://127.0.0.1:{web_port}/ws") for _ in range(pages)]
            time.sleep(0.5)
            c0, t0 = _cpu_s(pid), time.perf_counter()
            time.sleep(span_s)
            cpu[pages].append(1000 * (_cpu_s(pid) - c0) / (time.perf_counter() - t0))
            for c in clients:
                c.close()
    status = _status(web_port) or {}
    listener.close()
    sender.close()

    def pct(values: list[float], q: int) -> float:
        return round(1000 * float(np.percentile(values, q)), 2) if values else float("nan")

    n = f"{samples} changes each, {missed} missed"
    out = []
    for name, values, what in (("page_to_param", page_to_param, "WebSocket -> applied at its frame -> OSC feedback"),
                               ("osc_to_page", osc_to_page, "OSC -> applied -> the page's WebSocket"),
                               ("osc_to_osc", osc_to_osc, "reference: OSC -> applied -> OSC feedback")):
        out.append(Row(f"web.{name}_p50", pct(values, 50), "ms", f"{what}; {n}"))
        out.append(Row(f"web.{name}_p99", pct(values, 99), "ms", what))
    for pages, values in cpu.items():
        out.append(Row(f"web.engine_cpu@{pages}pages", round(float(np.median(values)), 1), "ms CPU / s",
                       f"median of {len(values)} spans of {span_s:g} s, interleaved: "
                       + ", ".join(f"{v:.0f}" for v in values)))
    out.append(Row("web.underruns", int(status.get("underruns", -1)), "", "ring underruns over the whole run"))
    return out
