"""`fit: stretch|resample` chosen where the issue says: `--fit` on render and run, `fit:` in the
config and the patch; the engine's status names it; a bad value is one clear line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

from engine.errors import ConfigFileError, PatchError
from engine.patch import parse_patch
from engine.service.config import load_config
from engine.timeline import Timeline

REPO = Path(__file__).resolve().parents[2]


def cli_render(tmp_path: Path, *extra: str, patch: str = "patches/jungle.yaml") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine", "render", "--patch", patch, "--bars", "2",
                           "-o", str(tmp_path / "out.wav"), *extra], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_render_fit_picks_the_fitter(tmp_path: Path) -> None:
    files = {}
    for fit in ("stretch", "resample"):
        proc = cli_render(tmp_path, "--fit", fit)
        assert proc.returncode == 0, proc.stderr
        files[fit], _ = soundfile.read(tmp_path / "out.wav", dtype="float32")
    assert len(files["stretch"]) == len(files["resample"]) == Timeline.start("174", 4).bar_start(2)
    assert not np.array_equal(files["stretch"], files["resample"])


def test_a_bad_fit_is_one_line_and_exit_2(tmp_path: Path) -> None:
    proc = cli_render(tmp_path, "--fit", "warp")
    assert proc.returncode == 2 and "--fit" in proc.stderr and "Traceback" not in proc.stderr


def test_the_patch_and_the_config_name_a_fit(tmp_path: Path) -> None:
    assert parse_patch({"tempo": 120, "style": [{"text": "a"}], "fit": "stretch"}).fit == "stretch"
    with pytest.raises(PatchError, match="fit"):
        parse_patch({"tempo": 120, "style": [{"text": "a"}], "fit": "warp"})
    config = tmp_path / "backline.yaml"
    config.write_text("fit: resample\n")
    assert load_config(config, environ={}).fit == "resample"
    config.write_text("fit: warp\n")
    with pytest.raises(ConfigFileError, match="fit"):
        load_config(config, environ={})


def test_the_status_says_which_fit_plays(tmp_path: Path) -> None:
    from engine.audio.offline import OfflineSink
    from engine.engine import Engine
    from engine.generator.synth import SynthGenerator

    for fit, patch_fit in (("resample", None), (None, "resample"), (None, None)):
        data = {"tempo": 120, "style": [{"text": "a"}], **({"fit": patch_fit} if patch_fit else {})}
        engine = Engine(patch=parse_patch(data), generator=SynthGenerator(), fit=fit, status_line=False,
                        sink_factory=lambda ring: OfflineSink(ring, tmp_path / "x.wav", end=lambda: 0))
        assert engine.status()["fit"] == (fit or patch_fit or "stretch")
