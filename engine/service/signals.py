"""SIGHUP, SIGTERM and SIGINT, handled on a thread of their own.

Python runs signal handlers on the main thread only, and only between bytecodes; the
main thread is the scheduling loop, which may be busy or stuck exactly when a signal
matters. So the C-level handler's wakeup fd (`signal.set_wakeup_fd`) does the delivery:
it writes the signal number to a socket the moment the signal arrives, whatever the main
thread is doing, and a `signals` thread reads it and runs the handler there.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
from collections.abc import Callable, Mapping
from types import FrameType, TracebackType

log = logging.getLogger(__name__)

Handler = Callable[[], None]


class SignalThread:
    """Context manager: while inside, each signal in `handlers` calls its handler on the `signals` thread.

    Must be entered on the main thread (Python's rule for installing handlers).
    """

    def __init__(self, handlers: Mapping[signal.Signals, Handler]) -> None:
        self._handlers = dict(handlers)
        self._previous: dict[signal.Signals, object] = {}
        self._reader, self._writer = socket.socketpair()
        self._writer.setblocking(False)
        self._previous_fd = -1
        self._thread = threading.Thread(target=self._run, name="signals", daemon=True)

    def __enter__(self) -> SignalThread:
        self._previous_fd = signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
        for signum in self._handlers:
            self._previous[signum] = signal.signal(signum, _installed)
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        signal.set_wakeup_fd(self._previous_fd)
        self._writer.close()  # the reader sees end-of-file and the thread ends
        self._thread.join()
        self._reader.close()

    def _run(self) -> None:
        """The `signals` thread: one handler call per delivered signal; a failing handler is logged."""
        while data := self._reader.recv(64):
            for number in data:
                handler = self._handlers.get(signal.Signals(number))
                if handler is None:
                    continue  # a signal some other code installed a Python handler for
                try:
                    handler()
                except Exception:  # noqa: BLE001 - a broken reload must not take signal handling down
                    log.exception("handling %s failed", signal.Signals(number).name)


def _installed(signum: int, frame: FrameType | None) -> None:
    """Main thread, whenever it gets to it. The work is done on the `signals` thread; this
    handler exists so the default action (terminate) is replaced and the wakeup fd is used."""
