"""Any generator in its own process, so a crash, hang or out-of-memory there never stops the audio.

The child is started with the 'spawn' method (never fork: JAX and CUDA do not survive a
fork), builds the generator from an importable factory (`"package.module:callable"` plus
keyword arguments) and reloads it after every restart. Conditioning goes to the child over a
pipe (a few kB per frame, pickled); audio comes back through one preallocated shared-memory
block, so a frame's samples are copied once.

Contract for the scheduler: `generate()` returns audio, or raises `GeneratorUnavailable`
at once while the child is starting, loading or restarting, and after `deadline_s` if the
child hangs, so the scheduler plays its fallback instead of waiting for a load. `reset()`
never waits either: the seed goes to the child with its next request. The child is
restarted automatically; `health()` says how things stand.

Snapshots (rollback) stay in the child, named by frame index: the parent's `snapshot()` asks
the child to keep its state before the next frame it generates, and `restore()` names that
frame. The child keeps the latest SNAPSHOTS_KEPT; a restarted child has none, so a snapshot
from before a restart cannot be restored (GeneratorError, and the scheduler does not roll back).
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing
import multiprocessing.connection
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing import shared_memory
from pathlib import Path
from typing import Any, Literal

import numpy as np

from engine.conditioning import FrameConditioning
from engine.errors import GeneratorError, GeneratorUnavailable
from engine.generator.base import Generator
from engine.style.embedder import Embedder
from engine.units import CHANNELS, FRAME_SAMPLES

log = logging.getLogger(__name__)

State = Literal["starting", "ready", "restarting", "closed"]
_MAX_BACKOFF_S = 30.0
SNAPSHOTS_KEPT = 32  # as many as the scheduler keeps (MAX_SNAPSHOTS)


@dataclass(frozen=True, slots=True)
class ChildSnapshot:
    """A snapshot kept in the child: which child (restarts count up) and which frame."""

    child: int
    frame: int


def build(factory: str, kwargs: dict[str, Any]) -> Generator:
    """Import `module:callable` and call it with `kwargs`."""
    module_name, _, attribute = factory.partition(":")
    try:
        target: Callable[..., Generator] = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError) as err:
        raise GeneratorError(f"generator factory {factory!r} cannot be imported: {err}") from err
    return target(**kwargs)


def _child_main(conn: multiprocessing.connection.Connection, factory: str, kwargs: dict, shm_name: str, seed: int) -> None:
    """Entry point of the child process: build, then serve requests until told to stop or the pipe closes."""
    # the parent's journald-friendly format (no timestamps), without absl/JAX's per-trace chatter
    logging.basicConfig(level=logging.INFO, format="generator-child %(levelname)s %(name)s: %(message)s")
    for chatty in ("absl", "jax"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    shm = shared_memory.SharedMemory(name=shm_name)
    out = np.ndarray((shm.size // (4 * CHANNELS), CHANNELS), dtype=np.float32, buffer=shm.buf)
    try:
        started = time.perf_counter()
        generator = build(factory, kwargs)
        generator.reset(seed)
        frame = 0  # frames generated since the last reset: snapshots are named by it
        snapshots: OrderedDict[int, object] = OrderedDict()
        conn.send(("ready", time.perf_counter() - started))
        while True:
            try:
                request, seq, payload = conn.recv()
            except EOFError:
                break
            if request == "close":
                break
            try:
                began = time.perf_counter()
                if request == "reset":
                    generator.reset(payload)
                    frame = frames = 0
                    snapshots.clear()
                elif request == "restore":
                    if payload not in snapshots:
                        raise KeyError(f"no snapshot at frame {payload} (kept: {list(snapshots)[:1]}..{list(snapshots)[-1:]})")
                    generator.restore(snapshots[payload])
                    frame, frames = payload, 0
                    for later in [f for f in snapshots if f > frame]:
                        del snapshots[later]
                else:
                    conditioning, keep = payload
                    if keep:
                        snapshots[frame] = generator.snapshot()
                        while len(snapshots) > SNAPSHOTS_KEPT:
                            snapshots.popitem(last=False)
                    audio = generator.generate(conditioning)
                    frames = len(audio) // FRAME_SAMPLES
                    frame += frames
                    out[: len(audio)] = audio
                conn.send(("done", seq, frames, time.perf_counter() - began))
            except MemoryError as err:
                conn.send(("fatal", seq, f"out of memory: {err}", 0.0))
                break
            except Exception as err:  # noqa: BLE001  a failing generate is reported, the child lives on
                conn.send(("error", seq, f"{type(err).__name__}: {err}", 0.0))
        generator.close()
    except Exception as err:  # noqa: BLE001  loading failed: tell the parent why, then exit
        conn.send(("failed", f"{type(err).__name__}: {err}"))
    finally:
        del out
        shm.close()


class ProcessGenerator(Generator):
    """Runs the generator built by `factory(**kwargs)` in a spawned child. Used from one thread.

    `health()` may be read from any thread (it only reads plain attributes).
    """

    def __init__(
        self,
        factory: str,
        kwargs: dict[str, Any] | None = None,
        *,
        name: str | None = None,
        seed: int = 0,
        max_frames: int = 64,
        deadline_s: float = 2.0,
        restart_backoff_s: float = 0.5,
    ) -> None:
        self.factory = factory
        self.kwargs = dict(kwargs or {})
        self.name = name or factory.rpartition(":")[2]
        self.max_frames = max_frames
        self.deadline_s = deadline_s
        self._seed = seed
        self._seed_pending = False  # reset() since the child last got the seed
        self._frame = 0  # frames generated since the last reset, as the child counts them
        self._child = 0  # which child: a restarted one keeps no snapshots
        self._keep = False  # the child keeps a snapshot before the next frame it generates
        self._shm = shared_memory.SharedMemory(create=True, size=max_frames * FRAME_SAMPLES * CHANNELS * 4)
        self._audio = np.ndarray((max_frames * FRAME_SAMPLES, CHANNELS), dtype=np.float32, buffer=self._shm.buf)
        self._context = multiprocessing.get_context("spawn")
        self._process: multiprocessing.process.BaseProcess | None = None
        self._conn: multiprocessing.connection.Connection | None = None
        self._seq = 0
        self._backoff = restart_backoff_s
        self._base_backoff = restart_backoff_s
        self._next_start = 0.0
        self.state: State = "starting"
        self.restarts = 0
        self.last_error: str | None = None
        self.ms_per_frame: float | None = None
        self.load_s: float | None = None
        self._start()

    def style_model(self, *, cache_dir: Path | None = None) -> Embedder:
        """The child's style model, built here in the parent: a magenta child's MusicCoCa (or
        its mock) embeds prompts in the engine's process; the child only tokenizes the mix."""
        if self.name != "magenta":
            return super().style_model(cache_dir=cache_dir)
        from engine.style.musiccoca import style_model_for

        return style_model_for(self.kwargs, cache_dir=cache_dir)

    # --- child lifecycle ---------------------------------------------------------
    def _start(self) -> None:
        parent, child = self._context.Pipe()
        self._process = self._context.Process(
            target=_child_main,
            args=(child, self.factory, self.kwargs, self._shm.name, self._seed),
            name=f"backline-{self.name}",
            daemon=True,
        )
        self._process.start()
        self._child += 1
        self._frame = 0
        self._seed_pending = False  # the child resets to self._seed when it has loaded
        child.close()
        self._conn = parent
        log.info("generator %s: child pid %d started, loading", self.name, self._process.pid)

    def _fail(self, why: str) -> GeneratorUnavailable:
        """Kill the child (if alive), schedule its restart and return the error to raise."""
        self.last_error = why
        self.state = "restarting"
        if self._process is not None:
            if self._process.is_alive():
                self._process.kill()
            self._process.join(timeout=5)
            code = self._process.exitcode
            why = f"{why} (exit code {code})"
            self.last_error = why
        if self._conn is not None:
            self._conn.close()
        self._process = self._conn = None
        self._next_start = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, _MAX_BACKOFF_S)
        log.warning("generator %s: %s; restarting (restart %d)", self.name, why, self.restarts + 1)
        return GeneratorUnavailable(f"generator {self.name}: {why}; restarting")

    def _check_ready(self, timeout: float = 0.0) -> bool:
        """Advance starting/restarting -> ready if the child said so; restart a dead child."""
        if self.state == "ready":
            return True
        if self._process is None:
            if time.monotonic() < self._next_start:
                return False
            self.restarts += 1
            self._start()
        assert self._conn is not None
        try:
            if not self._conn.poll(timeout):
                if not self._process.is_alive():
                    raise EOFError
                return False
            message = self._conn.recv()
        except (EOFError, OSError):
            self._fail("child died while loading")
            return False
        if message[0] == "failed":
            self._fail(f"child failed to load: {message[1]}")
            return False
        self.load_s = message[1]
        self.state = "ready"
        self._backoff = self._base_backoff
        log.info("generator %s: ready after %.1f s (pid %d)", self.name, self.load_s, self._process.pid)
        return True

    def wait_ready(self, timeout: float) -> bool:
        """Block until the child is ready or `timeout` passes (start-up and tests only)."""
        deadline = time.monotonic() + timeout
        while not self._check_ready(timeout=min(0.2, max(0.0, deadline - time.monotonic()))):
            if time.monotonic() >= deadline:
                return False
            if self._process is None:  # waiting out a restart backoff
                time.sleep(min(0.05, max(0.0, self._next_start - time.monotonic())))
        return True

    # --- requests --------------------------------------------------------------------
    def _request(self, request: str, payload: Any) -> tuple[int, float]:
        if self.state == "closed":
            raise GeneratorError(f"generator {self.name} is closed")
        if not self._check_ready():
            raise GeneratorUnavailable(f"generator {self.name} is {self.state}")
        assert self._conn is not None
        self._seq += 1
        try:
            self._conn.send((request, self._seq, payload))
            if not self._conn.poll(self.deadline_s):
                raise self._fail(f"no answer within {self.deadline_s} s (hung)")
            kind, seq, value, seconds = self._conn.recv()
        except (EOFError, OSError, BrokenPipeError) as err:
            raise self._fail(f"child died ({type(err).__name__})") from err
        if kind == "fatal":
            raise self._fail(value)
        if kind == "error":
            raise GeneratorError(f"generator {self.name}: {value}")
        if seq != self._seq:
            raise self._fail(f"answer {seq} to request {self._seq}")
        return value, seconds

    def reset(self, seed: int) -> None:
        """Start again from `seed` with the next generate(); a restarted child starts from it too.

        Does not wait: the child may still be loading (the scheduler resets at start-up).
        """
        self._seed = seed
        self._seed_pending = True
        self._frame = 0

    def snapshot(self) -> ChildSnapshot:
        """Name the state before the next frame; the child keeps it when it generates that frame."""
        if self.state != "ready":
            raise GeneratorUnavailable(f"generator {self.name} is {self.state}: no snapshot")
        self._keep = True
        return ChildSnapshot(self._child, self._frame)

    def restore(self, snapshot: object) -> None:
        """Continue from a snapshot the child keeps; GeneratorError if it is gone (restart, too old)."""
        if not isinstance(snapshot, ChildSnapshot) or snapshot.child != self._child:
            raise GeneratorError(f"generator {self.name}: the snapshot was taken by a child that has since restarted")
        if snapshot.frame == self._frame and self._keep:
            return  # nothing generated since it was named
        self._request("restore", snapshot.frame)
        self._frame = snapshot.frame
        self._keep = False

    def generate(self, conditioning: Sequence[FrameConditioning]) -> np.ndarray:
        n = len(conditioning)
        if n > self.max_frames:
            raise ValueError(f"at most {self.max_frames} frames per call, got {n}")
        if self._seed_pending:
            self._request("reset", self._seed)
            self._seed_pending = False
        frames, seconds = self._request("generate", (list(conditioning), self._keep))
        self._keep = False
        self._frame += frames
        if frames != n:
            raise GeneratorError(f"generator {self.name}: returned {frames} frames for {n}")
        if n:
            self.ms_per_frame = 1000.0 * seconds / n
        return self._audio[: n * FRAME_SAMPLES].copy()

    def health(self) -> dict[str, Any]:
        """state (starting|ready|restarting|closed), restarts, last_error, ms_per_frame, pid."""
        return {
            "state": self.state,
            "restarts": self.restarts,
            "last_error": self.last_error,
            "ms_per_frame": self.ms_per_frame,
            "load_s": self.load_s,
            "pid": self._process.pid if self._process is not None else None,
        }

    def close(self) -> None:
        if self.state == "closed":
            return
        self.state = "closed"
        if self._conn is not None and self._process is not None:
            try:
                self._conn.send(("close", 0, None))
            except OSError:
                pass  # the child is already gone; join below still reaps it
            self._process.join(timeout=5)
            if self._process.is_alive():
                self._process.kill()
                self._process.join()
            self._conn.close()
        del self._audio
        self._shm.close()
        self._shm.unlink()
