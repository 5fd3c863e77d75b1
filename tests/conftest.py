"""Shared fixtures: a real JACK server per test module that asks for one."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

import engine  # noqa: F401  (first: it loads the system libjack before anything imports rtmidi)

sys.path.insert(0, str(Path(__file__).parent))
from jackserver import JackUnavailable, jack_server  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def jack() -> str:
    """A running JACK server (dummy driver, 48 kHz, 256 frames); yields its name.

    On CI the server must start: a failure there is an error, not a skip.
    """
    try:
        with jack_server() as name:
            yield name
    except JackUnavailable as err:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"no JACK server here: {err}")
