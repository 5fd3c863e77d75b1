"""Offline render: the live engine (scheduler, generator, fitter, control route) with an
offline sink, so a file sounds exactly as the same controls would live.

Automation is a control input like a surface: each event is handed to the engine once the
playhead reaches it, drained once per generated frame, as OSC and MIDI are.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from engine.audio.offline import OfflineSink
from engine.automation import AutomationInput, TimedEvent
from engine.engine import Engine
from engine.errors import GeneratorError
from engine.generator.base import Generator
from engine.patch import Patch
from engine.schedule.margin import DEFAULT_MIN_MS
from engine.style.embedder import Embedder
from engine.units import SAMPLE_RATE

DEFAULT_LOOKAHEAD_MS = 200.0


@dataclass(frozen=True, slots=True)
class RenderResult:
    path: Path
    samples: int
    bars: int
    bar_starts: tuple[int, ...]
    realtime_factor: float
    underruns: int
    rollbacks: int = 0
    work: float = 1.0  # frames generated per frame heard (rollback's extra work)


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
    patch_set: Sequence[Path] = (),
    rollback: bool = True,
    margin_ms: float = DEFAULT_MIN_MS,
    fit: str | None = None,
) -> RenderResult:
    """Render `bars` bars of `patch` to a WAV file of exactly those bars' length.

    Waits up to `ready_timeout_s` for the generator to load (a generator in a child
    process is not ready at once), so every frame of the file is the generator's own; a
    generator server that cannot be reached fails after a few tries (`wait_reachable`).
    `patch_set` is what `patch.load` in the automation picks from (default: `patch` alone).
    `rollback` and its fixed splice margin `margin_ms` work as live (a render must not
    depend on the machine's speed, so the margin does not adapt). `fit`: stretch or resample
    (None: the patch's, else stretch; `engine/schedule/fit.py`).
    """
    if bars < 1:
        raise ValueError(f"bars must be >= 1, got {bars}")
    if lookahead_ms * SAMPLE_RATE / 1000 < block:
        raise ValueError(f"look-ahead {lookahead_ms:g} ms is shorter than one {block}-sample block")
    generator.wait_reachable()  # a server that cannot be reached fails in seconds, not after ready_timeout_s
    if not generator.wait_ready(ready_timeout_s):
        # a generator server that refused the token gives up at once, with why: a file must not fall back
        raise GeneratorError(getattr(generator, "refused", None)
                             or f"generator {generator.name} was not ready after {ready_timeout_s:g} s")
    engine: Engine | None = None

    def end() -> int:
        assert engine is not None
        return engine.scheduler.timeline.bar_start(bars)  # re-read: a tempo change moves it

    engine = Engine(patch=patch, generator=generator, embedder=embedder, lookahead_ms=lookahead_ms,
                    frames_per_call=frames_per_call, status_line=False, patch_set=list(patch_set) or None,
                    rollback=rollback, margin_ms=(margin_ms, margin_ms), fit=fit,
                    sink_factory=lambda ring: OfflineSink(ring, output, end=end, blocksize=block))
    engine.scheduler.add_input(AutomationInput(automation, engine.submit, playhead=lambda: engine.sink.playhead,
                                               timeline=lambda: engine.scheduler.timeline).drain)
    t0 = time.perf_counter()
    engine.run()
    elapsed = time.perf_counter() - t0
    timeline = engine.scheduler.timeline
    samples = engine.sink.playhead
    return RenderResult(Path(output), samples, bars, tuple(timeline.bar_start(k) for k in range(bars + 1)),
                        samples / SAMPLE_RATE / max(elapsed, 1e-9), engine.ring.underruns, engine.scheduler.rollbacks,
                        float(engine.status()["work"]))
