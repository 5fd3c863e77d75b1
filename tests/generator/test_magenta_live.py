"""The magenta generator inside the engine: `backline render --generator magenta`, and a live
engine whose magenta child loads while the synth plays, then takes over, then survives SIGKILL.

Real parts throughout: the CLI in a subprocess, the tiny random checkpoint made by
`backline models make-random`, magenta-rt's sampler in a spawned child, the real Engine
loop and its real-time WAV sink. MockMusicCoCa stands in for MusicCoCa (its TFLite files
cannot be downloaded here).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

from engine.audio.sinks import WavRealtimeSink
from engine.engine import Engine
from engine.generator import create_generator
from engine.patch import load_patch
from engine.render import render
from engine.timeline import Timeline

pytestmark = pytest.mark.magenta

REPO = Path(__file__).resolve().parents[2]
PATCH = REPO / "patches" / "jungle.yaml"  # 174 BPM: bars are not whole frames, the fitter resamples
BARS = 2


def test_cli_render_with_the_tiny_random_checkpoint(tiny_checkpoint: Path, jax_cache_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "magenta.wav"
    result = subprocess.run(
        [sys.executable, "-m", "engine", "render", "--patch", str(PATCH), "--bars", str(BARS), "-o", str(out),
         "--generator", "magenta", "--checkpoint", str(tiny_checkpoint), "--style-model", "mock",
         "--compilation-cache-dir", str(jax_cache_dir)],
        cwd=REPO, capture_output=True, text=True, timeout=900, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "magenta tiny (codec tiny)" in result.stderr  # the model loaded, not a fallback
    assert "style model mock-musiccoca/2.0.3 embeds the prompts for magenta" in result.stderr
    audio, rate = soundfile.read(out, dtype="float32")
    patch = load_patch(PATCH)
    timeline = Timeline.start(patch.bpm, patch.beats_per_bar)
    assert rate == 48_000 and audio.shape == (timeline.bar_start(BARS), 2)
    assert all(np.sqrt(np.mean(audio[timeline.bar_start(k) : timeline.bar_start(k + 1)] ** 2)) > 1e-4 for k in range(BARS))
    synth = render(patch, bars=BARS, output=tmp_path / "synth.wav", generator=create_generator("synth")).path
    assert not np.allclose(audio, soundfile.read(synth, dtype="float32")[0], atol=1e-3)


def test_tiny_magenta_served_by_a_generator_server_renders_as_it_does_in_process(
        tiny_checkpoint: Path, jax_cache_dir: Path, tmp_path: Path) -> None:
    """The real magenta-rt path behind `backline generator-server --generator magenta` (its own
    child process there): a render through `--generator remote` waits for the model to load
    (READY), embeds the prompts with the server's MockMusicCoCa, and is the in-process magenta
    render bit for bit."""
    import re

    model = ["--checkpoint", str(tiny_checkpoint), "--style-model", "mock", "--compilation-cache-dir", str(jax_cache_dir)]
    server = subprocess.Popen([sys.executable, "-m", "engine", "generator-server", "--listen", "127.0.0.1:0",
                               "--generator", "magenta", *model],
                              cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        found = re.search(r"ws://127\.0\.0\.1:(\d+)", server.stdout.readline())  # type: ignore[union-attr]
        assert found, server.stderr.read() if server.poll() is not None else ""  # type: ignore[union-attr]
        outs = {}
        for name, extra in (("remote", ["--generator", "remote", "--remote", f"ws://127.0.0.1:{found.group(1)}"]),
                            ("local", ["--generator", "magenta", *model])):
            outs[name] = tmp_path / f"{name}.wav"
            result = subprocess.run([sys.executable, "-m", "engine", "render", "--patch", str(PATCH), "--bars", str(BARS),
                                     "-o", str(outs[name]), *extra], cwd=REPO, capture_output=True, text=True, timeout=900)
            assert result.returncode == 0, result.stderr[-3000:]
            if name == "remote":  # (the prompts' embeddings are the server's: the files are equal below)
                assert "(magenta generator)" in result.stderr and "unavailable" not in result.stderr, result.stderr
    finally:
        server.terminate()
        server.wait(timeout=30)
    remote, local = (soundfile.read(outs[n], dtype="float32")[0] for n in ("remote", "local"))
    assert np.sqrt(np.mean(local**2)) > 1e-4
    np.testing.assert_array_equal(remote, local)


class Trace:
    """What the engine loop did, sampled on its own thread (`on_tick`) whenever it changed."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.rows: list[tuple[int, int, int, str, int]] = []  # playhead, fallback, magenta frames, state, restarts
        self.changed = threading.Event()

    def tick(self) -> None:
        """Scheduling-loop thread: record counters; never blocks."""
        sched = self.engine.scheduler
        health = sched.generator.health()
        row = (self.engine.sink.playhead, sched.fallback_frames, sched.frames_generated - sched.fallback_frames,
               health["state"], health["restarts"])
        if not self.rows or row[1:] != self.rows[-1][1:]:
            self.rows.append(row)
            self.changed.set()

    def wait(self, predicate, timeout: float) -> tuple[int, int, int, str, int]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.rows and predicate(self.rows[-1]):
                return self.rows[-1]
            self.changed.wait(0.5)
            self.changed.clear()
        raise AssertionError(f"timed out; last rows {self.rows[-5:]}")


def test_engine_plays_synth_while_magenta_loads_then_magenta_survives_sigkill(
    tiny_checkpoint: Path, jax_cache_dir: Path, tmp_path: Path
) -> None:
    generator = create_generator("magenta", process=True, checkpoint=tiny_checkpoint, style_model="mock",
                                 frames_per_call=2, compilation_cache_dir=jax_cache_dir, restart_backoff_s=0.0)
    fallback = create_generator("synth")
    wav = tmp_path / "live.wav"
    engine = Engine(patch=load_patch(PATCH), generator=generator, fallback=fallback, lookahead_ms=200,
                    sink_factory=lambda ring: WavRealtimeSink(ring, wav), status_line=False)
    trace = Trace(engine)
    engine.on_tick = trace.tick
    stop = threading.Event()
    loop = threading.Thread(target=engine.run, args=(stop,), name="engine-loop")
    loop.start()
    try:
        first_magenta = trace.wait(lambda r: r[2] > 0, timeout=600)
        loading = [r for r in trace.rows if r[3] == "starting"]
        assert loading and max(r[1] for r in loading) > 0  # the synth covered the load
        assert first_magenta[0] > 0  # audio was flowing before the child was ready
        trace.wait(lambda r: r[2] >= 50, timeout=120)  # two seconds of magenta
        victim = generator.health()["pid"]
        killed_at = engine.sink.playhead
        fallback_before = engine.scheduler.fallback_frames
        os.kill(victim, signal.SIGKILL)
        back = trace.wait(lambda r: r[4] == 1 and r[3] == "ready", timeout=600)
        magenta_after = back[2]
        trace.wait(lambda r: r[2] >= magenta_after + 50, timeout=120)
    finally:
        stop.set()
        loop.join(timeout=30)
        generator.close()
        fallback.close()
    assert not loop.is_alive()
    health = generator.health()
    status = engine.status()
    print(f"live run: {len(trace.rows)} trace rows, fallback frames {status['fallback_frames']}, "
          f"ring underruns {status['underruns']}, sink xruns {status['xruns']}, restart: {health['last_error']}")
    assert health["restarts"] == 1 and "exit code -9" in health["last_error"]
    assert engine.scheduler.fallback_frames > fallback_before  # the outage was counted and covered
    audio, _ = soundfile.read(wav, dtype="float32")
    assert len(audio) >= engine.sink.playhead - engine.sink.blocksize  # every block the sink took is in the file
    outage = audio[killed_at : trace.rows[-1][0]]
    blocks = outage[: len(outage) // 4800 * 4800].reshape(-1, 4800, 2)
    assert len(blocks) and np.all(np.sqrt(np.mean(blocks**2, axis=(1, 2))) > 1e-5)  # no silent 100 ms across the kill
