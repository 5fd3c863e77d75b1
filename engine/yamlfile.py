"""Reading the human-written YAML files (patches, automation, config) with errors that
name the file, the line and column, and the key path."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from engine.errors import ConfigFileError


def read_yaml(file: Path, error: type[ConfigFileError]) -> Any:
    """Parse `file`; an unreadable file or bad YAML raises `error` naming where."""
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as err:
        raise error(file, "<file>", f"cannot read: {err.strerror or err}") from err
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "<file>"
        raise error(file, where, f"invalid YAML: {getattr(err, 'problem', err)}") from err


def key_path(parts: Iterable[Any]) -> str:
    """A jsonschema error path as `style[1].weight`."""
    path = ""
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path
