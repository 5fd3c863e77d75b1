"""The health endpoint (`/status` on the web page's server) over real HTTP on loopback, and
the clients `backline status` uses."""

from __future__ import annotations

import json
import shlex
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_server import ThreadingOSCUDPServer

from engine.service.health import StatusUnavailable, query_http, query_osc
from engine.web.server import WebServer

STATUS = {"bar": 17, "beat": 2.5, "tempo": 124.0, "patch": "night-drive", "lookahead_ms": 180.0, "xruns": 0, "speed": 3.2,
          "underruns": 2, "playing": True, "clock": {"source": "link", "state": "running"}, "rejected": 3,
          "realtime": "fifo 70", "margin_ms": 14.5, "rollbacks": 4, "work": 1.31,
          "rollbacks_missed": 1, "late_splices": 0, "memory": "all locked (mlockall)", "fit": "stretch",
          "generator_state": "restarting", "generator_ms": 41.25,
          "generator_error": "cannot reach ws://gpu-box.local:9400: [Errno 111] Connection refused"}


@pytest.fixture
def health() -> Iterator[WebServer]:
    """The real web server over a stand-in engine whose status is STATUS, then fails (the real
    Engine's is read end to end in test_service_e2e.py)."""
    from engine.control.dispatcher import Dispatcher as ControlDispatcher

    calls = iter([STATUS, RuntimeError("scheduler gone")])

    class FailingEngine(StatusTarget):
        patch_set = None

        def status(self) -> dict[str, object]:
            value = next(calls)
            if isinstance(value, Exception):
                raise value
            return value

    engine = FailingEngine()
    server = WebServer(engine, ControlDispatcher(engine), port=0)
    server.start()
    yield server
    server.close()


def test_status_as_json_then_500_when_status_fails(health: WebServer) -> None:
    url = "http://%s:%d/status" % health.address
    assert health.address[0] == "127.0.0.1"
    assert query_http(url) == STATUS
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(url, timeout=2)
    assert info.value.code == 500 and "scheduler gone" in json.loads(info.value.read())["error"]


def test_unknown_path_is_404(health: WebServer) -> None:
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen("http://%s:%d/metrics" % health.address, timeout=2)
    assert info.value.code == 404


class StatusTarget:
    """A ControlTarget whose status is the fixed STATUS dict (the real Engine's is tested end to end)."""

    def submit(self, event: object) -> None:
        raise AssertionError("status queries submit nothing")

    def status(self) -> dict[str, object]:
        return STATUS

    def add_listener(self, fn: object) -> None:
        return None

    def value_of(self, path: str) -> object:
        return None

    def playhead(self) -> int:
        return 0


@pytest.fixture
def osc_engine() -> Iterator[tuple[str, int]]:
    """The control layer's real OscServer on a real UDP socket, answering /backline/status."""
    from engine.control.dispatcher import Dispatcher as ControlDispatcher
    from engine.control.osc_server import OscServer

    with OscServer(ControlDispatcher(StatusTarget()), port=0) as server:
        yield server.address


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
    assert shlex.split(capsys.readouterr().out) == ["bar=17", "beat=2.5", "tempo=124", "patch=night-drive", "lookahead_ms=180",
                                               "xruns=0", "speed=3.2", "underruns=2", "playing=1",
                                               "clock=link", "clock_state=running", "rejected=3", "realtime=fifo 70",
                                               "margin_ms=14.5", "rollbacks=4", "work=1.31",
                                               "rollbacks_missed=1", "late_splices=0", "memory=all locked (mlockall)", "fit=stretch",
                                               "generator_state=restarting", "generator_ms=41.25",
                                               "generator_error=cannot reach ws://gpu-box.local:9400: [Errno 111] "
                                               "Connection refused", "silence_ms=0", "dry_replay_ms=0", "skipped_ms=0"]
