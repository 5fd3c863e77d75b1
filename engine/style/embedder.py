"""Style embedders: text prompts and audio files to 768-d MusicCoCa-shaped vectors.

`HashEmbedder` needs no weights: equal prompts give equal vectors and different prompts
give clearly different ones, which is all the synth generator needs to sound different
per prompt. The MusicCoCa embedder (magenta) implements the same protocol.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Protocol

import numpy as np
import soundfile

from engine.conditioning import STYLE_DIM
from engine.errors import BacklineError

AUDIO_PROMPT_SECONDS = 10.0


class Embedder(Protocol):
    """Turns prompts into (768,) float32 embeddings. Called off the audio path."""

    version: str

    def embed_text(self, text: str) -> np.ndarray: ...

    def embed_audio(self, path: Path, *, start: float = 0.0, duration: float = AUDIO_PROMPT_SECONDS) -> np.ndarray: ...


def read_audio_span(path: Path, *, start: float, duration: float) -> tuple[np.ndarray, int]:
    """Mono float32 samples of `path` from `start` for `duration` seconds, and the rate."""
    try:
        info = soundfile.info(str(path))
        first = int(start * info.samplerate)
        count = int(duration * info.samplerate)
        data, rate = soundfile.read(str(path), start=first, frames=count, dtype="float32", always_2d=True)
    except (OSError, RuntimeError, soundfile.LibsndfileError) as err:
        raise BacklineError(f"audio prompt {path}: cannot read: {err}") from err
    if len(data) == 0:
        raise BacklineError(f"audio prompt {path}: no audio between {start} s and {start + duration} s")
    return data.mean(axis=1), rate


def _unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return (vector / norm if norm > 0 else vector).astype(np.float32)


class HashEmbedder:
    """Deterministic stand-in embedder: text by hash, audio by its band spectrum."""

    version = "hash-1"
    _BANDS = 48

    def __init__(self) -> None:
        projection_rng = np.random.default_rng(0x5EED)
        self._audio_projection = projection_rng.standard_normal((self._BANDS, STYLE_DIM)).astype(np.float32)

    def embed_text(self, text: str) -> np.ndarray:
        digest = hashlib.sha256(text.strip().lower().encode()).digest()
        rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
        return _unit(rng.standard_normal(STYLE_DIM))

    def embed_audio(self, path: Path, *, start: float = 0.0, duration: float = AUDIO_PROMPT_SECONDS) -> np.ndarray:
        mono, rate = read_audio_span(path, start=start, duration=duration)
        spectrum = np.abs(np.fft.rfft(mono * np.hanning(len(mono))))
        freqs = np.fft.rfftfreq(len(mono), 1.0 / rate)
        edges = np.geomspace(30.0, min(16_000.0, rate / 2), self._BANDS + 1)
        bands = np.array([spectrum[(freqs >= lo) & (freqs < hi)].sum() for lo, hi in zip(edges[:-1], edges[1:])])
        profile = np.log1p(bands / (bands.sum() + 1e-12) * self._BANDS)
        return _unit(profile.astype(np.float32) @ self._audio_projection)
