"""What a live sink locks in RAM, under the limits a stage box may have. Each case runs in a
child process: its RLIMIT_MEMLOCK set by prlimit (lowering it needs no privilege) and, as
root, CAP_IPC_LOCK dropped by setpriv, so the limit is what the kernel enforces. An unlimited
limit (the unit's LimitMEMLOCK=infinity) cannot be set here (no CAP_SYS_RESOURCE in this
container); CAP_IPC_LOCK, which takes the same branch, stands in for it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

CHILD = """
import ctypes
from engine.audio.memlock import lock_memory
ring = ctypes.create_string_buffer(4 << 20)
print(lock_memory(ctypes.addressof(ring), len(ring)))
"""


def locked(limit_kib: int | None, *, ipc_lock: bool = False) -> str:
    """What lock_memory reports for a 4 MiB ring under RLIMIT_MEMLOCK `limit_kib` (None: as it is)."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None or shutil.which("prlimit") is None:
        pytest.skip("needs root and util-linux's prlimit and setpriv")
    prefix = [] if limit_kib is None else ["prlimit", f"--memlock={limit_kib * 1024}"]
    if not ipc_lock:
        prefix += ["setpriv", "--bounding-set", "-ipc_lock", "--inh-caps", "-ipc_lock", "--"]
    proc = subprocess.run([*prefix, sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_with_cap_ipc_lock_the_whole_process_is_locked() -> None:
    assert locked(None, ipc_lock=True) == "all locked (mlockall)"


def test_a_finite_limit_locks_only_the_ring_and_says_why() -> None:
    """mlockall with future pages under a finite limit would make later allocations fail."""
    assert locked(6 << 10) == ("output ring locked (4.0 MiB); process not: RLIMIT_MEMLOCK is 6144 KiB "
                               "(the systemd unit's LimitMEMLOCK=infinity allows it)")


def test_a_limit_below_the_ring_locks_nothing_and_names_the_limit() -> None:
    text = locked(64)
    assert text.startswith("nothing locked; process not: RLIMIT_MEMLOCK is 64 KiB"), text
    assert "mlock of the ring refused" in text
