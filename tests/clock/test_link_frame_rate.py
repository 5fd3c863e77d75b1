"""Link's tempo on a frame clock of its own rate (JACK's frames, #19 item 4), through a stand-in
binding whose clock the test advances: no network, no Link library, no waiting."""

from __future__ import annotations

import random

import pytest

from engine.clock.link import ClockRate, LinkClock

BPM = 127.0
FAST = 1.003  # the frame clock runs 0.3% fast: 1.003 frame seconds per Link second


class _Clock:
    def __init__(self) -> None:
        self.us = 3_600_000_000  # an hour after boot

    def micros(self) -> int:
        return self.us


class _State:
    """A session at BPM whose beat 0 is at Link time 0."""

    def isPlaying(self) -> bool:  # noqa: N802 (the binding's names)
        return True

    def tempo(self) -> float:
        return BPM

    def beatAtTime(self, micros: int, quantum: float) -> float:  # noqa: N802
        return micros / 1e6 * BPM / 60

    def timeAtBeat(self, beat: float, quantum: float) -> float:  # noqa: N802
        return beat * 60 / BPM * 1e6


class _Link:
    def __init__(self, bpm: float) -> None:
        self._clock = _Clock()
        self.enabled = False
        self.startStopSyncEnabled = False

    def clock(self) -> _Clock:
        return self._clock

    def captureAppSessionState(self) -> _State:  # noqa: N802
        return _State()

    def numPeers(self) -> int:  # noqa: N802
        return 0


class _Binding:
    Link = _Link


def _frame_clock_on(link: LinkClock, *, jitter_s: float, seed: int = 1):
    """Link's clock as JACK frame seconds running FAST, each reading off by up to `jitter_s`."""
    rng = random.Random(seed)
    clock = link._link.clock()
    origin = clock.us

    def now() -> float:
        return (clock.us - origin) / 1e6 * FAST + rng.uniform(-jitter_s, jitter_s)

    def link_beat_at_frames(beat: float) -> float:  # where Link's beat `beat` is, in frame seconds
        return (beat * 60 / BPM - origin / 1e6) * FAST

    return clock, now, link_beat_at_frames


@pytest.mark.parametrize("jitter_s", [0.0, 20e-6])
def test_beats_on_a_fast_frame_clock_stay_on_links_for_64_beats(jitter_s: float) -> None:
    link = LinkClock(bpm=BPM, start_stop_sync=False, binding=_Binding())
    clock, now, truth = _frame_clock_on(link, jitter_s=jitter_s)
    link.use_clock(now)
    for _ in range(600):  # 3 s of the engine loop, an estimate every 5 ms
        clock.us += 5_000
        link.estimate(now())
    est = link.estimate(now())
    first = int(est.beat_at(now())) + 1
    errors = [abs(est.beat_time(b) - truth(b)) for b in range(first, first + 64)]  # 30 s on from one estimate
    assert max(errors) < 0.2e-3, f"max {max(errors) * 1e3:.3f} ms, beat {errors.index(max(errors))}"
    assert est.tempo_bpm == pytest.approx(BPM / FAST, rel=2e-6)
    assert link.health(now())["tempo_bpm"] == BPM  # status shows the session's tempo, as every peer does


def test_a_frozen_frame_clock_keeps_the_measured_rate() -> None:
    link = LinkClock(bpm=BPM, start_stop_sync=False, binding=_Binding())
    clock, now, _ = _frame_clock_on(link, jitter_s=0.0)
    link.use_clock(now)
    for _ in range(600):
        clock.us += 5_000
        link.estimate(now())
    frozen = now()
    link.now = lambda: frozen  # FrameTimebase.freeze: the JACK client is closing
    for _ in range(200):
        clock.us += 5_000
        link.estimate(frozen)
    assert link.estimate(frozen).tempo_bpm == pytest.approx(BPM / FAST, rel=1e-9)


def test_rate_skips_preempted_readings_and_takes_none_off_a_line() -> None:
    rate = ClockRate()
    for i in range(100):  # 5 s of pairs at 200 ppm slow
        rate.observe(1000.0 + i * 0.05, i * 0.05 * 0.9998, spread=1e-5)
    assert rate.rate == pytest.approx(0.9998, rel=1e-9)
    rate.observe(1005.0, 5.0 * 0.9998 + 0.5, spread=0.01)  # read across a preemption: not taken
    assert rate.rate == pytest.approx(0.9998, rel=1e-9)
    for i in range(1, 101):  # stepped 10 ms, then 100 ppm fast: the old rate until the step left the window
        rate.observe(1005.0 + i * 0.05, 5.0 + 0.01 + i * 0.05 * 1.0001, spread=1e-5)
        assert rate.rate == pytest.approx(0.9998 if i < 100 else 1.0001, rel=1e-9), i
    rate.observe(90_000.0, 90_000.0, spread=1e-5)  # a reading on another clock (a status read racing use_clock)
    for i in range(1, 61):  # is dropped, with the window, by the next on this one: 2 s on, its rate
        rate.observe(1010.0 + i * 0.05, 10.0 + i * 0.05 * 0.9999, spread=1e-5)
    assert rate.rate == pytest.approx(0.9999, rel=1e-9)
    bursty = ClockRate()  # a starved dummy server: cycles lost in bursts, no rate to speak of
    rng = random.Random(2)
    for i in range(100):
        bursty.observe(i * 0.05, i * 0.05 * 0.99 - rng.choice([0.0, 0.003]), spread=1e-5)
    assert bursty.rate == 1.0


def test_bar_lines_on_a_slow_jack_clock_follow_link_through_the_driver() -> None:
    """CI's case through the driver and the timeline: JACK's frames 270 ppm slow (0.034 BPM at 127,
    inside the 0.05 BPM a generated bar may be off before it is planned again), the grid taken
    before the rate is measured. Every bar line as planned lands within 0.2 ms of Link's, for
    64 beats."""
    from engine.clock.driver import ClockDriver
    from engine.clock.sampleclock import SampleClock
    from engine.clock.source import ClockSource

    link = LinkClock(bpm=BPM, start_stop_sync=False, binding=_Binding())
    clock = link._link.clock()
    origin = clock.us
    slow = 1 - 270e-6

    def frame_at(us: float) -> float:  # JACK's frame (from the sink's origin) at Link micros `us`
        return (us - origin) * 0.048 * slow

    driver = ClockDriver(ClockSource("link"), beats_per_bar=4, link=link)
    timebase = driver.use_frames(origin=0, rate=48_000, frame_clock=lambda: int(frame_at(clock.us)))
    assert timebase is not None
    sample_clock = SampleClock(sample=0, time=0.0)
    lookahead = 9_600  # 200 ms
    start = driver.song_start(after=lookahead, clock=sample_clock, t=timebase.now())
    assert start is not None
    timeline, first = start
    played: dict[int, int] = {}
    while len(played) < 17:
        clock.us += 5_000
        playhead = int(frame_at(clock.us))
        planned = timeline.bar_start(timeline.bar_at(playhead + lookahead) + 1)
        refit = driver.follow(timeline, planned_until=planned, clock=sample_clock, t=timebase.now())
        if refit is not None:
            timeline = refit.timeline
        bar = timeline.bar_at(playhead)
        if bar > first:
            played.setdefault(bar, timeline.bar_start(bar))  # planned long before: it plays where it was
    errors = [(at - frame_at(timeline.bar_first_beat(bar) * 60 / BPM * 1e6)) / 48 for bar, at in played.items()]
    # ms; the first bar was planned before the rate had 2 s of readings (1.0 ms off). Without the rate
    # the bar lines drifted 1.0 -> 2.55 ms, re-fit, and again; with it but a 0.05 BPM tolerance, 1.5 ms
    # (the tolerance of bars already generated; unplanned ones follow within 0.005 BPM).
    assert max(map(abs, errors[1:])) < 0.2, [round(e, 3) for e in errors]
