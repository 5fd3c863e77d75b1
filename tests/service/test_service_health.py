"""Health endpoint over real HTTP on loopback, and the clients `backline status` uses."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.osc_server import ThreadingOSCUDPServer

from engine.service.health import STATUS_FIELDS, HealthServer, StatusUnavailable, query_http, query_osc

STATUS = {"bar": 17, "beat": 2.5, "tempo": 124.0, "patch": "night-drive", "lookahead_ms": 180.0, "xruns": 0, "gen_speed": 3.2}


@pytest.fixture
def health() -> Iterator[HealthServer]:
    calls = iter([STATUS, RuntimeError("scheduler gone")])

    def status() -> dict[str, object]:
        value = next(calls)
        if isinstance(value, Exception):
            raise value
        return value

    server = HealthServer(status, port=0)
    server.start()
    yield server
    server.close()


def test_status_as_json_then_500_when_status_fails(health: HealthServer) -> None:
    url = "http://%s:%d/status" % health.address
    assert health.address[0] == "127.0.0.1"
    assert query_http(url) == STATUS
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(url, timeout=2)
    assert info.value.code == 500 and "scheduler gone" in json.loads(info.value.read())["error"]


def test_unknown_path_is_404(health: HealthServer) -> None:
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen("http://%s:%d/metrics" % health.address, timeout=2)
    assert info.value.code == 404


@pytest.fixture
def osc_engine() -> Iterator[tuple[str, int]]:
    """A python-osc server answering /backline/status the way the control layer's OscServer does.

    The control layer is not on this branch yet; this stand-in speaks the documented reply
    (engine/control/osc_space.py) over a real UDP socket.
    """
    dispatcher = Dispatcher()
    server = ThreadingOSCUDPServer(("127.0.0.1", 0), dispatcher)

    def reply(client: tuple[str, int], address: str, *args: object) -> None:
        builder = OscMessageBuilder(address)
        for key in STATUS_FIELDS:
            builder.add_arg(STATUS[key])
        server.socket.sendto(builder.build().dgram, client)

    dispatcher.map("/backline/status", reply, needs_reply_address=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address
    server.shutdown()
    server.server_close()
    thread.join()


def test_query_osc_reads_the_status_reply(osc_engine: tuple[str, int]) -> None:
    status = query_osc(*osc_engine)
    assert status["bar"] == 17 and status["patch"] == "night-drive"
    assert status["tempo"] == pytest.approx(124.0) and status["lookahead_ms"] == pytest.approx(180.0)


def test_query_osc_without_an_engine_says_so() -> None:
    with ThreadingOSCUDPServer(("127.0.0.1", 0), Dispatcher()) as silent:  # bound, never answers
        with pytest.raises(StatusUnavailable, match=r"no engine answered /backline/status"):
            query_osc(*silent.server_address, timeout_s=0.3)


def test_query_http_without_an_endpoint_says_so() -> None:
    with pytest.raises(StatusUnavailable, match="no status from"):
        query_http("http://127.0.0.1:9/status", timeout_s=0.5)


def test_backline_status_command_prints_the_reply(osc_engine: tuple[str, int], tmp_path, capsys) -> None:
    import argparse

    from engine.service.commands import add_commands

    config = tmp_path / "config.yaml"
    config.write_text(f"osc: {{host: 0.0.0.0, port: {osc_engine[1]}}}\n")  # listening on all: ask loopback
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers())
    args = parser.parse_args(["status", "--config", str(config)])
    assert args.func(args) == 0
    assert capsys.readouterr().out.split() == ["bar=17", "beat=2.5", "tempo=124", "patch=night-drive", "lookahead_ms=180",
                                               "xruns=0", "gen_speed=3.2"]
