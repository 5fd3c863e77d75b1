"""Where MRT2's weights and MusicCoCa files live, and whether they are usable.

Layout (magenta-rt's own): `$MAGENTA_HOME/magenta-rt-v2/` with `checkpoints/<size>.safetensors`
and `resources/musiccoca/*`. `$MAGENTA_HOME` defaults to `~/Documents/Magenta`. Config may
name a checkpoint file or a MusicCoCa folder directly. Needs no JAX, so `backline models
status` works where magenta-rt is not installed.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from engine.errors import GeneratorError

ReleasedSize = Literal["mrt2_small", "mrt2_base"]
RELEASED_SIZES: tuple[ReleasedSize, ...] = ("mrt2_small", "mrt2_base")
MUSICCOCA_FILES = (
    "spm.model",
    "text_encoder.tflite",
    "pretrained_vector_quantizer.tflite",
    "audio_preprocessor.tflite",
    "music_encoder.tflite",
)
_MAX_HEADER = 100_000_000  # safetensors' own limit on the JSON header


def magenta_root(home: str | Path | None = None) -> Path:
    """`<home>/magenta-rt-v2`, home being the argument, $MAGENTA_HOME or ~/Documents/Magenta."""
    base = Path(home) if home is not None else Path(os.environ.get("MAGENTA_HOME", Path.home() / "Documents" / "Magenta"))
    return base / "magenta-rt-v2"


def checkpoint_path(size: ReleasedSize, *, home: str | Path | None = None) -> Path:
    return magenta_root(home) / "checkpoints" / f"{size}.safetensors"


def musiccoca_dir(*, home: str | Path | None = None) -> Path:
    return magenta_root(home) / "resources" / "musiccoca"


# The command that fetches each asset (every fetch also runs `mrt models init` for MusicCoCa).
FETCH_COMMAND = {
    "mrt2_small": "backline models fetch small",
    "mrt2_base": "backline models fetch base",
    "musiccoca": "backline models fetch small",
}


@dataclass(frozen=True, slots=True)
class AssetStatus:
    """One file: where it should be, whether it is usable, and why not."""

    name: str
    path: Path
    size: int | None
    problem: str | None
    sha256: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


def safetensors_header(path: Path) -> tuple[dict, int]:
    """The JSON header of a safetensors file and where its data starts; GeneratorError if it is not one."""
    try:
        with path.open("rb") as fh:
            raw = fh.read(8)
            if len(raw) < 8:
                raise GeneratorError(f"{path}: not a safetensors file (shorter than 8 bytes)")
            (length,) = struct.unpack("<Q", raw)
            if length > _MAX_HEADER or length > path.stat().st_size - 8:
                raise GeneratorError(f"{path}: not a safetensors file (header length {length} is impossible)")
            header = json.loads(fh.read(length))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise GeneratorError(f"{path}: unreadable safetensors header: {err}") from err
    if not isinstance(header, dict):
        raise GeneratorError(f"{path}: safetensors header is not a JSON object")
    return header, 8 + length


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_file(name: str, path: Path, *, safetensors: bool = False, checksum: bool = False) -> AssetStatus:
    """Status of one asset file: present, non-empty, header readable, optional sha256."""
    if not path.is_file():
        return AssetStatus(name, path, None, "missing")
    size = path.stat().st_size
    if size == 0:
        return AssetStatus(name, path, size, "empty")
    if safetensors:
        try:
            header, data_start = safetensors_header(path)
        except GeneratorError as err:
            return AssetStatus(name, path, size, str(err))
        end = data_start + max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        if size < end:
            return AssetStatus(name, path, size, f"truncated: {size} bytes, its header needs {end}")
    return AssetStatus(name, path, size, None, _sha256(path) if checksum else None)


def status(*, home: str | Path | None = None, checksum: bool = False) -> list[AssetStatus]:
    """Every asset `backline models status` reports."""
    rows = [check_file(size, checkpoint_path(size, home=home), safetensors=True, checksum=checksum) for size in RELEASED_SIZES]
    folder = musiccoca_dir(home=home)
    rows += [check_file(f"musiccoca/{f}", folder / f, checksum=checksum) for f in MUSICCOCA_FILES]
    return rows


def require_checkpoint(path: Path, *, fetch: str = FETCH_COMMAND["mrt2_small"]) -> Path:
    """`path` if usable, else a GeneratorError naming the file and the command that fetches it."""
    row = check_file(path.name, path, safetensors=True)
    if not row.ok:
        raise GeneratorError(f"MRT2 checkpoint {path}: {row.problem}. Fetch it with `{fetch}` (or make random weights with `backline models make-random --size tiny -o DIR`).")
    return path


def require_musiccoca(folder: Path) -> Path:
    """`folder` if every MusicCoCa file is there, else a GeneratorError naming the first missing one."""
    for f in MUSICCOCA_FILES:
        row = check_file(f, folder / f)
        if not row.ok:
            raise GeneratorError(f"MusicCoCa file {row.path}: {row.problem}. Fetch it with `{FETCH_COMMAND['musiccoca']}`.")
    return folder


def require_magenta(
    *, checkpoint: str | Path | None = None, size: ReleasedSize = "mrt2_small", magenta_home: str | Path | None = None,
    musiccoca: bool = True,
) -> Path:
    """The checkpoint the magenta generator loads (and MusicCoCa's files when it uses them), checked.

    Needs no JAX, so the engine can check before it spawns a child that would fail to load.
    """
    path = Path(checkpoint) if checkpoint else checkpoint_path(size, home=magenta_home)
    require_checkpoint(path, fetch=FETCH_COMMAND.get(path.stem, FETCH_COMMAND["mrt2_small"]))
    if musiccoca:
        require_musiccoca(musiccoca_dir(home=magenta_home))
    return path
