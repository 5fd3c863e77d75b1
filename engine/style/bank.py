"""The embeddings of one patch's style sources, and the mix the parameters ask for."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.params import ParameterState
from engine.patch import Patch, StyleSlot
from engine.style.embedder import Embedder
from engine.style.mix import mix_embeddings


def embed_slot(embedder: Embedder, slot: StyleSlot, patch: Patch) -> np.ndarray:
    """One slot's (768,) embedding. Runs off the audio path (control or loader thread)."""
    if slot.kind == "text":
        return embedder.embed_text(str(slot.source))
    if slot.kind == "audio":
        return embedder.embed_audio(Path(str(slot.source)), start=slot.start, duration=slot.duration)
    if slot.kind == "centroid":
        assert patch.centroids is not None  # checked when the patch loaded
        return patch.centroids[int(slot.source)]
    assert patch.mean_embedding is not None
    return patch.mean_embedding


class StyleBank:
    """Every embedding a patch can mix, computed once when the patch loads.

    Owned by the scheduler; a replaced slot is swapped in whole by `with_slot`.
    """

    def __init__(self, slots: list[np.ndarray], centroids: np.ndarray | None, mean: np.ndarray | None) -> None:
        self.slots = slots
        self.centroids = centroids if centroids is not None else np.zeros((0, 768), np.float32)
        self.mean = mean

    @classmethod
    def for_patch(cls, patch: Patch, embedder: Embedder) -> StyleBank:
        return cls([embed_slot(embedder, s, patch) for s in patch.slots], patch.centroids, patch.mean_embedding)

    def with_slot(self, index: int, embedding: np.ndarray) -> StyleBank:
        slots = list(self.slots)
        slots[index] = embedding
        return StyleBank(slots, self.centroids, self.mean)

    def mix(self, state: ParameterState) -> np.ndarray:
        embeddings = list(self.slots) + list(self.centroids[: len(state.centroid_weights)])
        weights = list(state.style_weights) + list(state.centroid_weights)
        if self.mean is not None:
            embeddings.append(self.mean)
            weights.append(state.mean_weight)
        return mix_embeddings(embeddings, weights)
