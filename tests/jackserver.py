"""Start and stop a real JACK server (dummy driver) for tests.

Each server gets a name no running server has, so parallel runs never share one; clients
find it through JACK_DEFAULT_SERVER. Names come from a small pool and are reused: JACK's
registry has 8 slots, and a server that died without unregistering (SIGKILL) keeps its slot
until a server of the same name starts (JACK reclaims a dead server's slot only under its
own name). With a fresh name every time, 8 such deaths left every later test with "Too
many servers already active" (seen on a dev box). The server is waited for with
`jack_wait`, never a fixed sleep, and stopped by its own process id. Its log goes to a file, never an unread pipe: jackd logs
every xrun, and once a pipe's 64 KiB fill up jackd blocks in write() and the whole server
freezes (seen: a 30 s OSC flood through the engine, "no audio block for 2 s").
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


NAME_POOL = 16  # test servers' names: bltest0 .. bltest15


class JackUnavailable(RuntimeError):
    pass


@contextmanager
def jack_server(*, rate: int = 48_000, period: int = 256, port_max: int | None = None,
                realtime: bool = False) -> Iterator[str]:
    """Run `jackd -d dummy` under a name no running server has; yield the name; stop it on exit.

    `port_max` caps the server's ports (jackd --port-max), to test a server that refuses a client.
    Tests run `--no-realtime`; `realtime` (the xrun bench) runs `--realtime` as the shipped
    systemd/jackd.service does, where the system grants SCHED_FIFO.
    """
    if shutil.which("jackd") is None:
        raise JackUnavailable("jackd is not installed (apt-get install jackd2)")
    taken = _running_server_names()
    name = next((n for n in (f"bltest{i}" for i in range(NAME_POOL)) if n not in taken), None)
    if name is None:
        raise JackUnavailable(f"all {NAME_POOL} test server names are in use by running servers")
    env = dict(os.environ, JACK_NO_AUDIO_RESERVATION="1", JACK_DEFAULT_SERVER=name)
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(
        ["jackd", "-n", name, "--realtime" if realtime else "--no-realtime",
         *(["--port-max", str(port_max)] if port_max else []), "-d", "dummy", "-r", str(rate), "-p", str(period)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        ready = subprocess.run(["jack_wait", "-w", "-t", "10"], env=env, capture_output=True, text=True)
        if ready.returncode != 0 or proc.poll() is not None:
            log.seek(0)
            err = log.read().decode(errors="replace") if proc.poll() is not None else ready.stdout
            raise JackUnavailable(f"jackd did not start: {err.strip()[-500:]}")
        old = os.environ.get("JACK_DEFAULT_SERVER")
        os.environ["JACK_DEFAULT_SERVER"] = name
        try:
            yield name
        finally:
            if old is None:
                os.environ.pop("JACK_DEFAULT_SERVER", None)
            else:
                os.environ["JACK_DEFAULT_SERVER"] = old
    finally:
        stop_process(proc, timeout=8)
        log.close()


def _running_server_names() -> set[str]:
    """The `-n` names of the jackd processes running now (from /proc)."""
    names = set()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:  # the process ended meanwhile
            continue
        if argv and Path(argv[0].decode(errors="replace")).name == "jackd" and b"-n" in argv[:-1]:
            names.add(argv[argv.index(b"-n") + 1].decode(errors="replace"))
    return names


def stop_process(proc: subprocess.Popen, *, timeout: float = 5) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout` seconds (test fixtures' servers).

    SIGCONT first: a server a test froze (SIGSTOP) would not act on SIGTERM, and a jackd that is
    SIGKILLed keeps its slot in JACK's shared registry (8 slots) until a server of its name starts.
    """
    proc.send_signal(signal.SIGCONT)
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def portaudio_jack(**options: int | None) -> Iterator[str]:
    """`jack_server` for a process that opens PortAudio itself (an in-process sink).

    PortAudio keeps its JACK client (opened when a DeviceSink names it) for the whole
    process: it is shut down before the server goes (or its exit-time clean-up aborts the
    interpreter) and brought back after.
    """
    import sounddevice as sd

    with jack_server(**options) as name:  # type: ignore[arg-type]
        try:
            yield name
        finally:
            sd._terminate()
    sd._initialize()


def portaudio_fixture(**options: int) -> Iterator[str]:
    """`portaudio_jack` for a pytest fixture: on CI a server that does not start is an error
    (JackUnavailable), elsewhere a skip."""
    import pytest

    try:
        with portaudio_jack(**options) as name:
            yield name
    except JackUnavailable as err:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"no JACK server here: {err}")
