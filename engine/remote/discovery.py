"""Generator servers found on the network: Zeroconf (mDNS/DNS-SD, python-zeroconf) service
`_backline-gen._tcp` (issue #17, nice to have).

The server announces itself with its URL's parts and what it serves; `backline devices`
browses for a moment and lists what answered. Nothing is trusted from an announcement but
an address to try: the token is still checked on connect. Threads: zeroconf's own.
"""

from __future__ import annotations

import logging
import socket
import time
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)
SERVICE = "_backline-gen._tcp.local."


@dataclass(frozen=True, slots=True)
class Found:
    name: str
    url: str
    generator: str
    max_sessions: str


class Announcement:
    """The server's record on the network while it serves; `close` withdraws it."""

    def __init__(self, *, host: str, port: int, scheme: str, generator: str, max_sessions: int) -> None:
        from zeroconf import IPVersion, ServiceInfo, Zeroconf

        loopback = host in ("127.0.0.1", "localhost")
        address = "127.0.0.1" if loopback else _address_for(host)
        self._zeroconf = Zeroconf(interfaces=[address] if loopback or host not in ("0.0.0.0", "") else None,
                                  ip_version=IPVersion.V4Only)
        name = f"backline {socket.gethostname()} {port}"[:63]
        self._info = ServiceInfo(SERVICE, f"{name}.{SERVICE}", port=port, addresses=[socket.inet_aton(address)],
                                 properties={"scheme": scheme, "generator": generator, "max_sessions": str(max_sessions)},
                                 server=f"{socket.gethostname()}.local.")
        self._zeroconf.register_service(self._info)
        log.info("generator server announced as %r (%s)", name, SERVICE)

    def close(self) -> None:
        try:
            self._zeroconf.unregister_service(self._info)
        finally:
            self._zeroconf.close()


def find_servers(*, seconds: float = 1.5, interfaces: Any = None) -> list[Found]:
    """Generator servers that answer within `seconds`, sorted by name; [] without python-zeroconf."""
    try:
        from zeroconf import IPVersion, ServiceBrowser, ServiceStateChange, Zeroconf
    except ImportError:
        return []
    zeroconf = Zeroconf(interfaces=interfaces, ip_version=IPVersion.V4Only) if interfaces else Zeroconf(
        ip_version=IPVersion.V4Only)
    names: set[str] = set()

    def changed(zeroconf: Any, service_type: str, name: str, state_change: Any) -> None:
        if state_change is ServiceStateChange.Added:
            names.add(name)

    try:
        ServiceBrowser(zeroconf, SERVICE, handlers=[changed])
        time.sleep(seconds)
        found = []
        for name in sorted(names):
            info = zeroconf.get_service_info(SERVICE, name, timeout=1000)
            if info is None or not info.addresses:
                continue
            props = {k.decode(): (v or b"").decode() for k, v in info.properties.items()}
            found.append(Found(name.removesuffix(f".{SERVICE}"),
                               f"{props.get('scheme', 'ws')}://{socket.inet_ntoa(info.addresses[0])}:{info.port}",
                               props.get("generator", "?"), props.get("max_sessions", "?")))
        return found
    finally:
        zeroconf.close()


def _address_for(host: str) -> str:
    """The IPv4 address to announce for a listening `host` (all interfaces: the one routing out)."""
    if host not in ("0.0.0.0", ""):
        return socket.gethostbyname(host)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET: nothing is sent, only a route is chosen
            return probe.getsockname()[0]
        except OSError:
            return "127.0.0.1"
