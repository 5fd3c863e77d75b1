"""Generators by name: `synth` (built in) and `magenta` (magenta-rt, imported lazily)."""

from __future__ import annotations

from typing import Any, Literal

from engine.errors import GeneratorError
from engine.generator.base import Generator

GeneratorName = Literal["synth", "magenta"]
GENERATOR_NAMES: tuple[str, ...] = ("synth", "magenta")

__all__ = ["GENERATOR_NAMES", "Generator", "GeneratorName", "create_generator"]


def create_generator(name: str, **options: Any) -> Generator:
    """Build a generator by name; backends are imported only when chosen."""
    if name == "synth":
        from engine.generator.synth import SynthGenerator

        return SynthGenerator(**options)
    if name == "magenta":
        try:
            from engine.generator.magenta.generator import MagentaGenerator
        except ImportError as err:
            raise GeneratorError(
                f"the magenta generator needs magenta-rt: pip install 'backline[magenta]' ({err})"
            ) from err
        return MagentaGenerator(**options)
    raise GeneratorError(f"unknown generator {name!r}; choose one of {', '.join(GENERATOR_NAMES)}")
