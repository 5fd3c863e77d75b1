"""One root error for the engine, with subclasses that carry where things went wrong."""

from __future__ import annotations

from pathlib import Path


class BacklineError(Exception):
    """Root of every error the engine raises on purpose."""


class ConfigFileError(BacklineError):
    """A human-written YAML file (patch, mapping, config, automation) is wrong.

    Carries the file, the key path inside it and what was expected, so the message a
    musician reads names exactly what to fix.
    """

    kind = "file"

    def __init__(self, file: str | Path | None, key_path: str, problem: str) -> None:
        self.file = str(file) if file is not None else "<memory>"
        self.key_path = key_path or "<top>"
        self.problem = problem
        super().__init__(f"{self.kind} {self.file}: at {self.key_path}: {problem}")


class PatchError(ConfigFileError):
    kind = "patch"


class AutomationError(ConfigFileError):
    kind = "automation"


class GeneratorError(BacklineError):
    """The generator could not be built, loaded or run."""


class GeneratorUnavailable(GeneratorError):
    """No audio now: the generator's process is starting, loading, restarting or hung.

    Raised at once (never after a long wait, except the configured hang deadline), so the
    scheduler can cover the gap with its underrun policy or a fallback generator.
    """


class OutputError(BacklineError):
    """The audio output could not be opened or configured."""


class PatchRefused(BacklineError):
    """A control asked for a patch the set does not hold, or named a path (never taken from a surface)."""
