"""MusicCoCa embedder's disk cache, over magenta-rt's shipped MockMusicCoCa (real files cannot be downloaded here)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile

try:
    import magenta_rt  # noqa: F401
except ImportError as err:
    if os.environ.get("CI"):
        raise
    print(f"skipping MusicCoCa tests: magenta-rt is not installed ({err})")
    pytest.skip(f"magenta-rt is not installed: {err}", allow_module_level=True)

from engine.errors import GeneratorError
from engine.style.musiccoca import musiccoca_embedder

pytestmark = pytest.mark.magenta


def test_text_and_audio_embeddings_are_cached_on_disk_by_version_and_prompt(tmp_path) -> None:
    first = musiccoca_embedder(kind="mock", cache_dir=tmp_path / "cache")
    a, b = first.embed_text("disco funk"), first.embed_text("dub techno")
    assert a.shape == (768,) and not np.allclose(a, b) and first.model_calls == 2
    wav = tmp_path / "loop.wav"
    soundfile.write(wav, 0.2 * np.sin(np.arange(48_000 * 3) / 20.0), 48_000)
    clip, later = first.embed_audio(wav), first.embed_audio(wav, start=1.0, duration=1.0)
    assert not np.allclose(clip, later) and first.model_calls == 4

    second = musiccoca_embedder(kind="mock", cache_dir=tmp_path / "cache")  # a restart: all from disk
    np.testing.assert_array_equal(second.embed_text("disco funk"), a)
    np.testing.assert_array_equal(second.embed_audio(wav, start=1.0, duration=1.0), later)
    assert second.model_calls == 0
    soundfile.write(wav, 0.2 * np.sin(np.arange(48_000 * 3) / 30.0), 48_000)  # new content, new key
    assert not np.allclose(second.embed_audio(wav), clip) and second.model_calls == 1


def test_missing_musiccoca_files_name_the_file_and_fetch_command(tmp_path) -> None:
    with pytest.raises(GeneratorError, match=r"musiccoca/spm\.model: missing.*backline models fetch small"):
        musiccoca_embedder(kind="musiccoca", magenta_home=tmp_path, cache_dir=tmp_path / "cache")
