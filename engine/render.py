"""Offline render: the live scheduler, generator and fitter, driven by a simulated playhead."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.audio.file_sink import FileSink
from engine.audio.ring import PlaybackRing
from engine.automation import TimedEvent
from engine.conditioning import SAMPLE_RATE
from engine.errors import GeneratorError
from engine.generator.base import Generator
from engine.patch import Patch
from engine.schedule.scheduler import Scheduler
from engine.style.embedder import Embedder

log = logging.getLogger(__name__)
DEFAULT_LOOKAHEAD_MS = 200.0


@dataclass(frozen=True, slots=True)
class RenderResult:
    path: Path
    samples: int
    bars: int
    bar_starts: tuple[int, ...]
    realtime_factor: float
    underruns: int


def render(
    patch: Patch,
    *,
    bars: int,
    output: str | Path,
    generator: Generator,
    automation: Sequence[TimedEvent] = (),
    embedder: Embedder | None = None,
    lookahead_ms: float = DEFAULT_LOOKAHEAD_MS,
    block: int = 256,
    frames_per_call: int = 2,
    ready_timeout_s: float = 900.0,
) -> RenderResult:
    """Render `bars` bars of `patch` to a WAV file of exactly those bars' length.

    Waits up to `ready_timeout_s` for the generator to load (a generator in a child
    process is not ready at once), so every frame of the file is the generator's own.
    """
    if bars < 1:
        raise ValueError(f"bars must be >= 1, got {bars}")
    if not generator.wait_ready(ready_timeout_s):
        raise GeneratorError(f"generator {generator.name} was not ready after {ready_timeout_s:g} s")
    embedder = embedder or generator.style_model()
    log.info("style model %s embeds the prompts for %s", embedder.version, generator.name)
    ring = PlaybackRing()
    scheduler = Scheduler.for_patch(patch, generator, ring=ring, embedder=embedder, lookahead_ms=lookahead_ms,
                                    frames_per_call=frames_per_call)
    queue = list(automation)
    buf = np.zeros((block, ring.channels), dtype=np.float32)
    playhead = 0
    t0 = time.perf_counter()
    try:
        with FileSink(output) as sink:
            while True:
                while queue and queue[0].sample(scheduler.timeline) <= playhead:
                    scheduler.submit(queue.pop(0).event)
                scheduler.fill(playhead)
                end = scheduler.timeline.bar_start(bars)
                n = min(block, end - playhead)
                if n <= 0:
                    break
                if ring.written < playhead + n:
                    scheduler.render_until(playhead + n)
                ring.read(buf[:n], playhead)
                sink.write(buf[:n])
                playhead += n
    finally:
        scheduler.close()
    elapsed = time.perf_counter() - t0
    starts = tuple(scheduler.timeline.bar_start(k) for k in range(bars + 1))
    return RenderResult(Path(output), playhead, bars, starts, playhead / SAMPLE_RATE / max(elapsed, 1e-9), ring.underruns)
