"""Tap tempo, internal tempo changes and parsing the clock choice."""

from __future__ import annotations

import logging

import pytest

from engine.clock import TapTempo, health, parse_clock_source, ramp
from engine.clock.source import ClockSource, open_link_source
from engine.timeline import Timeline


def test_tap_tempo_averages_the_last_taps() -> None:
    taps = TapTempo(taps=4)
    assert taps.tap(0.0) is None
    results = [taps.tap(t) for t in (0.5, 1.02, 1.5, 2.0, 2.5)]
    assert results[0] == pytest.approx(120.0)
    assert results[-1] == pytest.approx(60 * 3 / (2.5 - 1.02))  # only the last four taps count


def test_tap_tempo_resets_after_a_gap_and_rejects_out_of_range(caplog: pytest.LogCaptureFixture) -> None:
    taps = TapTempo(taps=4, reset_after=1.5)
    taps.tap(0.0)
    taps.tap(0.5)
    assert taps.tap(5.0) is None  # a new series
    assert taps.tap(5.4) == pytest.approx(150.0)
    caplog.set_level(logging.WARNING)
    fast = TapTempo()
    fast.tap(0.0)
    assert fast.tap(0.1) is None  # 600 BPM
    assert "outside" in caplog.text
    with pytest.raises(ValueError, match="taps must be in"):
        TapTempo(taps=1)


def test_ramps_step_per_bar() -> None:
    timeline = Timeline.start(120)
    ramped = ramp(timeline, to_bpm=140.0, from_bar=4, bars=4)
    assert [float(ramped.tempo_at(ramped.bar_start(b))) for b in range(3, 10)] == [120, 125, 130, 135, 140, 140, 140]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("internal", ClockSource("internal")), ("link", ClockSource("link")),
     ("midi:Drums:clock 1", ClockSource("midi", "Drums:clock 1")), (" midi: TR-8 ", ClockSource("midi", "TR-8"))],
)
def test_clock_choice_parses(text: str, expected: ClockSource) -> None:
    assert parse_clock_source(text) == expected
    assert parse_clock_source(str(expected)) == expected


@pytest.mark.parametrize("text", ["", "midi:", "mtc", "Link ", 5])
def test_bad_clock_choice_is_a_clear_error(text: object) -> None:
    with pytest.raises(ValueError, match="clock"):
        parse_clock_source(text)  # type: ignore[arg-type]


def test_link_is_opened_only_when_asked() -> None:
    assert open_link_source(ClockSource("internal"), bpm=120, beats_per_bar=4) is None
    assert open_link_source(ClockSource("midi", "x"), bpm=120, beats_per_bar=4) is None
    assert health(ClockSource("internal"), None) == {"source": "internal", "state": "waiting",
                                                      "tempo_bpm": None, "last_clock_age": None}


def test_missing_link_binding_is_reported_and_the_engine_goes_on(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The binding is installed here, so its absence is simulated by hiding the module."""
    import sys

    monkeypatch.setitem(sys.modules, "link", None)  # makes `import link` raise ImportError
    caplog.set_level(logging.ERROR)
    assert open_link_source(ClockSource("link"), bpm=120, beats_per_bar=4) is None
    assert "Ableton Link is not available" in caplog.text and "internal clock" in caplog.text
