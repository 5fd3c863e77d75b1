"""The style mix: one embedding from weighted prompt slots, centroids and the mean.

    e = (Σ wᵢ·eᵢ) / Σ max(wᵢ, 0)

over every slot, centroid and the mean embedding. With all weights positive this is the
weighted mean Σ wᵢeᵢ / Σ wᵢ that existing MRT tools use; a negative weight subtracts its
embedding without shrinking the normaliser. If no weight is positive the sum of |wᵢ|
normalises instead, and if every weight is zero the mix is the zero vector.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from engine.conditioning import STYLE_DIM


def mix_embeddings(embeddings: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """The documented weighted mix of (768,) embeddings."""
    if len(embeddings) != len(weights):
        raise ValueError(f"{len(embeddings)} embeddings but {len(weights)} weights")
    if not embeddings:
        return np.zeros(STYLE_DIM, dtype=np.float32)
    w = np.asarray(weights, dtype=np.float64)
    stacked = np.stack([np.asarray(e, dtype=np.float64) for e in embeddings])
    norm = w[w > 0].sum() or np.abs(w).sum()
    if norm == 0:
        return np.zeros(STYLE_DIM, dtype=np.float32)
    return (w @ stacked / norm).astype(np.float32)
