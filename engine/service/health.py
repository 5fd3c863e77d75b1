"""Health and status: an optional loopback HTTP endpoint, and the clients `backline status` uses.

`backline status` asks the running engine over OSC (`/backline/status`, answered by the
control layer's OSC server on the configured port), because OSC is always on in a show
and is the address space surfaces already use. The HTTP endpoint is for monitoring
systems only, off by default; `backline status --http URL` reads it instead.
"""

from __future__ import annotations

import json
import logging
import socket
import struct
import threading
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, HTTPServer

from pythonosc.osc_message import OscMessage, ParseError
from pythonosc.osc_message_builder import OscMessageBuilder

from engine.control.osc_space import STATUS_FIELDS
from engine.errors import BacklineError

log = logging.getLogger(__name__)

STATUS_ADDRESS = "/backline/status"


class StatusUnavailable(BacklineError):
    """No running engine answered."""


class HealthServer:
    """`GET /status` (or `/`) returns the engine's status dict as JSON. Loopback by default."""

    def __init__(self, status: Callable[[], dict[str, object]], *, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = HTTPServer((host, port), _handler(status))
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="health-http", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        return self._server.server_address[:2]

    def start(self) -> None:
        self._thread.start()
        log.info("status endpoint on http://%s:%d/status", *self.address)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def _handler(status: Callable[[], dict[str, object]]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            """Runs on the health-http thread; a failing status call answers 500 and is logged."""
            if self.path not in ("/", "/status"):
                self._reply(404, {"error": f"no such path {self.path}; try /status"})
                return
            try:
                body = status()
            except Exception as err:
                log.exception("status for the health endpoint failed")
                self._reply(500, {"error": f"{type(err).__name__}: {err}"})
                return
            self._reply(200, body)

        def _reply(self, code: int, body: dict[str, object]) -> None:
            data = json.dumps(body, default=str).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            log.debug("health: " + format, *args)

    return Handler


def query_osc(host: str, port: int, *, timeout_s: float = 1.0) -> dict[str, object]:
    """Send `/backline/status` and read the reply; StatusUnavailable if none comes."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout_s)
        try:
            sock.sendto(OscMessageBuilder(STATUS_ADDRESS).build().dgram, (host, port))
            while True:
                data, _ = sock.recvfrom(65536)
                try:
                    message = OscMessage(data)
                except (ParseError, ValueError, IndexError, struct.error) as err:  # python-osc leaks the last three
                    log.warning("ignoring a malformed reply from %s:%d: %s", host, port, err)
                    continue
                if message.address == STATUS_ADDRESS:
                    return dict(zip((name for name, _, _ in STATUS_FIELDS), message.params))
        except OSError as err:  # timeout, refused, unreachable
            raise StatusUnavailable(f"no engine answered {STATUS_ADDRESS} on {host}:{port} ({err or 'timed out'}); "
                                    "is backline running, and is OSC enabled in its config?") from err


def query_http(url: str, *, timeout_s: float = 1.0) -> dict[str, object]:
    """GET the health endpoint's JSON; StatusUnavailable if it does not answer."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as reply:
            return json.loads(reply.read())
    except (OSError, ValueError) as err:
        raise StatusUnavailable(f"no status from {url}: {err}") from err
