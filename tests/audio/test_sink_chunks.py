"""The sink's fill works in chunks NumPy keeps the GIL for (see CALLBACK_CHUNK_FRAMES); the
chunking must be invisible in the samples: no sample lost or repeated at a chunk edge, and a
stop's fade runs on across chunks. Plain Sink base, no device: the fill is the callback's body."""

from __future__ import annotations

import numpy as np
import pytest

from engine.audio.ring import PlaybackRing
from engine.audio.sinks import CALLBACK_CHUNK_FRAMES, Sink
from engine.units import CHANNELS


class BareSink(Sink):
    """The shared fill path of every live sink, driven by hand."""

    def start(self) -> None:
        self.armed = True

    def close(self) -> None:
        pass


def noise_ring(frames: int) -> tuple[PlaybackRing, np.ndarray]:
    audio = np.random.default_rng(7).uniform(-1, 1, (frames, CHANNELS)).astype(np.float32)
    ring = PlaybackRing(capacity=1 << 17)
    ring.reset(0)
    ring.publish_bar(0)
    ring.publish_bar(frames)
    ring.write(0, audio)
    return ring, audio


@pytest.mark.parametrize("block", [CALLBACK_CHUNK_FRAMES - 1, CALLBACK_CHUNK_FRAMES, 256, 1024, 4096])
def test_blocks_larger_than_a_chunk_play_the_exact_stream(block: int) -> None:
    ring, audio = noise_ring(6 * 4096)
    sink = BareSink(ring, blocksize=block)
    sink.start()
    out = np.zeros((5 * 4096 // block * block, CHANNELS), dtype=np.float32)
    for start in range(0, len(out), block):
        sink._fill(out[start : start + block])
    assert np.array_equal(out, audio[: len(out)])
    assert sink.playhead == len(out)
    assert sink.callbacks == len(out) // block


def test_a_block_before_start_is_silent_and_does_not_move_the_playhead() -> None:
    ring, _ = noise_ring(4096)
    sink = BareSink(ring, blocksize=1024)
    out = np.ones((1024, CHANNELS), dtype=np.float32)
    sink._fill(out)
    assert not out.any() and sink.playhead == 0 and sink.callbacks == 0


def test_a_stop_fades_smoothly_across_chunks_then_stays_silent() -> None:
    ring, audio = noise_ring(8 * 1024)
    sink = BareSink(ring, blocksize=1024, fade_s=0.01, rate=48_000)  # 480-sample fade: spans two chunks
    sink.start()
    out = np.zeros((4 * 1024, CHANNELS), dtype=np.float32)
    sink._fill(out[:1024])
    sink.fade_out()
    for start in range(1024, len(out), 1024):
        sink._fill(out[start : start + 1024])
    gain = out[1024:1504] / audio[1024:1504]
    assert np.allclose(gain, np.linspace(1.0, 0.0, 480, dtype=np.float32)[:, None], atol=1e-5)
    assert not out[1504:].any()
    assert sink.finished.is_set()
