"""The generator contract: conditioning frames in, 40 ms stereo audio frames out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from engine.conditioning import FrameConditioning
from engine.errors import GeneratorError
from engine.style.embedder import Embedder, HashEmbedder
from engine.units import CHANNELS, FRAME_SAMPLES, SAMPLE_RATE


class Generator(ABC):
    """Produces audio one 40 ms frame per conditioning record.

    The scheduler owns the generator and calls it from one thread only.
    """

    name: str = "generator"
    frame_samples: int = FRAME_SAMPLES
    audio_lead: int = 0  # samples before a frame whose audio its conditioning may change (a decoder's overlap)
    sample_rate: int = SAMPLE_RATE
    channels: int = CHANNELS

    @abstractmethod
    def reset(self, seed: int) -> None:
        """Forget all state and start again from `seed`; equal seeds give equal audio."""

    @abstractmethod
    def generate(self, conditioning: Sequence[FrameConditioning]) -> np.ndarray:
        """Return (len(conditioning) * 1920, 2) float32 audio, frame i shaped by record i."""

    def snapshot(self) -> object:
        """The whole state between two calls, named by the frame index it stands at (frames
        generated since `reset`). `restore` of it makes the next `generate` continue from that
        frame exactly: the same conditioning gives the same audio, bit for bit, any number of
        times. The scheduler keeps one per chunk of its look-ahead, so audio generated but not
        heard yet can be generated again with a late change (rollback). GeneratorError where a
        generator cannot (the scheduler then plays its look-ahead as generated)."""
        raise GeneratorError(f"generator {self.name} cannot snapshot its state")

    def restore(self, snapshot: object) -> None:
        """Continue from `snapshot` as if nothing after it had been generated; GeneratorError
        if it is gone (a restarted child process keeps none)."""
        raise GeneratorError(f"generator {self.name} cannot restore a snapshot")

    def wait_ready(self, timeout: float) -> bool:
        """Block until generate() can make audio, at most `timeout` s (offline render, start-up).

        In-process generators are ready once built; a generator in a child process is
        not until the child has loaded, and raises GeneratorUnavailable meanwhile.
        """
        return True

    def wait_reachable(self) -> None:
        """Before an offline render: return once generate() can be asked at all, or raise
        GeneratorUnavailable with why it cannot (a generator server that cannot be reached after
        a few tries: a file has no fallback, and waiting out `wait_ready` would not mend it).
        Local generators are always reachable; one that loads is waited for by `wait_ready`."""

    def heard(self, *, underruns: int, lookahead_ms: float) -> None:
        """How playback goes on the stage box, told about once a second by the scheduling loop
        (the thread that calls generate): a generator server lists it per session. Most
        generators have no one to tell."""

    def style_model(self, *, cache_dir: Path | None = None) -> Embedder:
        """The embedder whose 768-d space this generator's conditioning lives in, built in the
        engine's own process (prompts are embedded there, off the generation thread, and the
        mixed embedding is what crosses to the generator). A generator without a style model
        of its own (the synth) gets the deterministic stand-in."""
        return HashEmbedder()

    def close(self) -> None:
        """Release resources (processes, devices). Safe to call twice."""
