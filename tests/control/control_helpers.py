"""Shared helpers for the control tests: waiting without fixed sleeps, UDP OSC sockets, liblo's oscdump."""

from __future__ import annotations

import shlex
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from pathlib import Path

import mido
import rtmidi
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.udp_client import SimpleUDPClient

from engine.service.config import load_config
from jackserver import stop_process
from engine.service.notify import Notifier
from engine.service.runner import Service

class FrameLog:
    """Stands between the scheduler and its real generator and keeps every frame's conditioning
    by frame index: what the generator received for the audio that plays (appended on the
    scheduler thread; a rollback's restore cuts the frames it generates again; read a copy
    with `list(log.frames)`). `received` counts every frame generated, again or not."""

    def __init__(self, engine) -> None:
        self.inner = engine.scheduler.generator
        self.frames: list = []
        self.received = 0
        engine.scheduler.generator = self

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def generate(self, conditioning):
        self.frames.extend(conditioning)
        self.received += len(conditioning)
        return self.inner.generate(conditioning)

    def snapshot(self):
        return self.inner.snapshot(), len(self.frames)

    def restore(self, snapshot) -> None:
        inner, frames = snapshot
        self.inner.restore(inner)
        del self.frames[frames:]


LIBLO = bool(shutil.which("oscsend") and shutil.which("oscdump"))


@contextmanager
def led_monitor(client: str, port: str) -> Iterator[list[mido.Message]]:
    """A virtual JACK MIDI input (a surface's LEDs) that collects what arrives, polled from a
    test thread as the engine polls its own inputs: no Python runs in JACK's process thread,
    where waiting for the GIL on a loaded machine makes the client late and JACK replays
    its previous buffer (the same message over and over)."""
    port_in = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, name=client)
    port_in.open_virtual_port(port)
    got: list[mido.Message] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.wait(0.005):
            for data, _ in iter(port_in.get_message, None):
                got.append(mido.Message.from_bytes(data))

    thread = threading.Thread(target=poll, name="led-monitor", daemon=True)
    thread.start()
    try:
        yield got
    finally:
        stop.set()
        thread.join(2)
        port_in.close_port()
        port_in.delete()


def wait_for(pred: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Wait on an event with a short timeout until `pred` holds (no fixed sleeps)."""
    ev = threading.Event()
    for _ in range(int(timeout / 0.01)):
        if pred():
            return True
        ev.wait(0.01)
    return pred()


def client_socket() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(5)
    return s


def send(sock: socket.socket, dest: tuple[str, int], address: str, *args: object) -> None:
    b = OscMessageBuilder(address)
    for a in args:
        b.add_arg(a)
    sock.sendto(b.build().dgram, dest)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def oscdump() -> Iterator[tuple[int, list[str]]]:
    """liblo's oscdump on a free port, ready once it printed a probe; yields (port, its lines); stopped by pid."""
    port = free_udp_port()
    proc = subprocess.Popen(["oscdump", "-L", str(port)], stdout=subprocess.PIPE, text=True, start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    probe = SimpleUDPClient("127.0.0.1", port)
    try:
        assert wait_for(lambda: probe.send_message("/probe", 1) or any("/probe" in ln for ln in lines), 10), "oscdump not ready"
        yield port, lines
    finally:
        stop_process(proc)


def dumped(line: str) -> tuple[str, tuple[object, ...]]:
    """One oscdump line (`<timetag> /address types args...`) as (address, typed args)."""
    _, address, *rest = shlex.split(line)
    types, args = (rest[0], rest[1:]) if rest else ("", [])
    convert = {"f": float, "d": float, "i": int, "h": int, "s": str}
    return address, tuple(convert.get(t, str)(a) for t, a in zip(types, args))


@contextmanager
def serving(config: Path, *, listener: Callable[[Service], Callable[[str, object, str], None]] | None = None
            ) -> Iterator[Service]:
    """The engine as `backline run`/`serve` build it (the service runner), its loop on a thread.

    `listener(service)` returns an engine listener, added before the loop starts. Stops with a
    fade and closes everything (OSC, MIDI ports, the sink) on exit.
    """
    service = Service(load_config(config), notifier=Notifier())
    service.start()
    try:
        if listener is not None:
            service.engine.add_listener(listener(service))
        loop = threading.Thread(target=service.run, name="test-engine-loop", daemon=True)
        loop.start()
        yield service
    finally:
        service.terminate()
        if "loop" in locals():
            loop.join(10)
        service.close()
