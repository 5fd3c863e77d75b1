"""The receiver's tick numbering (jack_rx.song_tick_frames), on hand-made frame stamps: the
clock-out tests' truth must survive the cycles JACK skips on this machine."""

from __future__ import annotations

import mido

from jack_rx import FrameStampedInput

PERIOD = 1000  # frames per tick at 120 BPM, 48 kHz


def numbered(frames: list[int], *, start: int = 0) -> dict[int, float]:
    rx = FrameStampedInput.__new__(FrameStampedInput)  # no JACK client: only the stamps matter here
    rx.raw = [(start, mido.Message("start").bytes())] + [(f, mido.Message("clock").bytes()) for f in frames]
    return rx.song_tick_frames(120.0)


def test_a_tick_written_two_cycles_late_keeps_its_number() -> None:
    frames = [0, 1000, 2512, 3000, 4000]  # tick 2 written 512 frames late, just before tick 3
    assert numbered(frames) == {0: 0, 1: 1000, 2: 2512, 3: 3000, 4: 4000}


def test_a_dropped_tick_leaves_a_gap_in_the_numbers() -> None:
    assert numbered([0, 1000, 3000, 4000]) == {0: 0, 1: 1000, 3: 3000, 4: 4000}


def test_a_repeated_tick_is_counted_once() -> None:
    assert numbered([0, 1000, 1000, 2000]) == {0: 0, 1: 1000, 2: 2000}


def test_ticks_lost_right_after_start_are_counted_from_start() -> None:
    """jack_midi_clock sends the first clock one cycle (256 frames) after Start; when JACK skips
    that cycle the first clock to arrive is tick 1 (seen in CI: every bar line 'one tick early')."""
    assert numbered([256, 1256, 2256], start=0) == {0: 256, 1: 1256, 2: 2256}
    assert numbered([1256, 2256], start=0) == {1: 1256, 2: 2256}
    assert numbered([2256, 3256], start=0) == {2: 2256, 3: 3256}
