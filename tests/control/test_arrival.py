"""Stamps for JACK MIDI drained late (engine/control/arrival.py), from rtmidi's (bytes, delta) pairs."""

from __future__ import annotations

from engine.control.arrival import Arrivals

NOTE_ON, NOTE_OFF, CLOCK = [0x90, 60, 100], [0x80, 60, 0], [0xF8]


def test_a_burst_drained_late_keeps_its_spacing_and_ends_no_later_than_now() -> None:
    got = Arrivals().stamp([(NOTE_ON, 0.0), (NOTE_OFF, 0.010), (NOTE_ON, 0.5)], now=96_000)
    assert [at for _, at in got] == [96_000 - 24_480, 96_000 - 24_000, 96_000]


def test_clock_ticks_between_messages_keep_their_time_and_are_dropped() -> None:
    """rtmidi counts each delta from the message before, clock ticks included."""
    arrivals = Arrivals()
    assert arrivals.stamp([(NOTE_ON, 0.0)], now=10_000) == [(NOTE_ON, 10_000)]
    ticks = [(CLOCK, 0.02)] * 10 + [(NOTE_OFF, 0.01)]  # 210 ms after the note-on
    assert arrivals.stamp(ticks, now=30_000) == [(NOTE_OFF, 10_000 + 10_080)]


def test_a_message_drained_in_time_is_chained_to_the_one_before_not_to_a_late_drain() -> None:
    arrivals = Arrivals()
    arrivals.stamp([(NOTE_ON, 0.0)], now=10_000)
    assert arrivals.stamp([(NOTE_OFF, 0.010)], now=13_000) == [(NOTE_OFF, 10_480)]  # drained 52 ms late
    assert arrivals.stamp([(NOTE_ON, 2.0)], now=200_000) == [(NOTE_ON, 200_000)]  # too long to chain: now


def test_stamps_never_go_back() -> None:
    arrivals = Arrivals()
    arrivals.stamp([(NOTE_ON, 0.0)], now=10_000)
    assert arrivals.stamp([(NOTE_OFF, 0.010), (NOTE_ON, 0.5)], now=11_000) == [(NOTE_OFF, 10_000), (NOTE_ON, 11_000)]
