"""The project's onset check: where each synth hit starts, in samples.

Shared by the beat-grid bench rows and the tests that assert the grid (tests/core,
tests/clock), so a figure in bench/RESULTS.md and a test's bound are read by one measure.
"""

from __future__ import annotations

import numpy as np


def onsets(mono: np.ndarray) -> np.ndarray:
    """Sample indices where the level rises from quiet to loud (1 ms hops, 5 ms memory, 150 ms apart)."""
    hop = 48
    env = np.concatenate([[0.0] * 5, np.abs(mono[: len(mono) // hop * hop]).reshape(-1, hop).max(axis=1)])
    hits: list[int] = []
    for f in range(5, len(env)):
        quiet = env[f - 5 : f].min()
        if env[f] > 0.25 and env[f] > 3 * quiet + 0.05 and (not hits or (f - 5) * hop - hits[-1] > 7200):
            start = (f - 5 - 4) * hop
            region = np.abs(mono[max(start, 0) : (f - 4) * hop])
            hits.append(max(start, 0) + int(np.argmax(region > quiet + 0.02)))
    return np.array(hits)
