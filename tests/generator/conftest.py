"""Session fixtures for the magenta tests: one tiny random checkpoint, one JAX compilation cache.

The checkpoint is made by the documented command (`backline models make-random --size
tiny -o DIR`), so the tests exercise it too. The cache lives beside pytest's temporary
folders and survives between runs: a rerun loads the tiny model in seconds, not a minute.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def magenta_rt() -> None:
    """Skip (printing why) where magenta-rt is not installed; on CI it must be."""
    try:
        import magenta_rt  # noqa: F401
    except ImportError as err:
        if os.environ.get("CI"):
            raise
        print(f"skipping magenta tests: magenta-rt is not installed ({err}); pip install 'magenta-rt[jax]==2.0.3'")
        pytest.skip(f"magenta-rt is not installed: {err}")


@pytest.fixture(scope="session")
def jax_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.getbasetemp().parent / "backline-jax-cache"


@pytest.fixture(scope="session")
def tiny_checkpoint(magenta_rt: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("weights")
    result = subprocess.run(
        [sys.executable, "-m", "engine", "models", "make-random", "--size", "tiny", "-o", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    path = Path(result.stdout.strip().splitlines()[-1])
    assert path == out / "tiny.safetensors" and path.stat().st_size > 0
    return path
