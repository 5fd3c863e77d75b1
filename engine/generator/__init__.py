"""Generators by name: `synth` (built in), `magenta` (magenta-rt, imported lazily) and
`remote` (a `backline generator-server` across the network: `remote.py`).

`create_generator(name, process=True, ...)` runs the generator in a spawned child process
(see `process.py`): the engine gets audio, or GeneratorUnavailable at once while the
child loads, compiles or restarts, and plays its fallback meanwhile.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path
from typing import Any, Literal

from engine.errors import GeneratorError
from engine.generator.base import Generator

GeneratorName = Literal["synth", "magenta", "remote"]
GENERATOR_NAMES: tuple[str, ...] = ("synth", "magenta", "remote")
OnMissingAssets = Literal["refuse", "synth"]
# What a child process builds, as "module:callable" (it imports the module itself).
FACTORIES = {
    "synth": "engine.generator.synth:SynthGenerator",
    "magenta": "engine.generator.magenta.generator:MagentaGenerator",
}

log = logging.getLogger(__name__)

__all__ = ["FACTORIES", "GENERATOR_NAMES", "Generator", "GeneratorName", "OnMissingAssets", "create_generator"]


def create_generator(
    name: str,
    *,
    process: bool = False,
    on_missing_assets: OnMissingAssets = "refuse",
    deadline_s: float = 2.0,
    restart_backoff_s: float = 0.5,
    **options: Any,
) -> Generator:
    """Build a generator by name; backends are imported only when chosen.

    `options` go to the generator's constructor. `process` runs it in its own child
    (`deadline_s`: longest wait for one answer before the child counts as hung). For
    `magenta`, weights and MusicCoCa files are checked here, before any child starts: a
    missing or corrupt file raises GeneratorError naming the file and the command that
    fetches it (`on_missing_assets="refuse"`), or logs that error loudly and returns the
    `synth` generator instead (`on_missing_assets="synth"`).
    """
    if name == "remote":  # already out of process: on the server, in a child of its own there
        return _remote(deadline_s=deadline_s, **options)
    if name not in FACTORIES:
        raise GeneratorError(f"unknown generator {name!r}; choose one of {', '.join(GENERATOR_NAMES)}")
    if on_missing_assets not in ("refuse", "synth"):
        raise GeneratorError(f"on_missing_assets must be 'refuse' or 'synth', got {on_missing_assets!r}")
    if name == "magenta":
        try:
            check_magenta(options)
        except GeneratorError as err:
            if on_missing_assets == "refuse":
                raise
            log.error("MAGENTA CANNOT START, PLAYING THE SYNTH INSTEAD (on_missing_assets: synth): %s", err)
            name, options = "synth", {}
    if process:
        from engine.generator.process import ProcessGenerator

        generator = ProcessGenerator(FACTORIES[name], options, name=name, seed=options.get("seed", 0),
                                     deadline_s=deadline_s, restart_backoff_s=restart_backoff_s)
        if name == "magenta":  # without importing JAX here
            from engine.generator.magenta import AUDIO_LEAD

            generator.audio_lead = AUDIO_LEAD
        return generator
    if name == "synth":
        from engine.generator.synth import SynthGenerator

        return SynthGenerator(**options)
    from engine.generator.magenta.generator import MagentaGenerator

    return MagentaGenerator(**options)


def remote_settings(*, url: str | None = None, token_file: str | None = None, pcm: str = "f32", ca: str | None = None,
                    **unknown: Any) -> tuple[str, str | None, str, Path | None]:
    """(url, token, pcm, ca) for a remote generator, checked without connecting (`backline
    check` too): the URL's scheme, the token from `token_file`, else $BACKLINE_GENERATOR_TOKEN."""
    if unknown:
        raise GeneratorError(f"the remote generator takes url, token_file, pcm and ca, not {', '.join(sorted(unknown))}")
    if not url:
        raise GeneratorError("the remote generator needs a server: --remote ws://HOST:PORT (config: options: {url: ...})")
    if not str(url).startswith(("ws://", "wss://")):
        raise GeneratorError(f"remote generator URL must start with ws:// or wss://, got {url!r}")
    if pcm not in ("f32", "i16"):
        raise GeneratorError(f"remote PCM must be f32 or i16, got {pcm!r}")
    if ca is not None and not Path(ca).is_file():
        raise GeneratorError(f"the CA file {ca} does not exist")
    return str(url), token_from(Path(token_file) if token_file else None), pcm, Path(ca) if ca else None


def _remote(*, seed: int = 0, deadline_s: float = 2.0, **options: Any) -> Generator:
    from engine.generator.remote import RemoteGenerator

    url, token, pcm, ca = remote_settings(**options)  # the token file must be readable at start
    token_file = Path(options["token_file"]) if options.get("token_file") else None  # and is read again at each retry
    return RemoteGenerator(url, token=token, token_file=token_file, pcm=pcm, seed=seed, deadline_s=deadline_s, ca=ca)


def token_from(token_file: Path | None) -> str | None:
    """The generator server's token: the file's when one is given, else $BACKLINE_GENERATOR_TOKEN
    (unset or empty: none). The one place the server, its clients and `backline status` take it."""
    if token_file is not None:
        return read_token(token_file)
    return os.environ.get("BACKLINE_GENERATOR_TOKEN") or None


def read_token(path: Path) -> str:
    """A token file's first line; GeneratorError naming the file when it cannot be read or is empty."""
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError as err:
        raise GeneratorError(f"cannot read the token file {path}: {err.strerror}") from err
    if not token:
        raise GeneratorError(f"the token file {path} is empty")
    return token


def check_magenta(options: dict[str, Any]) -> None:
    """magenta-rt importable and the assets the options point at usable; without importing JAX."""
    if importlib.util.find_spec("magenta_rt") is None:
        raise GeneratorError("the magenta generator needs magenta-rt: pip install 'backline[magenta]'")
    from engine.generator.magenta import assets

    assets.require_magenta(
        checkpoint=options.get("checkpoint"),
        size=options.get("size", "mrt2_small"),
        magenta_home=options.get("magenta_home"),
        musiccoca=options.get("style_model", "musiccoca") == "musiccoca",
    )
