"""Broken patches: each gives one clear error naming the file and key path, and exit 1."""

import subprocess
import sys
from pathlib import Path

import pytest

from engine.errors import PatchError
from engine.patch import load_patch

REPO = Path(__file__).resolve().parents[2]

CASES = {
    "wrong_type": ("tempo: fast\nstyle: [{text: a}]\n", "tempo", "is not of type 'number'"),
    "unknown_key": ("tempo: 120\nstyle: [{text: a}]\ntempoo: 3\n", "<top>", "'tempoo' was unexpected"),
    "bad_slot_key": ("tempo: 120\nstyle: [{text: a, wieght: 1}]\n", "style[0]", "'wieght' was unexpected"),
    "out_of_range": ("tempo: 120\nstyle: [{text: a}]\nsampling: {temperature: 7.5}\n", "sampling.temperature", "7.5 is greater than the maximum of 4.0"),
    "missing_file": ("tempo: 120\nstyle: [{audio: nowhere.wav}]\n", "style[0].audio", "audio file not found"),
    "missing_centroids": ("tempo: 120\nstyle: [{centroid: 2}]\n", "style[0].centroid", "centroid 2 does not exist (no centroids file)"),
    "bad_yaml": ("tempo: 120\nstyle: [{text: a}\n", "line ", "invalid YAML"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_broken_patch_names_file_key_and_expectation(tmp_path, case) -> None:
    text, key, expected = CASES[case]
    file = tmp_path / f"{case}.yaml"
    file.write_text(text)
    with pytest.raises(PatchError) as info:
        load_patch(file)
    message = str(info.value)
    assert str(file) in message and key in message and expected in message, message


@pytest.mark.parametrize("case", ["wrong_type", "unknown_key", "missing_file", "bad_yaml"])
def test_broken_patch_exits_non_zero_from_the_cli(tmp_path, case) -> None:
    text, key, expected = CASES[case]
    file = tmp_path / f"{case}.yaml"
    file.write_text(text)
    for argv in (["check", str(file)], ["render", "--patch", str(file), "--bars", "1", "-o", str(tmp_path / "x.wav")]):
        proc = subprocess.run([sys.executable, "-m", "engine", *argv], cwd=REPO, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 1
        assert expected in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "x.wav").exists()
