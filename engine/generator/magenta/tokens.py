"""FrameConditioning -> MRT2's 144 integer conditioning channels, in the model's order.

| 12 style tokens | 128 note states | 1 drum | 2 CFG (style, notes) | 1 CFG drums |

Values are the musician-facing ones (-1 mask, 0..1023 style, ...); `MODEL_OFFSET` is what
magenta-rt adds before the embedding lookup (6 reserved ids + 1 dropout id), so -1 becomes
the mask id. Style embeddings are tokenized by the style model once per distinct
embedding, not once per frame.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from engine.conditioning import NUM_NOTES, STYLE_TOKENS, FrameConditioning
from engine.errors import GeneratorError

CHANNELS = STYLE_TOKENS + NUM_NOTES + 1 + 2 + 1  # 144
STYLE_SLICE = slice(0, STYLE_TOKENS)
NOTES_SLICE = slice(STYLE_TOKENS, STYLE_TOKENS + NUM_NOTES)
DRUM_INDEX = STYLE_TOKENS + NUM_NOTES
CFG_SLICE = slice(DRUM_INDEX + 1, CHANNELS)  # style, notes, drums
MODEL_OFFSET = 7


class StyleTokenizer(Protocol):
    """magenta-rt's MusicCoCa (or MockMusicCoCa): (768,) float32 -> (12,) int tokens."""

    def tokenize(self, embeddings: np.ndarray) -> np.ndarray: ...


class TokenEncoder:
    """Encodes frames into (n, 144) int32 blocks, caching style tokenization per embedding.

    Used from the generator's thread only.
    """

    def __init__(self, tokenizer: StyleTokenizer, *, cache_size: int = 256) -> None:
        self._tokenizer = tokenizer
        self._cache: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._cache_size = cache_size
        self.tokenize_calls = 0

    def style_tokens(self, style: np.ndarray) -> np.ndarray:
        """(12,) int32 tokens for a style embedding or token vector."""
        if style.shape == (STYLE_TOKENS,):
            return style.astype(np.int32)
        key = hashlib.blake2b(np.ascontiguousarray(style, dtype=np.float32).tobytes(), digest_size=16).digest()
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        tokens = np.asarray(self._tokenizer.tokenize(np.asarray(style, dtype=np.float32)), dtype=np.int32)
        self.tokenize_calls += 1
        if tokens.shape != (STYLE_TOKENS,):
            raise GeneratorError(f"style model returned tokens of shape {tokens.shape}, expected ({STYLE_TOKENS},)")
        self._cache[key] = tokens
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return tokens

    def frame(self, cond: FrameConditioning) -> np.ndarray:
        """The 144 channels of one frame."""
        row = np.empty(CHANNELS, dtype=np.int32)
        row[STYLE_SLICE] = self.style_tokens(cond.style)
        row[NOTES_SLICE] = cond.notes
        row[DRUM_INDEX] = cond.drum
        row[CFG_SLICE] = cond.sampling.cfg_tokens()
        return row

    def block(self, conds: Sequence[FrameConditioning]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(tokens (n, 144) int32, temperature (n,) float32, top_k (n,) int32)."""
        tokens = np.stack([self.frame(c) for c in conds])
        temperature = np.array([c.sampling.temperature for c in conds], dtype=np.float32)
        top_k = np.array([c.sampling.top_k for c in conds], dtype=np.int32)
        return tokens, temperature, top_k


__all__ = ["CHANNELS", "MODEL_OFFSET", "StyleTokenizer", "TokenEncoder"]
