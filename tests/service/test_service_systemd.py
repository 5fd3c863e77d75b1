"""The shipped units pass `systemd-analyze verify`, and install-service installs them."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engine.service import install
from engine.service.commands import add_commands

REPO = Path(__file__).resolve().parents[2]
UNITS = sorted((REPO / "systemd").glob("*.service"))

needs_systemd = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                   reason="systemd-analyze is not installed (apt-get install systemd)")


def verify(*units: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemd-analyze", "verify", *map(str, units)], capture_output=True, text=True, timeout=60)


def unit_options(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, comment_prefixes=("#",))
    parser.optionxform = str  # keys are case-sensitive in systemd
    parser.read(path)
    return parser


@needs_systemd
def test_shipped_units_verify() -> None:
    assert {u.name for u in UNITS} == {"backline.service", "backline-generator.service", "jackd.service"}
    result = verify(*UNITS)
    # verify exits 0 on directives it merely ignores, so its warnings must be empty too
    assert result.returncode == 0 and result.stderr == "", result.stderr


@needs_systemd
def test_verify_catches_a_bad_directive(tmp_path: Path) -> None:
    """The check has teeth: a typo in the unit is reported."""
    broken = tmp_path / "backline.service"
    broken.write_text((REPO / "systemd/backline.service").read_text().replace("Type=notify", "Type=notfy"))
    result = verify(broken)
    assert "backline.service:" in result.stderr and "notfy" in result.stderr


def test_backline_unit_asks_for_what_a_stage_box_needs() -> None:
    service = unit_options(REPO / "systemd/backline.service")["Service"]
    assert service["Type"] == "notify" and service["Restart"] == "on-failure"
    assert int(service["WatchdogSec"]) > 0 and float(service["RestartSec"]) <= 2
    assert service["SupplementaryGroups"] == "audio" and service["LimitMEMLOCK"] == "infinity"
    assert service["ProtectSystem"] == "strict" and service["NoNewPrivileges"] == "yes" and service["PrivateTmp"] == "yes"
    assert "/var/lib/backline" in service["ReadWritePaths"] and "/var/cache/backline" in service["ReadWritePaths"]
    assert "PrivateDevices" not in service and "MemoryDenyWriteExecute" not in service


def test_generator_server_unit_is_notify_watchdog_and_restart() -> None:
    service = unit_options(REPO / "systemd/backline-generator.service")["Service"]
    assert service["Type"] == "notify" and service["Restart"] == "on-failure" and int(service["WatchdogSec"]) > 0
    assert service["ExecStart"] == "/usr/bin/env backline generator-server $BACKLINE_GENERATOR_ARGS"
    assert "--token-file=" in service["Environment"].split("BACKLINE_GENERATOR_ARGS=")[1]  # beyond loopback: a token
    assert "PrivateDevices" not in service  # it would hide the GPU


def run_cli(*argv: str) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="backline")
    add_commands(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def test_dry_run_prints_every_step_and_changes_nothing(tmp_path: Path, capsys) -> None:
    user = "backline-test-nobody"  # does not exist, so the plan creates it
    assert run_cli("install-service", "--dry-run", "--root", str(tmp_path), "--user", user) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("useradd --system") and lines[0].endswith(f"--groups audio --home-dir /var/lib/backline "
                                                                        f"--no-create-home --shell /usr/sbin/nologin {user}")
    assert f"install -d -o {user} -g {user} -m 0750 {tmp_path}/var/lib/backline" in lines
    assert f"install -m 0644 {REPO}/systemd/config.example.yaml {tmp_path}/etc/backline/config.yaml" in lines
    assert any(line.startswith(f"install -m 0644 {REPO}/systemd/backline.service {tmp_path}/etc/systemd/system/backline.service")
               for line in lines)
    assert lines[-2:] == ["systemctl daemon-reload", "systemctl enable backline.service"]
    assert list(tmp_path.iterdir()) == []


def test_install_into_a_root_then_again_keeps_edited_files(tmp_path: Path) -> None:
    steps = install.plan(root=tmp_path, create_user=False, systemctl=False, user="backline-test-nobody",
                         command=f"{sys.executable} -m engine")
    install.execute(steps)
    unit = tmp_path / "etc/systemd/system/backline.service"
    exec_start = unit_options(unit)["Service"]["ExecStart"]
    assert exec_start == f"{sys.executable} -m engine serve --config /etc/backline/config.yaml"
    assert (tmp_path / "etc/backline/patches/default.yaml").read_bytes() == (REPO / "patches/default.yaml").read_bytes()
    assert (tmp_path / "var/lib/backline").is_dir() and (tmp_path / "var/cache/backline").is_dir()
    config = tmp_path / "etc/backline/config.yaml"
    config.write_text("output: alsa\n")
    again = install.plan(root=tmp_path, create_user=False, systemctl=False, user="backline-test-nobody")
    assert not any("config.yaml" in step.command for step in again)
    install.execute(again)
    assert config.read_text() == "output: alsa\n"
    if shutil.which("systemd-analyze"):
        result = verify(unit)
        assert result.returncode == 0 and result.stderr == "", result.stderr


def test_install_without_root_privileges_refuses(monkeypatch, capsys) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)  # this machine runs tests as root; pretend not to
    assert run_cli("install-service") == 1
    assert "needs root" in capsys.readouterr().err
