"""`backline check`: validate config, mapping files and patches together, before a show.

Every file is read with the same loader the engine uses, so an error printed here is the
error the engine would log, with file, key path and reason. Exit status 1 on any error.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import yaml

from engine.errors import BacklineError


def _yaml_files(paths: Iterable[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*.y*ml") if p.suffix in (".yaml", ".yml"))
        else:
            yield path


def _is_mapping(file: Path) -> bool:
    """Mapping files live under a `mappings` folder or have a top-level `controls` list."""
    if "mappings" in file.parts[:-1]:
        return True
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return False  # the patch loader reports it, with file and reason
    return isinstance(data, dict) and "controls" in data


def _check_one(file: Path) -> str:
    """Validate one file; returns its kind. Raises BacklineError."""
    if _is_mapping(file):
        from engine.control.mapping import load_file

        load_file(file)
        return "mapping"
    from engine.patch import load_patch

    load_patch(file)
    return "patch"


def _report(file: Path, load: Callable[[Path], str]) -> bool:
    """Run one loader and print `ok: FILE (kind)` or `error: …` naming file, key and reason."""
    try:
        kind = load(file)
    except BacklineError as err:
        print(f"error: {err}", file=sys.stderr)
        return False
    print(f"ok: {file} ({kind})")
    return True


def check(paths: list[Path], *, config: Path | None) -> int:
    """Check the config (then what it names) and `paths`; returns the exit status (1 on any error)."""
    files: list[Path] = []
    ok = True
    if config is not None:
        from engine.service.config import load_config

        def load(file: Path) -> str:
            conf = load_config(file)
            if conf.generator == "remote":  # the server is not asked: only what the stage box holds
                from engine.errors import GeneratorError
                from engine.generator import remote_settings

                try:
                    remote_settings(**{k: v for k, v in conf.generator_options.items() if k != "frames_per_call"})
                except GeneratorError as err:
                    raise BacklineError(f"{file}: generator.options: {err}") from None
            files.extend([conf.patch, *conf.mappings, *([conf.patches] if conf.patches else [])])
            files.extend([conf.learn_file] if conf.learn_file.exists() else [])
            return "config"

        ok = _report(config, load)
    seen: set[Path] = set()
    for file in _yaml_files([*files, *paths]):
        if file.resolve() not in seen:
            seen.add(file.resolve())
            ok = _report(file, _check_one) and ok
    if not seen and config is None:
        print("error: nothing to check (give files, folders or --config)", file=sys.stderr)
        return 1
    return 0 if ok else 1
