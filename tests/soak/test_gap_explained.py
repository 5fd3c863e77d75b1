"""The soak's reading of a silent gap against the engine's status `skips` (bench/soak.py):
zeros JACK put in the recording because it did not run the engine are the audio server's,
and only when those skipped cycles are what makes the gap (the rest of it shorter than one).
In a loaded 2-minute soak, 40 of the 49 spans the status listed landed on runs of exact
zeros in the recording, all at one offset between the engine's JACK frames and the recording's."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np

from bench.soak import SR, Soak, _replay_of

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


def soak_with_silence(tmp_path: Path, silence_ms: list[float]) -> Soak:
    soak = Soak(2.0, tmp_path)
    soak.rec = SimpleNamespace(first=0, frame_at=lambda t: int(t))  # type: ignore[assignment]
    soak.status = [(float(k * SR // 2), {"silence_ms": ms}) for k, ms in enumerate(silence_ms)]
    return soak


def test_a_gap_the_engine_counted_as_its_own_silence_is_explained_and_a_longer_one_is_not(tmp_path: Path) -> None:
    """No bar to loop yet (a restarted engine's first bar, its generator late): the engine feeds
    zeros and its status's silence_ms says how many; a gap longer than that is someone else's."""
    soak = soak_with_silence(tmp_path, [0.0, 0.0, 0.0, 0.0, 480.0, 480.0, 480.0, 480.0])
    assert "the engine's own silence" in soak._explain(2 * SR, 2 * SR + int(0.48 * SR))
    assert soak._explain(2 * SR, 2 * SR + int(0.60 * SR)) == ""
    restarted = soak_with_silence(tmp_path, [900.0, 900.0, 0.0, 0.0, 0.0, 0.0, 0.0])  # a new engine counts from 0
    assert restarted._explain(2 * SR, 2 * SR + int(0.1 * SR)) == ""


def test_a_replay_is_matched_on_sound_not_on_silence() -> None:
    """A bar replayed over an earlier explained silence plays, after it, what followed that one;
    silence after both matches any silence and explains nothing."""
    rng = np.random.default_rng(3)
    audio = rng.uniform(-0.5, 0.5, 10 * SR).astype(np.float32)
    audio[SR : SR + SR // 2] = 0.0  # the explained one (a probe's mute)
    audio[3 * SR : 3 * SR + SR // 2] = 0.0  # the bar replayed two seconds later
    audio[3 * SR + SR // 2 : 4 * SR] = audio[SR + SR // 2 : 2 * SR]
    assert _replay_of(audio, 3 * SR, 3 * SR + SR // 2, [(SR, SR + SR // 2)]).startswith("a bar replayed")
    audio[3 * SR + SR // 2 : 3 * SR + SR] = 0.0  # silence after it, and silence after the earlier one:
    audio[SR + SR // 2 : 2 * SR] = 0.0
    audio[2 * SR + SR // 2 : 3 * SR] = rng.uniform(-0.5, 0.5, SR // 2)  # (and sound before each, unlike)
    assert _replay_of(audio, 3 * SR, 3 * SR + SR // 2, [(SR, SR + SR // 2)]) == ""
