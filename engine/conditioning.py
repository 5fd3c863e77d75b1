"""The per-frame conditioning record every generator reads, in MRT2's layout and ranges.

One record describes one 40 ms frame. The synth generator reads the same record as the
magenta generator, so every path that feeds the model is exercised without weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

STYLE_DIM = 768  # MusicCoCa embedding size
STYLE_TOKENS = 12  # MusicCoCa RVQ tokens per frame
STYLE_VOCAB = 1024
NUM_NOTES = 128

NOTE_MASK, NOTE_OFF, NOTE_HELD, NOTE_ONSET, NOTE_FREE = -1, 0, 1, 2, 3
DRUM_MASK, DRUM_NONE, DRUM_HIT = -1, 0, 1

TEMPERATURE_RANGE = (0.0, 4.0)
TOP_K_RANGE = (1, 1024)
CFG_RANGE = (-1.0, 7.0)
CFG_STEP = 0.2  # style and notes CFG token step
CFG_DRUMS_STEP = 1.0


def cfg_token(scale: float, *, step: float = CFG_STEP) -> int:
    """MRT2's CFG bin for a scale: scale in [-1, 7] quantised to `step` (0..40 or 0..8)."""
    lo, hi = CFG_RANGE
    clamped = min(max(scale, lo), hi)
    return int(math.floor((clamped - lo) / step + 0.5))


def check_range(name: str, value: float, lo: float, hi: float) -> None:
    """Raise the house-style ValueError for an out-of-range or NaN value."""
    if not (lo <= value <= hi):  # also catches NaN
        raise ValueError(f"{name} must be in {lo}..{hi}, got {value}")


@dataclass(frozen=True, slots=True)
class Sampling:
    """Sampling settings: runtime constants or tokens in MRT2, so they may change every frame."""

    temperature: float = 1.3
    top_k: int = 40
    cfg_style: float = 3.0
    cfg_notes: float = 1.0
    cfg_drums: float = 1.0

    def __post_init__(self) -> None:
        check_range("temperature", self.temperature, *TEMPERATURE_RANGE)
        check_range("top_k", self.top_k, *TOP_K_RANGE)
        if int(self.top_k) != self.top_k:
            raise ValueError(f"top_k must be an integer, got {self.top_k}")
        for name in ("cfg_style", "cfg_notes", "cfg_drums"):
            check_range(name, getattr(self, name), *CFG_RANGE)

    def cfg_tokens(self) -> tuple[int, int, int]:
        """The three CFG tokens MRT2 reads: style and notes (0..40), drums (0..8)."""
        return (
            cfg_token(self.cfg_style),
            cfg_token(self.cfg_notes),
            cfg_token(self.cfg_drums, step=CFG_DRUMS_STEP),
        )


@dataclass(frozen=True, slots=True)
class FrameConditioning:
    """Everything one frame is generated from.

    `style` is either a (768,) float32 MusicCoCa embedding or (12,) integer tokens.
    `notes` holds 128 states (-1 mask, 0 off, 1 held, 2 onset, 3 free); `drum` one state
    (-1 mask, 0 none, 1 hit). Arrays are shared between frames and must not be mutated.
    """

    style: np.ndarray
    notes: np.ndarray
    drum: int = DRUM_MASK
    sampling: Sampling = Sampling()

    def __post_init__(self) -> None:
        if self.style.shape not in ((STYLE_DIM,), (STYLE_TOKENS,)):
            raise ValueError(
                f"style must be a ({STYLE_DIM},) embedding or ({STYLE_TOKENS},) tokens, "
                f"got shape {self.style.shape}"
            )
        if self.notes.shape != (NUM_NOTES,):
            raise ValueError(f"notes must have shape ({NUM_NOTES},), got {self.notes.shape}")
        if self.drum not in (DRUM_MASK, DRUM_NONE, DRUM_HIT):
            raise ValueError(f"drum must be -1, 0 or 1, got {self.drum}")


def masked_notes() -> np.ndarray:
    """A read-only note vector with every pitch masked (the model decides)."""
    notes = np.full(NUM_NOTES, NOTE_MASK, dtype=np.int8)
    notes.flags.writeable = False
    return notes
