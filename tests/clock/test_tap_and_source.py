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


def test_taps_stamped_alike_are_one_tap() -> None:
    """Two taps at one sample (two pads struck together; an input that drained a burst at once)
    divided by zero, and the error ended that drain: the events after it were lost."""
    taps = TapTempo(taps=4)
    assert taps.tap(1.0) is None
    assert taps.tap(1.0) is None
    assert taps.tap(1.02) is None  # a bounce of the same switch
    assert taps.tap(1.5) == pytest.approx(120.0)


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


@pytest.mark.parametrize("ramp_bars", [0, 4])
def test_tempo_bpm_glides_over_tempo_ramp_bars_in_bar_steps(tmp_path, ramp_bars: int) -> None:  # type: ignore[no-untyped-def]
    """Rendered bar lines: 120 BPM, then tempo.bpm 140 issued in bar 2 lands at bar 3, jumping
    (ramp_bars 0) or a step per bar over 4 bars (125, 130, 135, 140)."""
    from fractions import Fraction

    from engine.automation import TimedEvent
    from engine.generator.synth import SynthGenerator
    from engine.params import ControlEvent
    from engine.patch import parse_patch
    from engine.render import render

    patch = parse_patch({"tempo": 120.0, "meter": 4, "seed": 1, "style": [{"text": "test groove"}]})
    events = [TimedEvent(0, Fraction(0), ControlEvent("tempo.ramp_bars", ramp_bars, quantize="now")),
              TimedEvent(2, Fraction(1), ControlEvent("tempo.bpm", 140.0))]
    result = render(patch, bars=9, output=tmp_path / "ramp.wav", generator=SynthGenerator(), automation=events)
    lengths = [b - a for a, b in zip(result.bar_starts, result.bar_starts[1:])]
    tempos = [4 * 60 * 48_000 / n for n in lengths]  # from whole-sample bar lengths: within 0.002 BPM
    steps = [125.0, 130.0, 135.0, 140.0] if ramp_bars else [140.0] * 4
    expected = [120.0, 120.0, 120.0, *steps] + [140.0] * (len(tempos) - 7)
    assert tempos == pytest.approx(expected, abs=0.002)
