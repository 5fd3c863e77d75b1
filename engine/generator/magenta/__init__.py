"""The `magenta` generator: Magenta RealTime 2 (magenta-rt 2.0.3, JAX) under the engine's control.

Importing this package sets XLA_PYTHON_CLIENT_PREALLOCATE=false unless the user set it, so
JAX does not grab most of a GPU's memory before the first frame. Submodules import JAX;
this file does not, so `engine.generator.magenta.assets` works without magenta-rt installed.
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

# SpectroStream's decoder overlaps frames: a frame's conditioning changes the audio from about
# 19 ms (896 samples, measured on the tiny model) before the frame starts. A rollback keeps its
# splice this far ahead of the changed frame (Generator.audio_lead).
AUDIO_LEAD = 1024

__all__ = ["AUDIO_LEAD"]
