"""The soak's reading of a silent gap against the engine's status `skips` (bench/soak.py):
zeros JACK put in the recording because it did not run the engine are the audio server's,
and only when those skipped cycles are what makes the gap (the rest of it shorter than one).
In a loaded 2-minute soak, 40 of the 49 spans the status listed landed on runs of exact
zeros in the recording, all at one offset between the engine's JACK frames and the recording's."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from bench.soak import SR, Soak

FIRST = 0xFFFFFF00  # the recorder's first JACK frame, just before the 32-bit counter wraps


def soak_with_skips(tmp_path: Path, skips: list[tuple[int, int]]) -> Soak:
    soak = Soak(2.0, tmp_path)
    soak.rec = SimpleNamespace(first=FIRST, frame_at=lambda t: int(t))  # type: ignore[assignment]
    soak.status = [(float(t), {"skips": [[(FIRST + f) & 0xFFFFFFFF, n] for f, n in skips]}) for t in (SR, 3 * SR)]
    return soak


def test_a_gap_of_cycles_jack_skipped_is_the_servers(tmp_path: Path) -> None:
    soak = soak_with_skips(tmp_path, [(2 * SR, 256), (2 * SR + 256, 256)])
    why = soak._explain(2 * SR - 100, 2 * SR + 600)  # 100 quiet frames before, 88 after: each shorter than a gap
    assert why.startswith("JACK did not run the engine for 512 of its 700 frames"), why


def test_a_gap_longer_than_the_skipped_cycles_stays_unexplained(tmp_path: Path) -> None:
    soak = soak_with_skips(tmp_path, [(2 * SR, 256)])
    assert soak._explain(2 * SR, 2 * SR + 256 + SR // 50) == ""  # 20 ms of silence JACK did run the engine for
    assert soak._explain(2 * SR + SR // 10, 2 * SR + SR // 10 + 800) == ""  # the skip was elsewhere
