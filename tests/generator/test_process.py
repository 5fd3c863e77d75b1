"""ProcessGenerator: a real spawned child, real SIGKILL, real hang; the audio stream never stops.

The generator in the child is `Tone` below (no weights needed); the magenta generator runs
in the same wrapper with factory "engine.generator.magenta.generator:MagentaGenerator".
"""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest

from engine.conditioning import DRUM_HIT, FrameConditioning, masked_notes
from engine.errors import GeneratorError, GeneratorUnavailable
from engine.generator.base import Generator
from engine.generator.process import ProcessGenerator
from engine.units import FRAME_SAMPLES

FACTORY = f"{__name__}:Tone"
STYLE = np.zeros(768, dtype=np.float32)


class Tone(Generator):
    """A sine whose phase runs on across calls; drum hits make it hang or fail, on request."""

    name = "tone"

    def __init__(self, *, seconds_per_call: float = 0.0, on_drum: str = "none", load_s: float = 0.0) -> None:
        time.sleep(load_s)
        self.seconds_per_call = seconds_per_call
        self.on_drum = on_drum
        self.reset(0)

    def reset(self, seed: int) -> None:
        self.sample = 0
        self.freq = 220.0 * (1 + seed)

    def generate(self, conditioning):
        if any(c.drum == DRUM_HIT for c in conditioning):
            if self.on_drum == "hang":
                time.sleep(3600)
            if self.on_drum == "raise":
                raise ValueError("drum hit refused")
        time.sleep(self.seconds_per_call)
        n = len(conditioning) * FRAME_SAMPLES
        t = (self.sample + np.arange(n)) / 48_000
        self.sample += n
        wave = np.sin(2 * np.pi * self.freq * t).astype(np.float32)
        return np.stack([wave, wave], axis=1)


def frames(n: int, *, drum: int = -1) -> list[FrameConditioning]:
    return [FrameConditioning(style=STYLE, notes=masked_notes(), drum=drum)] * n


def test_audio_comes_back_through_shared_memory_in_order() -> None:
    gen = ProcessGenerator(FACTORY, {}, seed=1)
    try:
        with pytest.raises(GeneratorUnavailable):  # at once while the child starts
            gen.generate(frames(2))
        assert gen.health()["state"] in ("starting", "ready")
        assert gen.wait_ready(60)
        first, second = gen.generate(frames(3)), gen.generate(frames(2))
        reference = Tone()
        reference.reset(1)
        np.testing.assert_array_equal(np.concatenate([first, second]), reference.generate(frames(5)))
        health = gen.health()
        assert health["state"] == "ready" and health["restarts"] == 0 and health["ms_per_frame"] is not None
    finally:
        gen.close()


def test_child_error_is_reported_and_child_survives() -> None:
    gen = ProcessGenerator(FACTORY, {"on_drum": "raise"})
    try:
        assert gen.wait_ready(60)
        with pytest.raises(GeneratorError, match="drum hit refused") as info:
            gen.generate(frames(2, drum=DRUM_HIT))
        assert not isinstance(info.value, GeneratorUnavailable)
        assert gen.generate(frames(1)).shape == (FRAME_SAMPLES, 2)
        assert gen.health()["restarts"] == 0
    finally:
        gen.close()


def test_hung_child_is_killed_after_the_deadline_and_restarted() -> None:
    gen = ProcessGenerator(FACTORY, {"on_drum": "hang"}, deadline_s=0.5, restart_backoff_s=0.0)
    try:
        assert gen.wait_ready(60)
        hung_pid = gen.health()["pid"]
        began = time.monotonic()
        with pytest.raises(GeneratorUnavailable, match="hung"):
            gen.generate(frames(1, drum=DRUM_HIT))
        assert time.monotonic() - began < 5.0  # the deadline, not the child's hour-long sleep
        assert gen.wait_ready(60)
        assert gen.health()["restarts"] == 1 and gen.health()["pid"] != hung_pid
        assert gen.generate(frames(1)).shape == (FRAME_SAMPLES, 2)
    finally:
        gen.close()


def test_sigkill_mid_render_keeps_the_stream_going_and_restarts_the_child() -> None:
    """A stand-in scheduler loop: silence on GeneratorUnavailable, counted as underruns."""
    gen = ProcessGenerator(FACTORY, {"seconds_per_call": 0.05}, deadline_s=2.0, restart_backoff_s=0.0)
    try:
        assert gen.wait_ready(60)
        victim = gen.health()["pid"]
        timer = threading.Timer(0.3, os.kill, args=(victim, signal.SIGKILL))
        timer.start()
        stream, underruns, fresh_after_restart = [], 0, 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and fresh_after_restart < 3:
            try:
                chunk = gen.generate(frames(2))
                fresh_after_restart += gen.health()["restarts"] == 1
            except GeneratorUnavailable:
                underruns += 1
                chunk = np.zeros((2 * FRAME_SAMPLES, 2), dtype=np.float32)
                time.sleep(0.02)
            stream.append(chunk)
        timer.join()
        health = gen.health()
        assert health["restarts"] == 1 and health["state"] == "ready" and health["pid"] != victim
        assert "exit code -9" in health["last_error"]
        assert underruns >= 1
        audio = np.concatenate(stream)
        assert audio.shape == (len(stream) * 2 * FRAME_SAMPLES, 2)  # every call produced its frames
        assert np.any(audio[-FRAME_SAMPLES:])  # fresh audio again after the restart
    finally:
        gen.close()


def test_a_factory_that_cannot_load_is_retried_and_reported() -> None:
    gen = ProcessGenerator("engine.no_such_module:Nothing", {}, restart_backoff_s=0.0)
    try:
        assert not gen.wait_ready(3)
        health = gen.health()
        assert health["state"] in ("starting", "restarting") and health["restarts"] >= 1
        assert "no_such_module" in health["last_error"]
        with pytest.raises(GeneratorUnavailable):
            gen.generate(frames(1))
    finally:
        gen.close()


SYNTH = "engine.generator.synth:SynthGenerator"


def test_snapshots_stay_in_the_child_named_by_frame_and_replay_exactly() -> None:
    """The real synth in its child: a snapshot named at frame 2 replays the frames after it bit for
    bit; restoring drops the later ones; a restarted child has none (GeneratorError, it lives on)."""
    from engine.generator.synth import SynthGenerator

    gen = ProcessGenerator(SYNTH, {}, seed=3)
    try:
        assert gen.wait_ready(60)
        gen.generate(frames(2))
        snap = gen.snapshot()
        played = gen.generate(frames(4, drum=DRUM_HIT))
        later = gen.snapshot()
        gen.generate(frames(2))
        gen.restore(snap)
        np.testing.assert_array_equal(gen.generate(frames(4, drum=DRUM_HIT)), played)
        reference = SynthGenerator(seed=3)
        reference.generate(frames(2))
        np.testing.assert_array_equal(reference.generate(frames(4, drum=DRUM_HIT)), played)
        with pytest.raises(GeneratorError, match="no snapshot at frame 6"):
            gen.restore(later)  # generated over: the child dropped it
        os.kill(gen.health()["pid"], signal.SIGKILL)
        with pytest.raises(GeneratorUnavailable):
            gen.generate(frames(1))
        assert gen.wait_ready(60)
        with pytest.raises(GeneratorError, match="restarted"):
            gen.restore(snap)
        assert gen.generate(frames(1)).shape == (FRAME_SAMPLES, 2)
    finally:
        gen.close()


def test_a_render_rolls_back_through_the_child_exactly_as_in_process(tmp_path) -> None:
    """A change inside the look-ahead, the synth in its own process: one rollback, and the same
    file as with the synth in-process."""
    import soundfile

    from engine.automation import load_automation
    from engine.generator.synth import SynthGenerator
    from engine.patch import parse_patch
    from engine.render import render

    auto = tmp_path / "auto.yaml"
    auto.write_text("events:\n  - {bar: 2, beat: 3.1, target: sampling.temperature, value: 0.2, quantize: now}\n")
    patch = parse_patch({"tempo": 120, "seed": 2, "style": [{"text": "a"}]})
    gen = ProcessGenerator(SYNTH, {}, seed=2)
    try:
        child = render(patch, bars=3, output=tmp_path / "child.wav", generator=gen, automation=load_automation(auto))
    finally:
        gen.close()
    local = render(patch, bars=3, output=tmp_path / "local.wav", generator=SynthGenerator(), automation=load_automation(auto))
    assert child.rollbacks == local.rollbacks == 1
    np.testing.assert_array_equal(soundfile.read(tmp_path / "child.wav")[0], soundfile.read(tmp_path / "local.wav")[0])
