"""The C callback's frame lock (`bl_place`, engine/audio/rtout.c) and FrameTimebase against frame
sequences as JACK delivers them on an overrun box."""

from __future__ import annotations

import pytest

from engine.audio.rtout import OutputRing
from engine.clock.jack_in import FrameTimebase


class FrameLock:
    """The C frame lock of a fresh output ring, with its counters."""

    def __init__(self) -> None:
        self.ring = OutputRing(1 << 10, 2, fade_frames=1)

    def place(self, frame: int, frames: int, playhead: int) -> int:
        return self.ring.place(frame, frames, playhead)

    @property
    def origin(self) -> int | None:
        return self.ring.origin

    @property
    def skipped(self) -> int:
        return self.ring.skipped


def blocks(lock: FrameLock, frames: list[int], size: int) -> list[int]:
    """Playhead at the start of each block, as the callback computes it."""
    playhead, starts = 0, []
    for frame in frames:
        start = lock.place(frame, size, playhead)
        starts.append(start)
        playhead = start + size
    return starts


def test_steady_cycles_count_like_a_callback_counter() -> None:
    lock = FrameLock()
    assert blocks(lock, [5000 + 256 * k for k in range(5)], 256) == [0, 256, 512, 768, 1024]
    assert lock.origin == 5000 and lock.skipped == 0


def test_skipped_cycles_skip_audio_and_a_repeated_cycle_repeats_it() -> None:
    """JACK skipped cycle 2 and ran cycle 5 twice: the playhead stays frame - origin."""
    lock = FrameLock()
    frames = [1000, 1256, 2024, 2280, 2280, 2536]
    assert blocks(lock, frames, 256) == [0, 256, 1024, 1280, 1536, 1536]
    assert lock.skipped == 512


def test_each_skip_is_logged_at_its_jack_frames_the_newest_sixteen_kept() -> None:
    """The status's `skips`: where JACK's frames moved on without a block from the engine, in
    JACK frames, so a silence in a recording can be matched to the cycles it was not run."""
    lock = FrameLock()
    blocks(lock, [1000, 1256, 2024, 2280, 2280, 2536], 256)
    assert lock.ring.skips == [(1512, 512)]  # the cycle at 1512 and the one at 1768 never came
    frames, frame = [], 0xFFFFFFFF - 5000  # across the 32-bit wrap of JACK's frame counter
    for k in range(40):
        frames.append(frame & 0xFFFFFFFF)
        frame += 256 * (2 if k % 2 else 1)
    lock = FrameLock()
    blocks(lock, frames, 256)
    skips = lock.ring.skips
    assert len(skips) == 16 and all(n == 256 for _, n in skips)
    assert [f for f, _ in skips] == [(frames[k] + 256) & 0xFFFFFFFF for k in range(1, 39, 2)][-16:]


@pytest.mark.parametrize(("period", "size"), [(1024, 256), (128, 256)])
def test_blocks_and_periods_of_different_sizes(period: int, size: int) -> None:
    lock = FrameLock()
    if period > size:  # four blocks per cycle, all with the cycle's frame
        frames = [f for c in range(3) for f in [7 + c * period] * (period // size)]
    else:  # one block every other cycle
        frames = [7 + c * size for c in range(6)]
    assert blocks(lock, frames, size) == [k * size for k in range(len(frames))]
    assert lock.skipped == 0


def test_jack_frame_counter_wraps_after_2_to_32_frames() -> None:
    lock = FrameLock()
    first = (1 << 32) - 512
    frames = [(first + 256 * k) % (1 << 32) for k in range(4)]
    assert blocks(lock, frames, 256) == [0, 256, 512, 768]
    base = FrameTimebase(origin=first, rate=48_000, frame_time=lambda: frames[-1])
    assert base.frames(frames[3] + 100) == 768 + 100
    assert base.frames(frames[1]) == 256  # an older stamp, before the wrap
    assert base.now() == pytest.approx(768 / 48_000)
