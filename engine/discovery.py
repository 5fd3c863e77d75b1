"""backline on the network by Zeroconf (mDNS/DNS-SD, python-zeroconf).

A generator server announces `_backline-gen._tcp` with its URL's parts and what it serves;
`backline devices` browses for a moment and lists what answered. An engine whose web page
or OSC server listens beyond loopback announces `_http._tcp` (path `/`) and `_osc._udp`,
the records TouchOSC, Open Stage Control and a phone's browser look for. Nothing is trusted
from an announcement but an address to try: tokens are still checked on connect.
Threads: zeroconf's own.
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
    """Records on the network while something serves; `close` withdraws them all.
    `records` are (service type, port, properties)."""

    def __init__(self, host: str, records: list[tuple[str, int, dict[str, str]]]) -> None:
        from zeroconf import InterfaceChoice, IPVersion, ServiceInfo, Zeroconf

        loopback = host in ("127.0.0.1", "localhost")
        address = "127.0.0.1" if loopback else address_for(host)
        self._zeroconf = Zeroconf(interfaces=[address] if loopback or host not in ("0.0.0.0", "") else InterfaceChoice.All,
                                  ip_version=IPVersion.V4Only)
        self._infos = []
        try:
            for service, port, properties in records:
                name = f"backline {socket.gethostname()} {port}"[:63]
                info = ServiceInfo(service, f"{name}.{service}", port=port, addresses=[socket.inet_aton(address)],
                                   properties=properties, server=f"{socket.gethostname()}.local.")
                self._zeroconf.register_service(info)
                self._infos.append(info)
                log.info("announced %r as %s on %s", name, service, address)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        try:
            for info in self._infos:
                self._zeroconf.unregister_service(info)
        finally:
            self._zeroconf.close()


def find_servers(*, seconds: float = 1.5, interfaces: Any = None) -> list[Found]:
    """Generator servers that answer within `seconds`, sorted by name; [] without python-zeroconf."""
    return [Found(name, f"{props.get('scheme', 'ws')}://{address}:{port}", props.get("generator", "?"),
                  props.get("max_sessions", "?"))
            for name, address, port, props in browse(SERVICE, seconds=seconds, interfaces=interfaces)]


def browse(service: str, *, seconds: float = 1.5, interfaces: Any = None) -> list[tuple[str, str, int, dict[str, str]]]:
    """(name, IPv4 address, port, properties) of each `service` record answering within
    `seconds`, sorted by name; [] without python-zeroconf."""
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
        ServiceBrowser(zeroconf, service, handlers=[changed])
        time.sleep(seconds)
        found = []
        for name in sorted(names):
            info = zeroconf.get_service_info(service, name, timeout=1000)
            if info is None or not info.addresses:
                continue
            props = {k.decode(): (v or b"").decode() for k, v in info.properties.items()}
            found.append((name.removesuffix(f".{service}"), socket.inet_ntoa(info.addresses[0]), info.port, props))
        return found
    finally:
        zeroconf.close()


def address_for(host: str) -> str:
    """The IPv4 address to announce for a listening `host` (all interfaces: the one routing out)."""
    if host not in ("0.0.0.0", ""):
        return socket.gethostbyname(host)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET: nothing is sent, only a route is chosen
            return probe.getsockname()[0]
        except OSError:
            return "127.0.0.1"
