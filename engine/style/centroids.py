"""Style centroids from a folder of audio: embed clips, k-means them, write finetune-compatible .npy files.

Writes `cluster_centroids.npy` (K x 768) and `mean_style_embed.npy` (768,), the files MRT
finetune tooling produces, so either source can feed the style mix.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from engine.errors import BacklineError
from engine.style.embedder import AUDIO_PROMPT_SECONDS, Embedder

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".aiff", ".aif", ".mp3")
CENTROIDS_FILE = "cluster_centroids.npy"
MEAN_FILE = "mean_style_embed.npy"


def embed_folder(folder: Path, embedder: Embedder, *, clip_seconds: float = AUDIO_PROMPT_SECONDS) -> np.ndarray:
    """(n, 768) embeddings: every audio file in `folder` (recursively), cut into clips."""
    import soundfile

    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise BacklineError(f"centroids: no audio files ({', '.join(AUDIO_SUFFIXES)}) under {folder}")
    rows = []
    for path in files:
        try:
            seconds = soundfile.info(str(path)).duration
        except (OSError, RuntimeError) as err:
            log.warning("centroids: skipping %s: %s", path, err)
            continue
        for start in np.arange(0.0, max(seconds - clip_seconds / 2, 0.0) + 1e-9, clip_seconds):
            rows.append(embedder.embed_audio(path, start=float(start), duration=clip_seconds))
    if not rows:
        raise BacklineError(f"centroids: no readable audio under {folder}")
    return np.stack(rows)


def centroids(embeddings: np.ndarray, *, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(K x 768 k-means centroids, 768 mean), float32."""
    if len(embeddings) < k:
        raise BacklineError(f"centroids: {len(embeddings)} clips cannot make {k} clusters; use a smaller -k or more audio")
    from sklearn.cluster import KMeans  # 1.5 s to import: only when clustering

    model = KMeans(n_clusters=k, n_init="auto", random_state=seed).fit(embeddings)
    return model.cluster_centers_.astype(np.float32), embeddings.mean(axis=0).astype(np.float32)


def write(out_dir: Path, centers: np.ndarray, mean: np.ndarray) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    np.save(out_dir / CENTROIDS_FILE, centers)
    np.save(out_dir / MEAN_FILE, mean)
    return out_dir / CENTROIDS_FILE, out_dir / MEAN_FILE


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("centroids", help="k-means style centroids from a folder of audio")
    parser.add_argument("--audio", type=Path, required=True, help="folder of audio files")
    parser.add_argument("-k", type=int, default=8)
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--embedder", choices=["musiccoca", "mock", "hash"], default="musiccoca")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(func=_centroids)


def _centroids(args: argparse.Namespace) -> int:
    if args.embedder == "hash":
        from engine.style.embedder import HashEmbedder

        embedder: Embedder = HashEmbedder()
    else:
        from engine.style.musiccoca import musiccoca_embedder

        embedder = musiccoca_embedder(kind=args.embedder)
    embeddings = embed_folder(args.audio, embedder)
    centers, mean = centroids(embeddings, k=args.k, seed=args.seed)
    for path in write(args.output, centers, mean):
        print(path)
    print(f"{len(embeddings)} clips, {args.k} centroids")
    return 0
