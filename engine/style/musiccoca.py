"""The MusicCoCa embedder: magenta-rt's text/audio style model behind the engine's Embedder protocol.

Embedding runs off the generation path (patch load) and is cached on disk, keyed by model
version and prompt (audio: file content hash, start and duration), so a patch switch or a
restart never waits for the model. Tests use magenta-rt's MockMusicCoCa: the real TFLite
files cannot be downloaded here.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from pathlib import Path
from typing import Any, Literal

import numpy as np

from engine.conditioning import STYLE_DIM
from engine.errors import BacklineError
from engine.style.embedder import AUDIO_PROMPT_SECONDS, read_audio_span

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "backline" / "style"


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as err:
        raise BacklineError(f"audio prompt {path}: cannot read: {err}") from err
    return digest.hexdigest()


class MusicCoCaEmbedder:
    """Embedder over a magenta-rt MusicCoCa (or MockMusicCoCa) with an on-disk cache.

    Any thread: the embed pool, the patch loader and a SIGHUP reload may embed at once, and a
    TFLite interpreter is not thread-safe, so one lock serialises the model and the cache."""

    def __init__(self, model: Any, *, version: str, cache_dir: Path | None = None) -> None:
        self._model = model
        self._lock = threading.Lock()
        self.version = version
        self._cache_dir = cache_dir or default_cache_dir()
        self.model_calls = 0

    def _cached(self, key: str, compute) -> np.ndarray:
        with self._lock:
            return self._cached_locked(key, compute)

    def _cached_locked(self, key: str, compute) -> np.ndarray:
        path = self._cache_dir / f"{hashlib.sha256(key.encode()).hexdigest()}.npy"
        if path.exists():
            try:
                vector = np.load(path)
                if vector.shape == (STYLE_DIM,):
                    return vector
                log.warning("style cache %s has shape %s; recomputing", path, vector.shape)
            except (OSError, ValueError) as err:
                log.warning("style cache %s unreadable (%s); recomputing", path, err)
        vector = np.asarray(compute(), dtype=np.float32)
        self.model_calls += 1
        if vector.shape != (STYLE_DIM,):
            raise BacklineError(f"style model {self.version} returned shape {vector.shape}, expected ({STYLE_DIM},)")
        self._cache_dir.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        with partial.open("wb") as fh:
            np.save(fh, vector)
        partial.replace(path)
        return vector

    def embed_text(self, text: str) -> np.ndarray:
        return self._cached(f"{self.version}\0text\0{text}", lambda: self._model.embed(text))

    def embed_audio(self, path: Path, *, start: float = 0.0, duration: float = AUDIO_PROMPT_SECONDS) -> np.ndarray:
        from magenta_rt.audio import Waveform

        def compute() -> np.ndarray:
            mono, rate = read_audio_span(path, start=start, duration=duration)
            return self._model.embed(Waveform(mono[:, None], rate))

        return self._cached(f"{self.version}\0audio\0{file_digest(Path(path))}\0{start}\0{duration}", compute)


def style_model_for(options: dict[str, Any], *, cache_dir: Path | None = None) -> MusicCoCaEmbedder:
    """The embedder for a magenta generator built with `options` (its `style_model` and
    `magenta_home`): MusicCoCa from its files, or MockMusicCoCa under `style_model: mock`."""
    kind = options.get("style_model", "musiccoca")
    if not isinstance(kind, str):  # a tokenizer object handed over in-process (tests): it embeds too
        return MusicCoCaEmbedder(kind, version=f"custom/{type(kind).__name__}", cache_dir=cache_dir)
    return musiccoca_embedder(kind=kind, magenta_home=options.get("magenta_home"), cache_dir=cache_dir)  # type: ignore[arg-type]


def musiccoca_embedder(
    *, kind: Literal["musiccoca", "mock"] = "musiccoca", magenta_home: str | Path | None = None, cache_dir: Path | None = None
) -> MusicCoCaEmbedder:
    """The real MusicCoCa (files checked first) or the shipped mock, with the disk cache."""
    import magenta_rt
    from magenta_rt import musiccoca

    from engine.generator.magenta import assets

    if kind == "mock":
        return MusicCoCaEmbedder(musiccoca.MockMusicCoCa(), version=f"mock-musiccoca/{magenta_rt.__version__}", cache_dir=cache_dir)
    folder = assets.require_musiccoca(assets.musiccoca_dir(home=magenta_home))
    return MusicCoCaEmbedder(musiccoca.MusicCoCa(resource_dir=folder), version=f"musiccoca/{magenta_rt.__version__}", cache_dir=cache_dir)
