"""sd_notify over a real AF_UNIX datagram socket that the test reads (see conftest.NotifySocket)."""

from __future__ import annotations

import logging
import os
import uuid

from engine.service.notify import Notifier
from notify_fake import NotifySocket, notify_socket  # noqa: F401  (fixture)


def test_ready_status_stopping_arrive_as_datagrams(notify_socket: NotifySocket) -> None:
    notifier = Notifier(environ={"NOTIFY_SOCKET": notify_socket.name})
    notifier.status("loading patch")
    notifier.ready("playing default at 120 BPM")
    notifier.stopping()
    assert notify_socket.receive() == {"STATUS": "loading patch"}
    assert notify_socket.receive() == {"READY": "1", "STATUS": "playing default at 120 BPM"}
    assert notify_socket.receive() == {"STOPPING": "1"}
    notifier.close()


def test_abstract_namespace_socket() -> None:
    sock = NotifySocket(f"@backline-test-{uuid.uuid4().hex}")
    try:
        Notifier(environ={"NOTIFY_SOCKET": sock.name}).ready()
        assert sock.receive() == {"READY": "1"}
    finally:
        sock.close()


def test_watchdog_is_sent_at_half_the_interval_from_ticks(notify_socket: NotifySocket) -> None:
    now = [100.0]
    notifier = Notifier(environ={"NOTIFY_SOCKET": notify_socket.name, "WATCHDOG_USEC": "2000000",
                                 "WATCHDOG_PID": str(os.getpid())}, clock=lambda: now[0])
    assert notifier.watchdog_interval_s == 1.0
    sent = 0
    for _ in range(40):  # 40 ticks 0.1 s apart = 4 s: one ping at start, then one per second
        notifier.watchdog_tick()
        now[0] += 0.1
    while (message := notify_socket.receive(timeout_s=0.2)) is not None:
        assert message == {"WATCHDOG": "1"}
        sent += 1
    assert sent == 4


def test_no_ticks_no_watchdog(notify_socket: NotifySocket) -> None:
    """The watchdog has no timer of its own: without ticks from the loop, nothing is sent."""
    notifier = Notifier(environ={"NOTIFY_SOCKET": notify_socket.name, "WATCHDOG_USEC": "20000"})
    notifier.watchdog_tick()
    assert notify_socket.receive() == {"WATCHDOG": "1"}
    assert notify_socket.receive(timeout_s=0.1) is None


def test_watchdog_meant_for_another_pid_is_ignored(notify_socket: NotifySocket) -> None:
    notifier = Notifier(environ={"NOTIFY_SOCKET": notify_socket.name, "WATCHDOG_USEC": "1000000",
                                 "WATCHDOG_PID": str(os.getpid() + 1)})
    assert notifier.watchdog_interval_s is None
    notifier.watchdog_tick()
    assert notify_socket.receive(timeout_s=0.1) is None


def test_without_notify_socket_everything_is_a_no_op() -> None:
    notifier = Notifier(environ={})
    assert not notifier.enabled
    notifier.ready()
    notifier.watchdog_tick()
    notifier.stopping()


def test_a_vanished_manager_is_logged_once_not_raised(tmp_path, caplog) -> None:
    sock = NotifySocket(str(tmp_path / "gone.sock"))
    notifier = Notifier(environ={"NOTIFY_SOCKET": sock.name})
    sock.close()
    os.unlink(sock.name)
    with caplog.at_level(logging.WARNING, logger="engine.service.notify"):
        notifier.ready()
        notifier.status("still here")
    warnings = [r for r in caplog.records if "cannot notify" in r.getMessage()]
    assert len(warnings) == 1 and "gone.sock" in warnings[0].getMessage()


def test_a_multi_line_value_is_sent_as_one_line(notify_socket: NotifySocket) -> None:
    Notifier(environ={"NOTIFY_SOCKET": notify_socket.name}).status("failed: no device\navailable: none\nSTOPPING=1")
    assert notify_socket.receive() == {"STATUS": "failed: no device available: none STOPPING=1"}
