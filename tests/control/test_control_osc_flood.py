"""OSC floods over real UDP sockets: bursts are read as one batch and coalesced per sender and
address to the latest value; triggers, actions and switches all arrive; rejects still count.

A burst is made deterministic by sending it to the bound socket before the server thread
starts: loopback UDP queues each datagram at `sendto`, so the first wake-up reads them all.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from control_helpers import client_socket, send, wait_for
from control_target import MemoryTarget
from engine.control.dispatcher import Dispatcher
from engine.control.mapping import MappingSet, load_file, parse
from engine.control.osc_server import OscServer, coalesces

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def idle() -> Iterator[tuple[MemoryTarget, Dispatcher, OscServer]]:
    """A bound server whose thread has not started yet (the test starts it after its burst)."""
    target = MemoryTarget()
    dispatcher = Dispatcher(target, MappingSet.of([load_file(REPO / "mappings/osc-generic.yaml")]))
    server = OscServer(dispatcher, port=0)
    try:
        yield target, dispatcher, server
    finally:
        server.close()


def run_burst(server: OscServer, sent: int) -> None:
    server.start()
    assert wait_for(lambda: server.received == sent), f"{server.received} of {sent} datagrams read"


def test_burst_to_one_parameter_applies_the_last_value(idle):
    target, dispatcher, server = idle
    values = [i / 400 for i in range(1, 301)]
    with client_socket() as s:
        for v in values:
            send(s, server.address, "/backline/mean/weight", v)
    run_burst(server, len(values))
    dispatcher.drain()
    assert [(e.target, e.value) for e in target.events] == [("mean.weight", pytest.approx(values[-1]))]
    assert server.handled < len(values)
    assert server.handled + server.coalesced == len(values)


def test_triggers_actions_and_switches_in_a_burst_are_all_delivered(idle):
    target, dispatcher, server = idle
    with client_socket() as s:
        for i in range(40):
            send(s, server.address, "/backline/drum/hit")
            send(s, server.address, "/backline/surface/fader/1", i / 40)  # mapped value: coalesces
            send(s, server.address, "/backline/surface/freeze", float(i % 2))  # momentary switch: every press and release
            send(s, server.address, "/backline/note/60", 1.0 if i % 2 == 0 else 0.0)  # notes: never coalesced
        send(s, server.address, "/backline/tempo/tap")
        send(s, server.address, "/backline/patch/next")
    run_burst(server, 162)
    dispatcher.drain()
    by_target: dict[str, list[object]] = {}
    for e in target.events:
        by_target.setdefault(e.target, []).append(e.value)
    assert len(by_target["drum.hit"]) == 40
    assert by_target["note.60"] == [1.0, 0.0] * 20
    assert by_target["style.0.weight"] == [pytest.approx(39 / 40)]
    assert by_target["tempo.tap"] == [None] and by_target["patch.next"] == [None]
    assert server.coalesced == 39  # only the fader's superseded values


def test_each_sender_keeps_its_own_latest_value(idle):
    target, dispatcher, server = idle
    with client_socket() as a, client_socket() as b:
        for i in range(50):
            send(a, server.address, "/backline/sampling/temperature", 0.5 + i / 100)
            send(b, server.address, "/backline/sampling/temperature", 1.5 + i / 100)
        ports = (a.getsockname()[1], b.getsockname()[1])
    run_burst(server, 100)
    assert server.handled == 2 and server.coalesced == 98
    dispatcher.drain()
    # the dispatcher then keeps the latest per parameter: b's, sent last
    assert [(e.value, e.source) for e in target.events] == [(pytest.approx(1.99), f"osc:127.0.0.1:{ports[1]}")]


def test_rejected_counts_are_exact_in_a_burst(idle):
    _, dispatcher, server = idle
    with client_socket() as s:
        for i in range(30):
            s.sendto(b"\xff\x00junk" + bytes([i]), server.address)  # not OSC: malformed
            send(s, server.address, "/backline/nope", 1.0)  # unknown: never coalesced, every one rejected
            send(s, server.address, "/backline/style/0/weight", "x")  # wrong type on the last one only is seen
    run_burst(server, 90)
    counts = dispatcher.rejects.counts()
    assert counts["malformed"] == 30
    assert counts["unknown_address"] == 30
    assert counts["wrong_type"] == 1
    assert server.coalesced == 29


def test_forbidden_burst_is_counted_per_datagram():
    dispatcher = Dispatcher(MemoryTarget())
    with OscServer(dispatcher, port=0, allow=["10.0.0.0/8"]) as server, client_socket() as s:
        for _ in range(25):
            send(s, server.address, "/backline/master/gain", 0.5)
        assert wait_for(lambda: dispatcher.rejects.counts().get("forbidden") == 25)
    assert server.handled == 0 and dispatcher.pending == 0


def test_feedback_clients_are_capped(idle):
    _, dispatcher, server = idle
    server.max_clients = 2
    server.start()
    with client_socket() as s:
        for port in (9101, 9102, 9103, 9101, 9102):
            send(s, server.address, "/backline/register", port)
        assert wait_for(lambda: server.handled == 5)
    assert sorted(p for _, p in server.clients) == [9101, 9102]
    assert dispatcher.rejects.counts() == {"too_many_clients": 1}


def test_which_addresses_coalesce():
    mappings = MappingSet.of([parse({"info": {"name": "t"}, "controls": [
        {"match": {"osc": "/a"}, "target": "style.0.weight"},
        {"match": {"osc": "/pickup"}, "target": "style.1.weight", "options": {"soft_takeover": "pickup"}},
        {"match": {"osc": "/toggle"}, "target": "safety.freeze", "options": {"switch": "toggle"}},
        {"match": {"osc": "/hit"}, "target": "drum.hit"},
    ]}, file="t.yaml")])
    got = {a: coalesces(mappings, a) for a in ("/a", "/pickup", "/toggle", "/hit", "/backline/master/gain",
                                                "/backline/safety/freeze", "/backline/drum/hit", "/backline/note/60",
                                                "/backline/patch/load", "/backline/style/0/prompt", "/backline/status",
                                                "/backline/nope", "/elsewhere")}
    assert got == {"/a": True, "/pickup": False, "/toggle": False, "/hit": False, "/backline/master/gain": True,
                   "/backline/safety/freeze": True, "/backline/drum/hit": False, "/backline/note/60": False,
                   "/backline/patch/load": False, "/backline/style/0/prompt": False, "/backline/status": False,
                   "/backline/nope": False, "/elsewhere": False}


def test_only_a_flood_waits_for_the_rest_of_its_burst(idle) -> None:
    """A surface played by hand (a few datagrams per read) is handled with no pause, so a drum
    hit never waits behind a fader; a flood pauses half a frame to gather; a full batch reads on."""
    from engine.control.osc_server import BATCH_WINDOW_S, BURST_DATAGRAMS

    _, _, server = idle
    assert [server.pause_after(n) for n in (1, 2, BURST_DATAGRAMS - 1)] == [0.0, 0.0, 0.0]
    assert server.pause_after(BURST_DATAGRAMS) == server.pause_after(server.max_batch - 1) == BATCH_WINDOW_S
    assert server.pause_after(server.max_batch) == 0.0
