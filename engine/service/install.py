"""`backline install-service`: user, folders, config, unit, enable — as a list of steps.

Each step carries the shell command it is equivalent to, so `--dry-run` prints exactly
what would happen and a person can do it by hand instead. Files a person may have
edited (config, env, patches, mappings) are never overwritten.
"""

from __future__ import annotations

import logging
import pwd
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from engine.errors import BacklineError

log = logging.getLogger(__name__)

UNIT_NAME = "backline.service"
UNIT_EXEC = "/usr/bin/env backline"


class InstallError(BacklineError):
    """A step of install-service failed, or its source files are missing."""


@dataclass(frozen=True, slots=True)
class Step:
    command: str
    action: Callable[[], None]


def source_root() -> Path:
    """The checkout that holds `systemd/`, `patches/` and `mappings/` (the files to install)."""
    return Path(__file__).resolve().parents[2]


def backline_command() -> str:
    """How systemd should start this backline: the console script, else this Python with `-m engine`."""
    found = shutil.which("backline")
    return str(Path(found).resolve()) if found else f"{sys.executable} -m engine"


def plan(*, root: Path = Path("/"), source: Path | None = None, user: str = "backline", command: str | None = None,
         create_user: bool = True, systemctl: bool = True, start: bool = False) -> list[Step]:
    """The steps, decided now from what exists; nothing is changed until a step runs."""
    source = source or source_root()
    unit = source / "systemd" / UNIT_NAME
    if not unit.is_file():
        raise InstallError(f"{unit} not found: run install-service from a backline source checkout")
    etc, state, cache = root / "etc/backline", root / "var/lib/backline", root / "var/cache/backline"
    steps: list[Step] = []
    owner = _user_exists(user)
    if create_user and not owner:
        args = ["useradd", "--system", "--user-group", "--groups", "audio", "--home-dir", "/var/lib/backline",
                "--no-create-home", "--shell", "/usr/sbin/nologin", user]
        steps.append(Step(" ".join(args), _run(args)))
        owner = True
    for folder in (etc, etc / "patches", etc / "mappings"):
        steps.append(Step(f"install -d -m 0755 {folder}", _mkdir(folder, None)))
    for folder in (state, cache):
        mode = f"-o {user} -g {user} " if owner else ""
        steps.append(Step(f"install -d {mode}-m 0750 {folder}", _mkdir(folder, user if owner else None)))
    copies = [(source / "systemd/config.example.yaml", etc / "config.yaml"), (source / "systemd/backline.env", etc / "backline.env")]
    for kind in ("patches", "mappings"):
        copies += [(f, etc / kind / f.name) for f in sorted((source / kind).glob("*.yaml"))]
    for src, dst in copies:
        if dst.exists():
            log.info("keeping %s (already there)", dst)
        else:
            steps.append(Step(f"install -m 0644 {src} {dst}", _copy(src, dst)))
    command = command or backline_command()
    text = unit.read_text(encoding="utf-8").replace(f"ExecStart={UNIT_EXEC} ", f"ExecStart={command} ")
    target = root / "etc/systemd/system" / UNIT_NAME
    steps.append(Step(f"install -m 0644 {unit} {target}  # ExecStart={command} serve ...", _write(target, text)))
    if systemctl:
        steps.append(Step("systemctl daemon-reload", _run(["systemctl", "daemon-reload"])))
        enable = ["systemctl", "enable"] + (["--now"] if start else []) + [UNIT_NAME]
        steps.append(Step(" ".join(enable), _run(enable)))
    return steps


def execute(steps: list[Step]) -> None:
    for step in steps:
        log.info("%s", step.command)
        try:
            step.action()
        except (OSError, subprocess.CalledProcessError) as err:
            raise InstallError(f"step failed: {step.command}: {err}") from err


def _user_exists(user: str) -> bool:
    try:
        pwd.getpwnam(user)
    except KeyError:
        return False
    return True


def _run(args: list[str]) -> Callable[[], None]:
    return lambda: subprocess.run(args, check=True)


def _mkdir(folder: Path, owner: str | None) -> Callable[[], None]:
    def action() -> None:
        folder.mkdir(parents=True, exist_ok=True)
        if owner:
            shutil.chown(folder, owner, owner)
            folder.chmod(0o750)

    return action


def _copy(src: Path, dst: Path) -> Callable[[], None]:
    return lambda: shutil.copyfile(src, dst)


def _write(target: Path, text: str) -> Callable[[], None]:
    def action() -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")

    return action
