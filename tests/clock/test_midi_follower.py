"""The MIDI clock follower against synthetic streams whose true beat times are known."""

from __future__ import annotations

import logging

import mido
import numpy as np
import pytest

from engine.clock import FollowerConfig, MidiClockFollower
from bench.clock_bench import JITTER_MODELS, USB_RAMPS, against_reference, ramp_errors
from engine.clock.synthetic import ClockStream, clock_stream, jump, ramp
from jack_rx import unforeseeable_ms


def feed_all(stream: ClockStream, follower: MidiClockFollower | None = None) -> MidiClockFollower:
    follower = follower or MidiClockFollower()
    for t, msg in stream.events:
        follower.feed(msg, t)
    return follower


def next_beat_errors(stream: ClockStream, *, from_beat: int, every: int = 1, ahead: int = 1) -> list[float]:
    """At each whole beat as it arrives, predict beat + `ahead` and compare with the truth (s)."""
    follower = MidiClockFollower()
    errors = []
    clocks = 0
    for t, msg in stream.events:
        follower.feed(msg, t)
        if msg.type != "clock":
            continue
        tick = clocks
        clocks += 1
        beat, sub = divmod(tick, 24)
        if sub == 0 and beat >= from_beat and beat % every == 0 and (beat + ahead) * 24 < len(stream.tick_times):
            est = follower.estimate(t)
            assert est is not None and est.state == "running"
            errors.append(est.beat_time(beat + ahead) - stream.beat_time(beat + ahead))
    return errors


@pytest.mark.parametrize("bpm", [72.0, 120.0, 133.0, 174.0])
def test_steady_tempo_within_a_tenth_of_a_bpm_after_two_beats(bpm: float) -> None:
    stream = clock_stream(bpm=bpm, ticks=2 * 24)
    follower = feed_all(stream)
    est = follower.estimate(stream.events[-1][0])
    assert est is not None
    assert abs(est.tempo_bpm - bpm) < 0.1
    assert abs(est.beat_time(4) - stream.tick_times[0] - 4 * 60 / bpm) < 1e-4


@pytest.mark.parametrize("seed", range(5))
def test_bar_line_phase_under_2ms_jitter_stays_within_5ms(seed: int) -> None:
    stream = clock_stream(bpm=133.0, ticks=24 * 64, jitter=0.002, seed=seed)
    errors = next_beat_errors(stream, from_beat=2, every=4, ahead=4)
    assert len(errors) >= 14
    assert max(abs(e) for e in errors) < 0.005
    est = feed_all(stream).estimate(stream.events[-1][0])
    assert est is not None and abs(est.tempo_bpm - 133.0) < 0.1


def test_tempo_ramp_is_followed() -> None:
    tempo = ramp(110.0, 140.0, over_ticks=24 * 32, after=24 * 8)
    stream = clock_stream(bpm=tempo, ticks=24 * 56, jitter=0.001, seed=7)
    errors = np.abs(next_beat_errors(stream, from_beat=4))
    # The next beat is predicted half a second ahead on a line, so an accelerating tempo is
    # a little late; the worst case is the ramp's first bar, before its curvature is clear.
    assert np.median(errors) < 0.003
    assert errors.max() < 0.010
    est = feed_all(stream).estimate(stream.events[-1][0])
    assert est is not None and abs(est.tempo_bpm - 140.0) < 0.2


@pytest.mark.parametrize("after", [90.0, 150.0])
def test_sudden_tempo_jump_is_followed_within_a_beat(after: float) -> None:
    stream = clock_stream(bpm=jump(120.0, after, at=24 * 16), ticks=24 * 32, jitter=0.001, seed=3)
    follower = MidiClockFollower()
    clocks = 0
    for t, msg in stream.events:
        follower.feed(msg, t)
        clocks += msg.type == "clock"
        if clocks == 24 * 17 + 1:  # one beat after the jump
            est = follower.estimate(t)
            assert est is not None
            assert abs(est.tempo_bpm - after) < 1.0
            assert abs(est.beat_time(18) - stream.beat_time(18)) < 0.005
    assert follower.counters["jumps"] >= 1
    est = follower.estimate(stream.events[-1][0])
    assert est is not None and abs(est.tempo_bpm - after) < 0.1


def test_a_single_late_clock_is_rejected_as_jitter() -> None:
    stream = clock_stream(bpm=120.0, ticks=24 * 8)
    events = list(stream.events)
    index = next(i for i, (_, m) in enumerate(events) if m.type == "clock" and i > 24 * 6)
    events[index] = (events[index][0] + 0.008, events[index][1])
    follower = feed_all(ClockStream(events, stream.tick_times))
    est = follower.estimate(events[-1][0])
    assert est is not None
    assert follower.counters["rejected"] == 1
    assert abs(est.tempo_bpm - 120.0) < 0.01
    assert abs(est.beat_time(8) - stream.beat_time(7) - 0.5) < 1e-4


def test_start_makes_the_first_clock_after_it_beat_zero() -> None:
    stream = clock_stream(bpm=100.0, ticks=24 * 8 + 1, preroll_ticks=30)
    follower = MidiClockFollower()
    start_index = next(i for i, (_, m) in enumerate(stream.events) if m.type == "start")
    for t, msg in stream.events[:start_index]:
        follower.feed(msg, t)
    before = follower.estimate(stream.events[start_index - 1][0])
    assert before is not None and before.state == "stopped"
    assert abs(before.tempo_bpm - 100.0) < 0.01  # tempo is known from the pre-roll already
    for t, msg in stream.events[start_index:]:
        follower.feed(msg, t)
    est = follower.estimate(stream.events[-1][0])
    assert est is not None and est.state == "running" and est.epoch == 1
    for beat in (0, 4, 8):  # bar lines 0, 1, 2
        assert abs(est.beat_time(beat) - stream.beat_time(beat)) < 1e-4


def _steady_ticks(t0: float, n: int, period: float) -> list[tuple[float, mido.Message]]:
    return [(t0 + i * period, mido.Message("clock")) for i in range(n)]


def test_stop_and_continue_resume_where_it_stopped() -> None:
    period = 60 / (120 * 24)
    follower = MidiClockFollower()
    events = [(0.0, mido.Message("start"))] + _steady_ticks(0.01, 24 * 6, period)  # beats 0..5
    t = 0.01 + 24 * 6 * period
    events.append((t - period / 2, mido.Message("stop")))
    events += _steady_ticks(t, 24 * 3, period)  # clock keeps running while stopped
    t += 24 * 3 * period
    events.append((t - period / 2, mido.Message("continue")))
    for when, msg in events:
        follower.feed(msg, when)
    stopped = follower.estimate(t - period)
    assert stopped is not None and stopped.state == "stopped"
    follower.feed(mido.Message("clock"), t)
    est = follower.estimate(t)
    assert est is not None and est.state == "running" and est.epoch == 2
    assert abs(est.beat_time(6) - t) < 1e-6  # the next clock after Continue is song beat 6
    assert abs(est.beat_time(8) - (t + 1.0)) < 1e-6  # bar 2 starts two beats later


@pytest.mark.parametrize(("spp", "beat"), [(32, 8), (64, 16), (18, 4.5)])
def test_song_position_pointer_then_continue_lands_on_that_position(spp: int, beat: float) -> None:
    period = 60 / (90 * 24)
    follower = MidiClockFollower()
    for when, msg in _steady_ticks(0.0, 48, period):
        follower.feed(msg, when)
    t = 48 * period
    follower.feed(mido.Message("songpos", pos=spp), t - 0.6 * period)
    follower.feed(mido.Message("continue"), t - 0.3 * period)
    for when, msg in _steady_ticks(t, 24 * 4, period):
        follower.feed(msg, when)
    est = follower.estimate(t + 24 * 4 * period)
    assert est is not None and est.state == "running"
    assert abs(est.beat_time(beat) - t) < 1e-6
    bar_line = (int(beat) // 4 + 1) * 4  # the next bar line of the song's grid
    assert abs(est.beat_time(bar_line) - (t + (bar_line - beat) * 60 / 90)) < 1e-6


def test_a_song_position_pointer_back_to_an_earlier_bar_lands_there() -> None:
    """Playing to bar 10, Stop, a Song Position Pointer back to bar 2 (beat 4), Continue: the
    next clock is beat 4 and the next bar line is one bar later, on the sender's grid."""
    period = 60 / (120 * 24)
    follower = MidiClockFollower()
    follower.feed(mido.Message("start"), -period / 2)
    for when, msg in _steady_ticks(0.0, 24 * 37 + 7, period):  # beat 37 and a bit: bar 10
        follower.feed(msg, when)
    t = (24 * 37 + 7) * period
    follower.feed(mido.Message("stop"), t - 0.5 * period)
    assert follower.estimate(t - 0.5 * period).state == "stopped"
    follower.feed(mido.Message("songpos", pos=16), t + 2 * period)  # 16 sixteenths: beat 4
    for when, msg in _steady_ticks(t, 6, period):  # the clock keeps running while stopped
        follower.feed(msg, when)
    t += 6 * period
    follower.feed(mido.Message("continue"), t - 0.3 * period)
    for when, msg in _steady_ticks(t, 24 * 5, period):
        follower.feed(msg, when)
    est = follower.estimate(t + 24 * 5 * period)
    assert est is not None and est.state == "running" and est.epoch == 2
    assert abs(est.beat_time(4) - t) < 1e-6
    assert abs(est.beat_time(8) - (t + 4 * 0.5)) < 1e-6  # bar 3's line: 4 beats at 120 BPM later
    assert abs(est.ref_tick - (4 * 24 + 24 * 5 - 1)) < 1e-9


def test_dropout_coasts_then_holds_then_recovers() -> None:
    config = FollowerConfig(grace=0.5)
    stream = clock_stream(bpm=120.0, ticks=24 * 16, dropout=(24 * 4, 24 * 7), jitter=0.001, seed=2)
    follower = MidiClockFollower(config=config)
    last_before = stream.tick_times[24 * 4 - 1]
    for t, msg in stream.events:
        if t > last_before + 0.01:
            break
        follower.feed(msg, t)
    coasting = follower.estimate(last_before + 0.2)
    held = follower.estimate(last_before + 0.6)
    assert coasting is not None and coasting.state == "coasting"
    assert held is not None and held.state == "lost" and not held.running
    assert abs(held.last_clock_age - 0.6) < 0.002
    follower = feed_all(stream, MidiClockFollower(config=config))
    est = follower.estimate(stream.events[-1][0])
    assert est is not None and est.state == "running"
    assert follower.counters["dropouts"] == 1
    assert abs(est.beat_time(16) - stream.beat_time(15) - 0.5) < 0.005  # the song position kept its count


@pytest.mark.parametrize("fault", [None, ("lost", 1), ("lost", 2), ("lost", 5), ("lost", 10),
                                   ("repeated", 0), ("repeated", 1), ("repeated", 6), ("late", 0)])
def test_the_ticks_just_after_the_clock_returns_keep_the_senders_count(fault: tuple[str, int] | None) -> None:
    """The clock comes back after 5 s at 120 BPM, 0.4 tick later than its old line (the sender
    kept its own time), and JACK loses, repeats or stamps a cycle (256 frames) late one of its
    first ticks: the song position is the sender's from there on. Before, any of these put
    every later beat a tick (20.8 ms) off: a lost tick uncounted while held back against the
    old line, a repeat counted as a tick, a late first tick tipping the gap's count."""
    period = 60.0 / (120.0 * 24)
    back = (768 + 240 + 0.4) * period
    times = [k * period for k in range(768)] + [back + k * period for k in range(480)]
    follower = MidiClockFollower()
    follower.feed(mido.Message("start"), -0.001)
    for i, t in enumerate(times):
        kind, at = fault if fault is not None and i == 768 + fault[1] else (None, None)
        if kind == "lost":
            continue
        follower.feed(mido.Message("clock"), t + (256 / 48_000 if kind == "late" else 0.0))
        if kind == "repeated":
            follower.feed(mido.Message("clock"), t)
    est = follower.estimate(times[-1])
    assert est is not None and est.state == "running"
    assert follower.counters["dropouts"] == 1
    beat = (768 + 240 + 479) // 24
    assert abs(est.beat_time(beat) - (back + (beat * 24 - 768 - 240) * period)) < 1e-4


def test_a_short_hole_on_the_line_keeps_the_window() -> None:
    """Ten ticks JACK skipped (a stalled server), the clock back on its old line, its 2nd tick
    back 4 ms late, then one lost and one repeated: judged by the line the window already has
    (the late tick held back, the others counted), not taken for a new phase in a young window
    of their own, where the late tick bends the next bar line."""
    period = 60.0 / (120.0 * 24)
    follower = MidiClockFollower()
    follower.feed(mido.Message("start"), -0.001)
    for k in range(24 * 24):
        if 300 <= k < 310 or k == 320:
            continue
        follower.feed(mido.Message("clock"), k * period + (0.004 if k == 311 else 0.0))
        if k == 324:
            follower.feed(mido.Message("clock"), k * period)
        if k == 315:
            est = follower.estimate(k * period)
            assert est is not None and abs(est.beat_time(17) - 17 * 24 * period) < 1e-4
    assert follower.counters["dropouts"] == 1 and follower.counters["jumps"] == 0
    assert follower.counters["missed"] == 1 and follower.counters["duplicates"] == 1
    est = follower.estimate((24 * 24 - 1) * period)
    assert est is not None and abs(est.beat_time(23) - 23 * 24 * period) < 1e-5


def test_bad_input_is_logged_and_dropped(caplog: pytest.LogCaptureFixture) -> None:
    follower = MidiClockFollower()
    caplog.set_level(logging.WARNING)
    follower.feed(mido.Message("clock"), 1.0)
    follower.feed(mido.Message("clock"), 0.5)
    follower.feed("clock", 1.1)  # type: ignore[arg-type]
    assert follower.counters["ignored"] == 2
    assert "older than the last" in caplog.text and "expected a mido.Message" in caplog.text
    fast = MidiClockFollower()
    for i in range(10):  # 1000 BPM: outside the timeline's range
        fast.feed(mido.Message("clock"), i * 0.0025)
    assert fast.estimate(0.03) is None
    assert "outside" in caplog.text


def test_config_out_of_range_names_the_field() -> None:
    with pytest.raises(ValueError, match="grace must be in"):
        FollowerConfig(grace=-1.0)
    with pytest.raises(ValueError, match="window_beats"):
        FollowerConfig(window_beats=0)


def test_phase_errors_have_no_hidden_bias() -> None:
    errors = np.array([e for seed in range(3) for e in next_beat_errors(
        clock_stream(bpm=128.0, ticks=24 * 40, jitter=0.002, seed=seed), from_beat=8)])
    assert abs(errors.mean()) < 0.0005


@pytest.mark.parametrize("jitter", [0.0, 0.0005])
def test_ticks_dropped_or_repeated_by_skipped_jack_cycles_keep_the_song_position(jitter: float) -> None:
    """JACK skips a cycle on an xrun (jack_midi_clock drops the ticks that fell in it) or runs
    one twice (its ticks come again at the same frames): on a frame-exact clock these land on
    the line a whole tick off, and are counted, not taken for jitter or a tempo jump."""
    stream = clock_stream(bpm=133.0, ticks=24 * 24, jitter=jitter, seed=4, dropout=(300, 302))
    events = list(stream.events)
    dup = next(i for i, (_, m) in enumerate(events) if m.type == "clock" and _ > stream.tick_times[400])
    events.insert(dup + 1, events[dup])  # a cycle run twice repeats its tick at the same frame
    follower = MidiClockFollower()
    for t, msg in events:
        follower.feed(msg, t)
    assert follower.counters["missed"] == 2
    assert follower.counters["duplicates"] == 1
    assert follower.counters["jumps"] == 0
    est = follower.estimate(events[-1][0])
    assert est is not None
    assert abs(est.beat_time(23) - stream.beat_time(23)) < 0.001  # the song position survived both


@pytest.mark.parametrize("jitter", [0.0, 0.0005])
@pytest.mark.parametrize("lost", [1, 2])
def test_a_tick_lost_right_after_start_is_counted_not_taken_for_a_jump(lost: int, jitter: float) -> None:
    """JACK skipped a cycle just after Start, so the 2nd or 3rd tick never came, before the
    follower knew the period (jack_midi_clock, 1 run in 5): once a few intervals give the
    period, that gap is two ticks, and the song position is right from there on."""
    stream = clock_stream(bpm=133.0, ticks=24 * 16, jitter=jitter, seed=5, dropout=(lost, lost + 1))
    follower = MidiClockFollower()
    clocks = 0
    for t, msg in stream.events:
        follower.feed(msg, t)
        clocks += msg.type == "clock"
        if clocks == 24:  # song tick 24 (one was lost): beat 1 has just arrived
            est = follower.estimate(t)
            assert est is not None and abs(est.beat_time(2) - stream.beat_time(2)) < 0.002
    assert follower.counters["missed"] == 1
    assert follower.counters["jumps"] == 0
    est = follower.estimate(stream.events[-1][0])
    assert est is not None and abs(est.tempo_bpm - 133.0) < 0.1
    for beat in (4, 8, 12, 15):
        assert abs(est.beat_time(beat) - stream.beat_time(beat)) < 0.001


def test_a_late_tick_right_after_start_is_not_counted_as_lost() -> None:
    """A gap of 1.6 periods followed by one of 0.4 is a late tick, not a lost one."""
    stream = clock_stream(bpm=133.0, ticks=24 * 8)
    events = list(stream.events)
    late = [i for i, (_, m) in enumerate(events) if m.type == "clock"][2]
    events[late] = (events[late][0] + 0.6 * 60 / (133 * 24), events[late][1])
    follower = feed_all(ClockStream(events, stream.tick_times))
    assert follower.counters["missed"] == 0
    est = follower.estimate(events[-1][0])
    assert est is not None
    assert abs(est.beat_time(7) - stream.beat_time(7)) < 0.001




def test_a_wandering_clock_is_not_taken_for_a_ramp() -> None:
    """Wander (each interval up to 1 % off, the time error adding up, as jack_midi_clock -J 1
    sends) is a random walk, which looks curved far more often than white jitter of its size
    does; a parabola fitted to it and extrapolated a bar ahead misses by more than the walk
    itself. Each bar line, predicted at the bar before, lands near where a straight line
    through the 4 beats before pointed (what the walk let anyone foresee): within 1 ms for
    95 % of bars, and within the real-clock test's 5 ms for all (a walk that does look like
    a ramp at 4 standard errors is rare, not impossible)."""
    excess = []
    for seed in range(12):
        stream = clock_stream(bpm=133.0, ticks=24 * 40, wander=0.01, seed=seed)
        frames = {k: t * 48_000 for k, t in enumerate(stream.tick_times)}
        follower = MidiClockFollower()
        clocks = 0
        for t, msg in stream.events:
            follower.feed(msg, t)
            if msg.type != "clock":
                continue
            tick, clocks = clocks, clocks + 1
            ahead = tick + 96
            if tick % 96 == 0 and tick >= 96 and ahead < len(stream.tick_times):
                est = follower.estimate(t)
                assert est is not None
                error_ms = abs(est.tick_time(ahead) - stream.tick_times[ahead]) * 1e3
                excess.append(error_ms - abs(unforeseeable_ms(frames, ahead, horizon=96)))
    assert len(excess) >= 12 * 8
    assert np.percentile(excess, 95) < 1.0, np.round(excess, 2)
    assert max(excess) < 5.0, np.round(excess, 2)


def follow(stream: ClockStream) -> tuple[np.ndarray, np.ndarray, MidiClockFollower]:
    """Tempo error (BPM) against the reference (the clock's own ticks regressed over the last
    2 bars) at every tick from two bars after Start on, and bar-phase error (ms): each bar
    line as predicted one bar before it (as the engine plans bars) against the clock's tick.
    The bench's measure (`bench.clock_bench.against_reference`), so a test's bound and a figure
    in bench/RESULTS.md are read the same way."""
    tempo, phase, _, follower = against_reference(stream)
    return np.array(tempo), np.array(phase), follower


@pytest.mark.parametrize("model", ["usb", "J1", "J5", "J10"])
def test_tempo_is_within_a_fifth_of_a_bpm_of_the_clocks_own_two_bar_regression(model: str) -> None:
    """#19: under jack_midi_clock -J (a random walk of the phase, which moves the 2-bar
    regression itself by ~0.6 BPM at -J 10) and a USB-like clock (+/-1 ms, 1 tick in 200
    5 ms late), the tempo stays within 0.2 BPM of the reference at every tick (p99; the
    old follower: 3.2 BPM at -J 5, 8.8 at -J 10), and wander is never taken for a jump."""
    errors, jumps = [], 0
    for seed in range(3):
        tempo, _, follower = follow(JITTER_MODELS[model](seed))
        errors.append(tempo)
        jumps += follower.counters["jumps"]
    errors_bpm = np.concatenate(errors)
    assert np.percentile(errors_bpm, 99) <= 0.2, np.percentile(errors_bpm, [50, 99, 100])
    assert jumps == 0


@pytest.mark.parametrize(("model", "p99_ms"), [("usb", 2.0), ("J1", 5.0)])
def test_bar_phase_one_bar_ahead_meets_the_issues_figure(model: str, p99_ms: float) -> None:
    """Bar lines predicted a bar ahead, against the clock's own ticks: p99 <= 2 ms for the
    USB-like clock, <= 5 ms at -J 1 (whose walk alone moves a bar line ~1 ms, 1 sd)."""
    phase = np.concatenate([follow(JITTER_MODELS[model](seed))[1] for seed in range(6)])
    assert np.percentile(phase, 99) <= p99_ms, np.percentile(phase, [50, 99, 100])


STEPS = [(m, a, b) for m in ("usb", "J0", "J1") for a, b in [(120.0, 150.0), (150.0, 120.0), (133.0, 131.0)]]
STEPS += [("usb", 120.0, 121.0), ("J0", 120.0, 121.0)]  # at -J 1 a 1 BPM step takes longer to tell from the walk (0.51 BPM)


@pytest.mark.parametrize(("model", "before", "after"), STEPS)
def test_a_tempo_step_is_followed_within_half_a_bpm_two_beats_after_it(model: str, before: float, after: float) -> None:
    at = 24 * 4 * 4
    for seed in range(3):
        stream = JITTER_MODELS[model](seed, bpm=jump(before, after, at=at), ticks=at + 24 * 12)
        follower, tick = MidiClockFollower(), -1
        for t, msg in stream.events:
            follower.feed(msg, t)
            tick += msg.type == "clock"
            if msg.type == "clock" and tick >= at + 48:
                est = follower.estimate(t)
                assert est is not None and abs(est.tempo_bpm - after) < 0.5, (seed, tick - at, est)


@pytest.mark.parametrize(("start", "end", "beats"), [(110.0, 140.0, 32), (140.0, 110.0, 32), (120.0, 128.0, 16)])
def test_a_tempo_ramp_is_followed_within_half_a_bpm_two_beats_after_it_starts(start: float, end: float, beats: int) -> None:
    """A JACK sender's ramp (frame-exact, as a test's own sender sends it): from two beats
    after it starts, through it and after it ends, within 0.5 BPM of the sender's tempo."""
    after = 24 * 4 * 4
    tempo = ramp(start, end, over_ticks=24 * beats, after=after)
    for seed in range(3):
        stream = JITTER_MODELS["J0"](seed, bpm=tempo, ticks=after + 24 * (beats + 8))
        follower, tick = MidiClockFollower(), -1
        for t, msg in stream.events:
            follower.feed(msg, t)
            tick += msg.type == "clock"
            if msg.type == "clock" and tick >= after + 48:
                est = follower.estimate(t)
                assert est is not None and abs(est.tempo_bpm - tempo(tick)) < 0.5, (seed, (tick - after) / 24, est)


@pytest.mark.parametrize(("start", "end", "beats"), USB_RAMPS)
def test_a_ramp_under_usb_jitter_is_followed_from_two_beats_after_it_starts(start: float, end: float, beats: int) -> None:
    """Under the USB-like model (+/-1 ms, 1 tick in 200 5 ms late), 40 seeds: from two beats
    after a ramp starts, through it and after it (not the two beats after its end), the tempo is
    within 0.5 BPM of the sender's at 99.6 % of ticks, p99 within 0.4 BPM, and all within 1.2 BPM. The line that
    restarted at the change detector's alarm lagged 2.6 BPM (a USB clock read wander that is not
    there, hiding the ramp's curvature, and the restarted line lagged half its span of ramp); a
    detector kept summing after the window's own curvature caught the ramp restarted it on a
    young window 3.1 BPM off (seed 19); wander read from jitter alone hid a ramp 2.5 beats (2.1
    BPM off, seed 14 down). Not yet met: every tick within 0.5 BPM (worst 0.98 BPM, in the beat
    after the first two, while a gentle ramp is still told from a step)."""
    runs = [np.asarray(ramp_errors(start, end, beats, seed)[0]) for seed in range(40)]
    errors = np.concatenate(runs)
    assert np.mean(errors > 0.5) < 0.004 and np.percentile(errors, 99) < 0.4, (np.mean(errors > 0.5), np.percentile(errors, 99))
    assert errors.max() < 1.2, [(seed, float(e.max())) for seed, e in enumerate(runs) if e.max() > 1.0]


@pytest.mark.parametrize("model", ["usb", "J5", "J10"])
def test_lost_repeated_and_late_ticks_under_jitter_are_not_tempo_changes(model: str) -> None:
    """Under wander or USB jitter, two ticks lost (a skipped JACK cycle), one repeated, and
    (USB) the late ones are counted as such: no jump, and the song position holds."""
    stream = JITTER_MODELS[model](7, ticks=24 * 4 * 12)
    clocks = [i for i, (_, m) in enumerate(stream.events) if m.type == "clock"]
    events = list(stream.events)
    events.insert(clocks[800] + 1, events[clocks[800]])  # tick 800 comes twice
    del events[clocks[600] : clocks[602]]  # ticks 600 and 601 never come
    follower = MidiClockFollower()
    for t, msg in events:
        follower.feed(msg, t)
    assert follower.counters["missed"] == 2
    assert follower.counters["duplicates"] == 1
    assert follower.counters["jumps"] == 0
    est = follower.estimate(events[-1][0])
    assert est is not None
    last = len(stream.tick_times) - 1
    assert round((stream.tick_times[last] - est.ref_time) / est.tick_period + est.ref_tick) == last


def test_a_restarted_engine_joins_a_running_clock_without_waiting_for_start() -> None:
    """Crash recovery: ticks with no Start are taken as a Continue from song tick 0 once the
    runner restored a playing show (`join_running`); without it they mean a stopped sender."""
    period = 60 / (120 * 24)
    ticks = _steady_ticks(5.0, 24 * 4, period)  # mid-song: no Start ever comes
    waiting, joined = MidiClockFollower(), MidiClockFollower()
    joined.join_running()
    for t, msg in ticks:
        waiting.feed(msg, t)
        joined.feed(msg, t)
    end = ticks[-1][0]
    assert waiting.estimate(end).state == "stopped"
    est = joined.estimate(end)
    assert est is not None and est.state == "running" and est.epoch == 1
    assert abs(est.beat_time(0) - 5.0) < 1e-6  # its first tick is song beat 0: bar lines on the clock's ticks
    assert abs(est.tempo_bpm - 120.0) < 0.01
    joined.feed(mido.Message("stop"), end + period / 2)  # a Stop, then Start, places the song again
    joined.feed(mido.Message("start"), end + period)
    joined.feed(mido.Message("clock"), end + 2 * period)
    assert abs(joined.estimate(end + 2 * period).beat_time(0) - (end + 2 * period)) < 1e-6
