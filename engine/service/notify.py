"""The systemd notify protocol (sd_notify), spoken directly over `$NOTIFY_SOCKET`.

The documented format is one datagram of newline-separated `KEY=VALUE` lines sent to the
AF_UNIX socket named by `$NOTIFY_SOCKET` (a leading `@` means the abstract namespace).
No library is needed for that, and without the variable every call is a no-op, so the
same code runs in a terminal, in tests and under systemd.

The watchdog is fed from the scheduling loop (`watchdog_tick` from `Engine.on_tick`),
never from a timer thread of its own: if the loop stalls, `WATCHDOG=1` stops and systemd
restarts the service.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)


class Notifier:
    """Sends READY/STATUS/WATCHDOG/STOPPING to the service manager, if there is one."""

    def __init__(self, *, environ: Mapping[str, str] = os.environ, clock: Callable[[], float] = time.monotonic) -> None:
        address = environ.get("NOTIFY_SOCKET", "")
        self.socket_name = address
        self._address = "\0" + address[1:] if address.startswith("@") else address
        self._socket: socket.socket | None = None
        if self._address:
            # non-blocking: a manager that stops reading must never stall the scheduling loop
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
        self._clock = clock
        self.watchdog_interval_s = _watchdog_interval(environ)
        self._next_watchdog = 0.0
        self._last_error = ""

    @property
    def enabled(self) -> bool:
        return self._socket is not None

    def send(self, **fields: object) -> None:
        """One datagram with `KEY=VALUE` lines; a failure is logged (once per kind), never raised."""
        if self._socket is None:
            return
        # one line per field: a newline inside a value (an error message) would start a bogus field
        text = "\n".join(f"{key}={' '.join(str(value).splitlines())}" for key, value in fields.items())
        try:
            self._socket.sendto(text.encode("utf-8"), self._address)
        except OSError as err:
            if str(err) != self._last_error:
                self._last_error = str(err)
                log.warning("cannot notify the service manager at %s: %s", self.socket_name, err)

    def ready(self, status: str | None = None) -> None:
        """Audio is flowing and the generator is warm."""
        self.send(READY=1, **({"STATUS": status} if status else {}))

    def status(self, text: str) -> None:
        self.send(STATUS=text)

    def extend_timeout(self, seconds: float) -> None:
        """Ask for more start-up (or stop) time, e.g. while a model compiles."""
        self.send(EXTEND_TIMEOUT_USEC=int(seconds * 1e6))

    def reloading(self) -> None:
        """Start of a SIGHUP reload; `ready()` ends it."""
        self.send(RELOADING=1, MONOTONIC_USEC=time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000)

    def stopping(self, status: str | None = None) -> None:
        self.send(STOPPING=1, **({"STATUS": status} if status else {}))

    def watchdog(self) -> None:
        self.send(WATCHDOG=1)

    def watchdog_tick(self) -> None:
        """Feed the watchdog at half its interval. Runs on the scheduling-loop thread; cheap when not due."""
        if self.watchdog_interval_s is None:
            return
        now = self._clock()
        if now >= self._next_watchdog:
            self._next_watchdog = now + self.watchdog_interval_s
            self.watchdog()

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def _watchdog_interval(environ: Mapping[str, str]) -> float | None:
    """Half of `$WATCHDOG_USEC`, or None when no watchdog is asked for (or it is meant for another pid)."""
    usec = environ.get("WATCHDOG_USEC")
    pid = environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        value = int(usec)
    except ValueError:
        log.warning("ignoring WATCHDOG_USEC=%r: not an integer", usec)
        return None
    return value / 2e6 if value > 0 else None
