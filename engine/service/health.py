"""The clients `backline status` uses to read a running engine's health.

It asks over OSC (`/backline/status`, answered by the control layer's OSC server on the
configured port), because OSC is always on in a show and is the address space surfaces
already use. The web page's server (engine/web/server.py, off by default) also answers
`GET /status` with the whole status as JSON, for monitoring systems; `backline status
--http URL` reads that instead.
"""

from __future__ import annotations

import json
import logging
import socket
import struct
import urllib.request

from pythonosc.osc_message import OscMessage, ParseError
from pythonosc.osc_message_builder import OscMessageBuilder

from engine.control.osc_space import STATUS_FIELDS
from engine.errors import BacklineError

log = logging.getLogger(__name__)

STATUS_ADDRESS = "/backline/status"


class StatusUnavailable(BacklineError):
    """No running engine answered."""


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
