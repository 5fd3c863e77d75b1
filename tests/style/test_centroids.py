"""Centroid files from a folder of real audio files (sox-free: written with soundfile)."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import soundfile

from engine.errors import BacklineError
from engine.style.centroids import CENTROIDS_FILE, MEAN_FILE, add_commands


def write_tones(folder, freqs, seconds=4.0):
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * 16_000)) / 16_000
    for f in freqs:
        soundfile.write(folder / f"tone{f}.wav", 0.3 * np.sin(2 * np.pi * f * t), 16_000)


def run(argv):
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def test_centroids_command_writes_k_by_768_and_mean(tmp_path) -> None:
    write_tones(tmp_path / "audio", [110, 115, 3000, 3100])
    assert run(["centroids", "--audio", str(tmp_path / "audio"), "-k", "2", "-o", str(tmp_path / "out"), "--embedder", "hash", "--seed", "1"]) == 0
    centers = np.load(tmp_path / "out" / CENTROIDS_FILE)
    mean = np.load(tmp_path / "out" / MEAN_FILE)
    assert centers.shape == (2, 768) and mean.shape == (768,) and centers.dtype == np.float32
    # 4 s files with 10 s clips: one clip per file; the low and the high pair form the clusters.
    from engine.style.embedder import HashEmbedder

    e = HashEmbedder()
    low = np.mean([e.embed_audio(tmp_path / "audio" / f"tone{f}.wav") for f in (110, 115)], axis=0)
    assert min(np.linalg.norm(c - low) for c in centers) < 1e-4
    np.testing.assert_allclose(mean, np.mean([e.embed_audio(p) for p in sorted((tmp_path / "audio").iterdir())], axis=0), atol=1e-6)


def test_too_few_clips_is_a_clear_error(tmp_path) -> None:
    write_tones(tmp_path / "audio", [220])
    with pytest.raises(BacklineError, match="1 clips cannot make 8 clusters"):
        run(["centroids", "--audio", str(tmp_path / "audio"), "-k", "8", "-o", str(tmp_path / "out"), "--embedder", "hash"])
    with pytest.raises(BacklineError, match="no audio files"):
        run(["centroids", "--audio", str(tmp_path / "empty"), "-o", str(tmp_path / "out"), "--embedder", "hash"])
