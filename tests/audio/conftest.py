"""Extra JACK servers for the output tests: one at 44.1 kHz, one with a tiny port table."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from jackserver import portaudio_fixture as _server


@pytest.fixture(scope="module")
def jack44() -> Iterator[str]:
    """A dummy JACK server at 44.1 kHz; PortAudio may be opened in the test process."""
    yield from _server(rate=44100)


@pytest.fixture()
def jack_few_ports() -> Iterator[str]:
    """A dummy JACK server with room for 8 ports (jackd --port-max 8)."""
    yield from _server(port_max=8)


@pytest.fixture(scope="module")
def jack48() -> Iterator[str]:
    """A dummy JACK server at 48 kHz, 256 frames; PortAudio may be opened in the test process."""
    yield from _server()


@pytest.fixture(scope="module")
def jack1024() -> Iterator[str]:
    """A dummy JACK server at 48 kHz with 1,024-frame periods; PortAudio may be opened in the test process."""
    yield from _server(period=1024)
