"""OSC over real UDP sockets: python-osc and liblo's oscsend in, feedback out to liblo's oscdump."""

from __future__ import annotations

import math
import random
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.udp_client import SimpleUDPClient

from control_helpers import LIBLO, client_socket, oscdump, send, wait_for
from control_target import MemoryTarget
from engine.control.dispatcher import Dispatcher
from engine.control.mapping import MappingSet, load_file
from engine.control.osc_server import OscServer
from engine.control.osc_space import STATUS_FIELDS

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def rig() -> Iterator[tuple[MemoryTarget, Dispatcher, OscServer]]:
    target = MemoryTarget()
    dispatcher = Dispatcher(target, MappingSet.of([load_file(REPO / "mappings/osc-generic.yaml")]))
    with OscServer(dispatcher, host="127.0.0.1", port=0) as server:
        yield target, dispatcher, server


def test_python_osc_client_reaches_engine(rig):
    target, dispatcher, server = rig
    SimpleUDPClient(*server.address).send_message("/backline/sampling/temperature", 1.25)
    SimpleUDPClient(*server.address).send_message("/backline/surface/fader/2", 0.5)
    assert wait_for(lambda: dispatcher.pending == 2)
    dispatcher.drain()
    got = {e.target: e.value for e in target.events}
    assert got == {"sampling.temperature": 1.25, "style.1.weight": 0.5}
    assert all(e.source.startswith("osc:127.0.0.1:") for e in target.events)


@pytest.mark.skipif(not LIBLO, reason="liblo-tools (oscsend, oscdump) not installed")
def test_liblo_oscsend_reaches_engine(rig):
    target, dispatcher, server = rig
    host, port = server.address
    subprocess.run(["oscsend", host, str(port), "/backline/master/gain", "f", "0.5"], check=True, timeout=10)
    subprocess.run(["oscsend", host, str(port), "/backline/patch/load", "ss", "chorus", "bar"], check=True, timeout=10)
    assert wait_for(lambda: dispatcher.pending == 2)
    dispatcher.drain()
    assert [(e.target, e.value, e.quantize) for e in target.events] == [
        ("patch.load", "chorus", "bar"), ("master.gain", 0.5, "now")]


def test_status_reply(rig):
    _, _, server = rig
    with client_socket() as s:
        send(s, server.address, "/backline/status")
        msg = OscMessage(s.recv(65536))
    assert msg.address == "/backline/status"
    assert msg.params == [12, 2.5, 121.0, "verse", 160.0, 3, 1.75, 1, 1, "midi:x", "lost", 0, "", 0.0, 0, 0.0, 0, 0, "", "",
                          "", 0.0, "", 0.0, 0.0, 0.0]


def status_round_trip(sock: socket.socket, dest, tries: int = 5) -> bool:
    """Ask for status until a reply comes (a request can be lost in a UDP flood)."""
    sock.settimeout(1.0)
    for _ in range(tries):
        send(sock, dest, "/backline/status")
        try:
            while True:
                if OscMessage(sock.recv(65536)).address == "/backline/status":
                    return True
        except TimeoutError:
            continue
    return False


def test_status_fills_missing_keys_with_typed_defaults():
    target = MemoryTarget({"bar": 3, "beat": 1.0, "tempo": 90.0, "patch": "p", "lookahead_ms": 80.0, "xruns": 0,
                           "speed": 2.5})
    with OscServer(Dispatcher(target), port=0) as server, client_socket() as s:
        send(s, server.address, "/backline/status")
        assert OscMessage(s.recv(65536)).params == [3, 1.0, 90.0, "p", 80.0, 0, 2.5, 0, 0, "", "", 0, "", 0.0, 0, 0.0, 0, 0, "", "",
                                                    "", 0.0, "", 0.0, 0.0, 0.0]


def test_status_says_why_the_generator_is_not_ready():
    """A refused token: `generator_state` refused, `generator_error` which server and token file."""
    why = ("generator server ws://gpu:9400 refused the token (the token file /etc/backline/generator-token): "
           "wrong or missing token")
    target = MemoryTarget({"bar": 1, "generator_state": "refused", "generator_error": why})
    with OscServer(Dispatcher(target), port=0) as server, client_socket() as s:
        send(s, server.address, "/backline/status")
        reply = dict(zip((name for name, _, _ in STATUS_FIELDS), OscMessage(s.recv(65536)).params))
    assert reply["generator_state"] == "refused" and reply["generator_error"] == why


@pytest.mark.skipif(not LIBLO, reason="liblo-tools (oscsend, oscdump) not installed")
def test_feedback_reaches_oscdump_without_echo(rig):
    target, dispatcher, server = rig
    host, port = server.address
    with oscdump() as (dump_port, lines), client_socket() as a:
        send(a, server.address, "/backline/register", dump_port)  # client A receives feedback at oscdump's port
        assert wait_for(lambda: server.clients == [("127.0.0.1", dump_port)])
        # a value from another client (liblo's oscsend) is fed back to A
        subprocess.run(["oscsend", host, str(port), "/backline/surface/fader/1", "f", "0.25"], check=True, timeout=10)
        assert wait_for(lambda: dispatcher.pending == 1)
        dispatcher.drain()
        target.apply()
        assert wait_for(lambda: any("/backline/surface/fader/1" in ln for ln in lines))
        # a value A sent itself is not echoed back to A; a later change from elsewhere is
        send(a, server.address, "/backline/mean/weight", 0.75)
        assert wait_for(lambda: dispatcher.pending == 1)
        dispatcher.drain()
        target.apply()
        target.change("master.gain", 0.5, "patch")  # e.g. a patch load
        assert wait_for(lambda: any("/backline/master/gain" in ln for ln in lines))
    text = "\n".join(lines)
    assert "/backline/style/0/weight f 0.25" in text
    assert "/backline/surface/fader/1 f 0.25" in text
    assert "/backline/master/gain f 0.5" in text
    assert "/backline/mean/weight" not in text


def test_sender_feedback_mode(rig):
    target, dispatcher, _ = rig
    with OscServer(dispatcher, port=0, feedback="sender") as server, client_socket() as a:
        send(a, server.address, "/backline/status")
        a.recv(65536)
        target.change("sampling.top_k", 40, "patch")
        msg = OscMessage(a.recv(65536))
    assert (msg.address, msg.params) == ("/backline/sampling/top_k", [40])


def test_forbidden_network_is_rejected_and_counted():
    target = MemoryTarget()
    dispatcher = Dispatcher(target)
    with OscServer(dispatcher, port=0, allow=["10.0.0.0/8"]) as server:
        SimpleUDPClient(*server.address).send_message("/backline/master/gain", 0.5)
        assert wait_for(lambda: dispatcher.rejects.counts().get("forbidden") == 1)
    assert dispatcher.pending == 0


def test_fuzz_random_bytes_and_wrong_messages(rig):
    target, dispatcher, server = rig
    rnd = random.Random(1234)
    addresses = ["/backline/sampling/temperature", "/backline/style/3/weight", "/backline/tempo/lock",
                 "/backline/patch/load", "/backline/register", "/backline/learn", "/backline/surface/fader/1",
                 "/backline/nope", "/backline/note/200", "/backline/style/99/weight", "/x"]
    junk_args = [float("nan"), float("inf"), -1e30, 1e30, "text", b"\x00\x01", True, False, 2**31 - 1, -5, 0.5]
    with client_socket() as s:
        for i in range(600):
            if i % 2:
                data = bytes(rnd.getrandbits(8) for _ in range(rnd.randint(0, 64)))
                if i % 3 == 0:
                    data = b"/backline/x\x00" + data  # looks like OSC at first sight
                s.sendto(data, server.address)
            else:
                b = OscMessageBuilder(rnd.choice(addresses))
                for _ in range(rnd.randint(0, 3)):
                    b.add_arg(rnd.choice(junk_args))
                s.sendto(b.build().dgram, server.address)
            if i % 50 == 49:  # a status round trip paces the flood (UDP drops what a full buffer cannot take)
                assert status_round_trip(s, server.address)
        # the server still answers afterwards
        assert status_round_trip(s, server.address)
    dispatcher.drain()
    counts = dispatcher.rejects.counts()
    assert counts.get("malformed", 0) > 0
    assert counts.get("wrong_type", 0) + counts.get("wrong_count", 0) > 0
    assert counts.get("unknown_address", 0) > 0
    for e in target.events:  # whatever got through is valid and finite
        assert not (isinstance(e.value, float) and not math.isfinite(e.value))
