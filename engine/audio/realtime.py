"""Real-time scheduling for the audio thread, where the process may have it.

The systemd unit grants `LimitRTPRIO=95`; nothing is real-time unless someone asks. The
audio thread records its kernel thread id on its first block (`Sink.audio_tid`); the
scheduling loop (never the audio thread: this is a syscall, and it logs) then asks for
SCHED_FIFO at the configured priority. Under JACK the server owns its clients' thread
priorities: a JACK output is reported as it is, never changed (a server run with
`--no-realtime` leaves every client at normal priority, and a client above its server
would starve it).
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass

DEFAULT_PRIORITY = 70  # below JACK's own threads when both run real-time; within LimitRTPRIO=95


@dataclass(frozen=True, slots=True)
class Grant:
    """What the audio thread runs at, and why (for the log and `/backline/status`)."""

    realtime: bool
    priority: int
    reason: str

    def __str__(self) -> str:
        return f"fifo {self.priority}" if self.realtime else f"normal ({self.reason})"


def policy_of(tid: int) -> Grant:
    """The thread's scheduling as the kernel has it now."""
    policy = os.sched_getscheduler(tid)
    if policy in (os.SCHED_FIFO, os.SCHED_RR):
        return Grant(True, os.sched_getparam(tid).sched_priority, "already real-time")
    return Grant(False, 0, "normal priority")


def promote(tid: int, *, priority: int, owner: str | None = None) -> Grant:
    """Ask for SCHED_FIFO `priority` on thread `tid`; loop thread. `owner` names an audio server
    that decides for itself (JACK): then the thread is only reported. `priority` 0 asks nothing."""
    current = policy_of(tid)
    if owner is not None:
        return current if current.realtime else Grant(False, 0, f"{owner} runs without real-time")
    if priority <= 0:
        return Grant(False, 0, "not asked (realtime_priority: 0)")
    if current.realtime and current.priority >= priority:
        return current
    try:
        os.sched_setscheduler(tid, os.SCHED_FIFO, os.sched_param(priority))
    except PermissionError:
        limit = resource.getrlimit(resource.RLIMIT_RTPRIO)[0]
        return Grant(False, 0, f"SCHED_FIFO {priority} refused: RLIMIT_RTPRIO is {limit} and no CAP_SYS_NICE "
                               "(the systemd unit's LimitRTPRIO=95 grants it)")
    except OSError as err:
        return Grant(False, 0, f"SCHED_FIFO {priority} refused: {err.strerror}")
    return policy_of(tid)
