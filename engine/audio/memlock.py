"""Keep what the audio thread touches in RAM, so a page fault cannot stall the callback.

The C ring (the only memory the callback reads besides PortAudio's own) is always locked
and faulted in (`mlock`). The whole process is locked too (`mlockall`, current and future
pages, each once it is first touched: MCL_ONFAULT, so JAX's large reservations are not
faulted in at once) where nothing caps it: RLIMIT_MEMLOCK unlimited (the systemd unit's
`LimitMEMLOCK=infinity`) or CAP_IPC_LOCK. Under a finite limit `mlockall` with future
pages would make later allocations fail once the limit is reached, so it is not asked.
Loop thread, at stream start; what was locked is reported in `/backline/status`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import resource
from dataclasses import dataclass
from functools import cache

MCL_CURRENT, MCL_FUTURE, MCL_ONFAULT = 1, 2, 4
CAP_IPC_LOCK = 14


@dataclass(frozen=True, slots=True)
class MemoryLock:
    """What is locked in RAM, and why not more."""

    process: bool
    ring_bytes: int
    reason: str
    _address: int = 0

    def __str__(self) -> str:
        if self.process:
            return "all locked (mlockall)"
        ring = f"output ring locked ({self.ring_bytes / 2**20:.1f} MiB)" if self.ring_bytes else "nothing locked"
        return f"{ring}; process not: {self.reason}"

    def release(self) -> None:
        """Loop thread, after the stream stopped."""
        if self.process:
            _libc().munlockall()
        elif self.ring_bytes:
            _libc().munlock(ctypes.c_void_p(self._address), ctypes.c_size_t(self.ring_bytes))


@cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _mlock(address: int, nbytes: int) -> bool:
    """Lock and fault in [address, address + nbytes); False (errno set) if refused."""
    return _libc().mlock(ctypes.c_void_p(address), ctypes.c_size_t(nbytes)) == 0


def _limit_text(limit: int) -> str:
    return "unlimited" if limit == resource.RLIM_INFINITY else f"{limit // 1024} KiB"


def _may_lock_all() -> tuple[bool, str]:
    limit = resource.getrlimit(resource.RLIMIT_MEMLOCK)[0]
    if limit == resource.RLIM_INFINITY:
        return True, ""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            caps = next((int(line.split()[1], 16) for line in status if line.startswith("CapEff:")), 0)
    except OSError:
        caps = 0
    if caps >> CAP_IPC_LOCK & 1:
        return True, ""
    return False, f"RLIMIT_MEMLOCK is {_limit_text(limit)} (the systemd unit's LimitMEMLOCK=infinity allows it)"


def lock_memory(address: int, nbytes: int) -> MemoryLock:
    """Lock the C ring at `address`, and the process where allowed (see the module)."""
    libc = _libc()
    may, reason = _may_lock_all()
    if may:
        if libc.mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT) == 0:
            if _mlock(address, nbytes):  # fault the ring in now
                return MemoryLock(True, nbytes, "")
            libc.munlockall()
        reason = f"mlockall refused: {os.strerror(ctypes.get_errno())}"
    if _mlock(address, nbytes):
        return MemoryLock(False, nbytes, reason, address)
    limit = resource.getrlimit(resource.RLIMIT_MEMLOCK)[0]
    return MemoryLock(False, 0, f"{reason}; mlock of the ring refused: {os.strerror(ctypes.get_errno())} "
                                f"(RLIMIT_MEMLOCK {_limit_text(limit)})")
