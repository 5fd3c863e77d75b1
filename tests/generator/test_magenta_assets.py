"""Asset discovery and validation (no JAX needed): missing, empty, corrupt and truncated files."""

from __future__ import annotations

import json
import logging
import multiprocessing
import struct

import pytest

from engine.errors import GeneratorError
from engine.generator import create_generator
from engine.generator.magenta import assets
from engine.generator.synth import SynthGenerator


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


def test_create_generator_refuses_missing_weights_before_any_child_starts(magenta_rt, tmp_path) -> None:
    missing = tmp_path / "mrt2_base.safetensors"
    with pytest.raises(GeneratorError) as info:
        create_generator("magenta", process=True, checkpoint=missing, style_model="mock")
    assert str(missing) in str(info.value) and "backline models fetch base" in str(info.value)
    assert not multiprocessing.active_children()


def test_create_generator_names_a_missing_musiccoca_file(magenta_rt, tmp_path) -> None:
    checkpoint = tmp_path / "mrt2_small.safetensors"
    checkpoint.write_bytes(safetensors_bytes(64, 64))
    with pytest.raises(GeneratorError) as info:
        create_generator("magenta", checkpoint=checkpoint, style_model="musiccoca", magenta_home=tmp_path)
    expected = tmp_path / "magenta-rt-v2" / "resources" / "musiccoca" / "spm.model"
    assert str(expected) in str(info.value) and "backline models fetch small" in str(info.value)


def test_missing_weights_fall_back_to_synth_loudly_when_configured(magenta_rt, tmp_path, caplog) -> None:
    corrupt = tmp_path / "mrt2_small.safetensors"
    corrupt.write_bytes(b"\xff" * 64)
    with caplog.at_level(logging.ERROR, logger="engine.generator"):
        generator = create_generator("magenta", checkpoint=corrupt, style_model="mock", on_missing_assets="synth")
    try:
        assert isinstance(generator, SynthGenerator)
        [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert "PLAYING THE SYNTH" in record.getMessage() and str(corrupt) in record.getMessage()
        assert "backline models fetch small" in record.getMessage()
    finally:
        generator.close()
