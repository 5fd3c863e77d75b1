"""JACK servers for tests that open PortAudio in the test process itself."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from jackserver import JackUnavailable, jack_server

RATE_44K = 44100


@contextmanager
def portaudio_jack(**options: int) -> Iterator[str]:
    """A dummy JACK server that in-process PortAudio may use.

    PortAudio keeps its JACK client (opened when a DeviceSink names it) for the whole
    process: it is shut down before the server goes (or its exit-time clean-up aborts the
    interpreter) and brought back after.
    """
    import sounddevice as sd

    try:
        with jack_server(**options) as name:
            yield name
            sd._terminate()
        sd._initialize()
    except JackUnavailable as err:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"no JACK server here: {err}")


@pytest.fixture(scope="module")
def jack44() -> Iterator[str]:
    """A dummy JACK server at 44.1 kHz."""
    with portaudio_jack(rate=RATE_44K) as name:
        yield name
