"""`backline check` validates config, mapping files and patches together, through the engine's own loaders."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def check(*argv: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "engine", "check", *argv], cwd=cwd, capture_output=True, text=True,
                          timeout=60, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})


def write_config(tmp_path: Path, **keys: str) -> Path:
    (tmp_path / "patches").mkdir()
    (tmp_path / "patches/a.yaml").write_text((REPO / "patches/default.yaml").read_text())
    (tmp_path / "maps").mkdir()
    (tmp_path / "maps/pedal.yaml").write_text((REPO / "mappings/generic-pedal-footswitch.yaml").read_text())
    lines = {"patch": "patches/a.yaml", "patches": "patches", "mappings": "[maps/pedal.yaml]", **keys}
    config = tmp_path / "config.yaml"
    config.write_text("".join(f"{k}: {v}\n" for k, v in lines.items()))
    return config


def test_shipped_patches_and_mappings_pass() -> None:
    result = check()
    assert result.returncode == 0, result.stderr
    assert "(patch)" in result.stdout and "(mapping)" in result.stdout


def test_a_good_config_checks_its_patches_and_mappings(tmp_path: Path) -> None:
    result = check("--config", str(write_config(tmp_path)))
    assert result.returncode == 0, result.stderr
    assert "config.yaml (config)" in result.stdout
    assert "a.yaml (patch)" in result.stdout and "pedal.yaml (mapping)" in result.stdout


def test_every_broken_file_is_named_and_the_exit_status_is_1(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    good = (REPO / "patches/default.yaml").read_text()
    (tmp_path / "patches/b.yaml").write_text(good.replace("tempo: 120", "tempo: fast"))
    (tmp_path / "maps/pedal.yaml").write_text("info: {name: x}\ncontrols:\n  - {match: {midi: {cc: 999}}, target: master.gain}\n")
    result = check("--config", str(config))
    assert result.returncode == 1
    assert "b.yaml" in result.stderr and "tempo" in result.stderr
    assert "pedal.yaml" in result.stderr and "controls[0]" in result.stderr
    assert "a.yaml (patch)" in result.stdout  # the good file is still checked and reported


def test_a_broken_config_names_the_key(tmp_path: Path) -> None:
    result = check("--config", str(write_config(tmp_path, blocksize="tiny")))
    assert result.returncode == 1
    assert "config.yaml" in result.stderr and "blocksize" in result.stderr
