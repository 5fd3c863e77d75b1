"""A fake service manager: the datagram socket systemd would listen on as $NOTIFY_SOCKET."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest


class NotifySocket:
    """A bound AF_UNIX datagram socket the test reads, as systemd reads `$NOTIFY_SOCKET`."""

    def __init__(self, address: str) -> None:
        self.name = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)

    def receive(self, timeout_s: float = 5.0) -> dict[str, str] | None:
        """One datagram as {KEY: VALUE}, or None if nothing came within the timeout."""
        self.sock.settimeout(timeout_s)
        try:
            data = self.sock.recv(4096)
        except TimeoutError:
            return None
        return dict(line.split("=", 1) for line in data.decode().splitlines())

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    sock = NotifySocket(str(tmp_path / "notify.sock"))
    yield sock
    sock.close()
