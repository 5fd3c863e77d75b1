"""The WAV file sink: the same stream the device would play, written to a file."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType

import numpy as np
import soundfile

from engine.errors import OutputError
from engine.units import CHANNELS, SAMPLE_RATE


class FileSink:
    """Writes float32 stereo at 48 kHz; a context manager so the file is always closed."""

    def __init__(self, path: str | Path, *, sample_rate: int = SAMPLE_RATE, channels: int = CHANNELS) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = soundfile.SoundFile(str(self.path), "w", samplerate=sample_rate, channels=channels, subtype="FLOAT")
        except (OSError, RuntimeError, soundfile.LibsndfileError) as err:
            raise OutputError(f"cannot write {self.path}: {err}") from err
        self.frames_written = 0

    def write(self, audio: np.ndarray) -> None:
        self._file.write(audio)
        self.frames_written += len(audio)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> FileSink:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
