"""A JACK period of several blocks: PortAudio then runs the callback once per block, back to back
at the start of each cycle, so the whole period is taken at once. A rollback's splice must stay
a period, not a block, past the playhead, and the feeder must never rewrite inside it."""

from __future__ import annotations

import pytest

pytest.importorskip("jack", reason="JACK-Client is in the test extra")

from engine.audio.ring import PlaybackRing  # noqa: E402
from engine.audio.sinks import DeviceSink, OutputSpec  # noqa: E402


def test_a_period_of_four_blocks_is_what_the_sink_may_have_committed(jack1024) -> None:
    sink = DeviceSink(PlaybackRing(capacity=1 << 16), OutputSpec("jack", blocksize=256, autoconnect=False))
    try:
        assert sink.read_ahead == 1024  # what the engine sizes rollback's splice margin on
        assert sink.feeder.in_flight == 1024  # what the feeder never rewrites past the playhead
    finally:
        sink.close()


def test_a_period_of_one_block_commits_one_block(jack48) -> None:
    sink = DeviceSink(PlaybackRing(capacity=1 << 16), OutputSpec("jack", blocksize=256, autoconnect=False))
    try:
        assert sink.read_ahead == 256 and sink.feeder.in_flight == 256
    finally:
        sink.close()
