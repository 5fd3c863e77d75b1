"""Asset discovery and validation (no JAX needed): missing, empty, corrupt and truncated files."""

from __future__ import annotations

import json
import struct

import pytest

from engine.errors import GeneratorError
from engine.generator.magenta import assets


def safetensors_bytes(payload: int, claimed: int) -> bytes:
    header = json.dumps({"w": {"dtype": "F32", "shape": [claimed // 4], "data_offsets": [0, claimed]}}).encode()
    return struct.pack("<Q", len(header)) + header + b"\0" * payload


def test_status_reports_every_asset_under_magenta_home(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MAGENTA_HOME", str(tmp_path))
    ckpt = tmp_path / "magenta-rt-v2" / "checkpoints"
    ckpt.mkdir(parents=True)
    (ckpt / "mrt2_small.safetensors").write_bytes(safetensors_bytes(64, 64))
    (ckpt / "mrt2_base.safetensors").write_bytes(safetensors_bytes(16, 64))
    rows = {r.name: r for r in assets.status(checksum=True)}
    assert rows["mrt2_small"].ok and rows["mrt2_small"].size > 64 and len(rows["mrt2_small"].sha256) == 64
    assert "truncated" in rows["mrt2_base"].problem
    assert rows["musiccoca/spm.model"].problem == "missing"


@pytest.mark.parametrize(
    ("content", "problem"),
    [(None, "missing"), (b"", "empty"), (b"\xff" * 40, "header length"), (struct.pack("<Q", 4) + b"[1] ", "not a JSON object")],
)
def test_bad_checkpoint_names_file_problem_and_fetch_command(tmp_path, content, problem) -> None:
    path = tmp_path / "mrt2_small.safetensors"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(GeneratorError) as info:
        assets.require_checkpoint(path)
    assert str(path) in str(info.value) and problem in str(info.value)
    assert "backline models fetch small" in str(info.value)
