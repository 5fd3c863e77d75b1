"""The benchmark entry point runs and prints every core row.

Correctness only: row names, numbers that parse, and the bar-grid and pitch bounds the
engine promises. Speeds are printed by `python -m bench`, never asserted.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

from bench.__main__ import run

REPO = Path(__file__).resolve().parent.parent
TEMPOS = ("91.3", "120", "127", "133.33", "174")
EXPECTED = [
    "core.synth_rtf",
    "core.fitter_cpu@91.3",
    "core.fitter_cpu@120",
    "core.sched_fitter_cpu@91.3",
    *(f"core.bar_start_err@{t}" for t in TEMPOS),
    *(f"core.fitter_{what}@{t}" for t in TEMPOS for what in ("pitch", "splice")),
]


def test_quick_core_run_prints_every_row_with_sound_figures() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", "core"],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stderr
    figures = {}
    for line in result.stdout.splitlines():
        if line.startswith("core."):
            name, figure = line.split()[:2]
            figures[name] = float(figure)
    assert list(figures) == EXPECTED
    assert all(math.isfinite(v) and v >= 0 for v in figures.values())
    for t in TEMPOS:
        assert figures[f"core.bar_start_err@{t}"] <= 0.5
        assert figures[f"core.fitter_pitch@{t}"] < 5.0
        assert figures[f"core.fitter_splice@{t}"] < 1920  # less than one frame per bar
    assert figures["core.bar_start_err@120"] == 0.0  # 96,000 samples per bar: no rounding at all
    assert figures["core.fitter_splice@120"] == 0.0  # 50 whole frames per bar: nothing spliced


def test_a_module_that_fails_to_import_is_skipped_with_its_reason(capsys) -> None:
    rows, failed = run(["no_such_module"], quick=True)
    assert rows == [] and failed == 0
    assert "skipped bench.no_such_module_bench: ModuleNotFoundError" in capsys.readouterr().err
