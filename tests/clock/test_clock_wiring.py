"""The clock wired into the engine: sink sample clock, scheduler re-timing, config/patch/CLI choice."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from engine.service.run_command import add_commands, config_from_args
from engine.audio.ring import PlaybackRing
from engine.clock import ClockSource, MidiClockFollower, SampleClock, SampleClockTracker
from engine.clock.driver import ClockDriver
from engine.clock.synthetic import clock_stream, jump
from engine.errors import PatchError
from engine.generator.synth import SynthGenerator
from engine.patch import load_patch, parse_patch
from engine.schedule.scheduler import Scheduler
from engine.service.config import ServiceConfigError, load_config
from engine.service.runner import clock_source
from engine.style.bank import StyleBank
from engine.style.embedder import HashEmbedder

REPO = Path(__file__).resolve().parents[2]
SR = 48_000


def test_sample_clock_from_playhead_observations_finds_the_block_times() -> None:
    """Blocks of 256 taken at exact times from 10.0 s; the loop observes 0..5 ms late."""
    tracker = SampleClockTracker(window=1.0)
    rng = np.random.default_rng(1)
    assert tracker.observe(0, 10.0, block=256) is None  # nothing played yet
    clock = None
    for k in range(1, 400):
        taken = 10.0 + (k - 1) * 256 / SR  # block k-1 starts playing here; playhead becomes k*256
        clock = tracker.observe(k * 256, taken + rng.uniform(0.0, 0.005), block=256)
    assert clock is not None
    assert abs(clock.time_of(100 * 256) - (10.0 + 100 * 256 / SR)) < 0.0005


def follow_offline(stream, *, seconds: float, lookahead: int = 9600, rollback: bool = True,  # type: ignore[no-untyped-def]
                   fit: str | None = None, at: tuple[float, Callable[[Scheduler], None]] | None = None):
    """Scheduler + synth + ClockDriver on a simulated sink (sample 0 plays at 10.0 s), 5 ms loop
    steps, coupled as ClockCoupling.follow does (with rollback, from `replan_from`); `at`: an
    action on the scheduler at that clock time (s)."""
    patch = load_patch(REPO / "patches/default.yaml")
    embedder = HashEmbedder()
    ring = PlaybackRing()
    sched = Scheduler(generator=SynthGenerator(), patch=patch, bank=StyleBank.for_patch(patch, embedder),
                      embedder=embedder, ring=ring, lookahead=lookahead, rollback=rollback, fit=fit)
    sched.tempo_led = True  # as the engine sets it under an external clock
    now = [0]
    sched.playhead_now = lambda: now[0]
    follower = MidiClockFollower()
    driver = ClockDriver(ClockSource("midi", "synthetic"), beats_per_bar=4, follower=follower)
    sink = SampleClock(sample=0, time=10.0)
    events = iter(stream.events)
    pending = next(events, None)
    bars: list[int] = []
    for step in range(int(seconds / 0.005)):
        t = 10.0 + step * 0.005
        while pending is not None and pending[0] <= t:
            follower.feed(pending[1], pending[0])
            pending = next(events, None)
        playhead = round((t - 10.0) * SR)
        now[0] = playhead  # what the coupling sees before this turn's fill
        if at is not None and abs(t - at[0]) < 0.0025:
            at[1](sched)
        refit = driver.follow(sched.timeline, planned_until=sched.planned_until, replan_from=sched.replan_from,
                              clock=sink, t=t)
        if refit is not None:
            sched.retime(refit.timeline, at=refit.at)
        before = sched.planned_until
        sched.fill(playhead)
        bar = sched.timeline.bar_at(before)
        while sched.timeline.bar_start(bar) < sched.planned_until:
            bars.append(sched.timeline.bar_start(bar))
            bar += 1
    return sched, ring, bars


def test_engine_timeline_follows_a_clock_that_starts_late_and_jumps_tempo() -> None:
    """The engine plays at the patch tempo, bridges to the clock's bar grid, and keeps bar lines
    on the clock's beats through a 120 -> 133 BPM jump, with the audio continuous throughout."""
    stream = clock_stream(bpm=jump(120.0, 133.0, at=24 * 24), ticks=24 * 48 + 1, t0=11.0, jitter=0.002, seed=3)
    sched, ring, bars = follow_offline(stream, seconds=24.0)
    assert ring.underruns == 0
    song_bars = sched.timeline.bar_at(bars[-1])
    assert song_bars >= 9  # the timeline counts the clock's song bars
    checked = 0
    for start in bars:
        k = sched.timeline.bar_at(start)
        if 2 <= k < 12 and k not in (6, 7):  # bar 6 is the jump: audio planned before it was heard keeps the old tempo
            err = start / SR + 10.0 - stream.beat_time(4 * k)
            assert abs(err) < 0.005, f"bar {k} off by {err * 1e3:.2f} ms"
            checked += 1
    assert checked >= 7


def test_a_patch_load_keeps_the_clocks_tempo_and_takes_its_meter() -> None:
    """jungle (174 BPM, 4/4) then waltz (3/4) loaded while a 120 BPM clock leads: every bar after
    the loads stays on the clock's beats (before the fix, jungle's bars played at 174 BPM until
    the follower re-fitted two bars later); waltz's bars are 3 of the clock's beats."""
    stream = clock_stream(bpm=120.0, ticks=24 * 60 + 1, t0=11.0)
    jungle, waltz = (load_patch(REPO / f"patches/{name}.yaml") for name in ("jungle", "waltz"))
    embedder = HashEmbedder()

    def load(sched: Scheduler) -> None:
        sched.submit_patch(jungle, StyleBank.for_patch(jungle, embedder), quantize="bar", source="test")

    sched, ring, bars = follow_offline(stream, seconds=24.0, at=(16.0, load))
    assert ring.underruns == 0
    assert sched.patch is jungle
    tempos = {round(float(seg.bpm), 1) for seg in sched.timeline.segments if seg.origin >= bars[3]}
    assert tempos == {120.0}, tempos
    beats = [stream.beat_time(b) for b in range(0, 60)]
    for start in bars[4:]:
        t = start / SR + 10.0
        assert min(abs(t - b) for b in beats) < 0.005, f"bar line at {t:.3f} s is off the clock's beats"
    sched2, _, bars2 = follow_offline(stream, seconds=24.0, at=(16.0, lambda s: s.submit_patch(
        waltz, StyleBank.for_patch(waltz, embedder), quantize="bar", source="test")))
    last = sched2.timeline.segments[-1]
    assert last.beats_per_bar == 3 and round(float(last.bpm), 1) == 120.0


@pytest.mark.parametrize("fit", ["stretch", "resample"])
def test_a_clock_tempo_jump_replans_bars_already_generated(fit: str) -> None:
    """400 ms look-ahead, the clock jumps 120 -> 133 BPM two thirds of a beat before bar 7's line,
    just after bar 7 was planned at 120: it is generated by the time the jump is known. With
    rollback it is planned again and bar 8's line meets the clock's beat; without, bar 7 keeps
    its 120 BPM length and bar 8 comes over 200 ms late. (A jump a beat before the line was
    half-seen when bar 7 was planned: without rollback bar 8 was then 1 ms or 33 ms off, as the
    estimate of that moment happened to be.)"""
    stream = clock_stream(bpm=jump(120.0, 133.0, at=24 * 27 + 8), ticks=24 * 48 + 1, t0=11.0, jitter=0.002, seed=3)

    def off_by_ms(sched, k: int) -> float:  # type: ignore[no-untyped-def]
        return (sched.timeline.bar_start(k) / SR + 10.0 - stream.beat_time(4 * k)) * 1e3

    on, ring_on, _ = follow_offline(stream, seconds=24.0, lookahead=19200, fit=fit)
    off, ring_off, _ = follow_offline(stream, seconds=24.0, lookahead=19200, rollback=False, fit=fit)
    assert ring_on.underruns == ring_off.underruns == 0
    assert on.rollbacks > 0 and off.rollbacks == 0
    assert abs(off_by_ms(on, 8)) < 5 and abs(off_by_ms(off, 8)) > 20, (off_by_ms(on, 8), off_by_ms(off, 8))
    assert all(abs(off_by_ms(sched, k)) < 5 for sched in (on, off) for k in (9, 10))


def test_clock_choice_precedence_cli_over_config_over_patch(tmp_path: Path) -> None:
    patch = parse_patch({"tempo": 120, "style": [{"text": "x"}], "clock": "midi:TR-8"})
    config_file = tmp_path / "config.yaml"
    config_file.write_text("clock: {source: link, out: 'Volca*', start_on: bar}\n")
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers())
    base = ["run", "--patch", str(REPO / "patches/default.yaml")]
    no_config = config_from_args(parser.parse_args(base))
    assert clock_source(no_config, patch) == ClockSource("midi", "TR-8")  # the patch's, when nothing else says
    with_config = config_from_args(parser.parse_args(base + ["--config", str(config_file)]))
    assert clock_source(with_config, patch) == ClockSource("link")
    assert (with_config.clock_out, with_config.start_on) == ("Volca*", "bar")
    cli = config_from_args(parser.parse_args(base + ["--config", str(config_file), "--clock", "midi:Drums 1",
                                                     "--start-on", "now", "--clock-out", "x"]))
    assert clock_source(cli, patch) == ClockSource("midi", "Drums 1")
    assert (cli.clock_out, cli.start_on) == ("x", "now")
    assert clock_source(config_from_args(parser.parse_args(base)), parse_patch({"tempo": 120, "style": [{"text": "x"}]})) \
        == ClockSource("internal")


def test_bad_clock_choices_name_where(tmp_path: Path) -> None:
    with pytest.raises(PatchError, match="clock"):
        parse_patch({"tempo": 120, "style": [{"text": "x"}], "clock": "mtc"})
    config_file = tmp_path / "config.yaml"
    config_file.write_text("clock: {source: midi}\n")
    with pytest.raises(ServiceConfigError, match="port"):
        load_config(config_file)
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers())
    with pytest.raises(Exception, match="--clock"):
        config_from_args(parser.parse_args(["run", "--patch", "p.yaml", "--clock", "midi:"]))


def engine_with(clock: ClockDriver, tmp_path: Path):  # type: ignore[no-untyped-def]
    from engine.audio.sinks import WavRealtimeSink
    from engine.engine import Engine

    patch = load_patch(REPO / "patches/default.yaml")
    return Engine(patch=patch, generator=SynthGenerator(), clock=clock,
                  sink_factory=lambda ring: WavRealtimeSink(ring, tmp_path / "out.wav"))


def test_local_tempo_does_not_fight_a_midi_clock(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from engine.params import ControlEvent

    engine = engine_with(ClockDriver(ClockSource("midi", "synthetic"), beats_per_bar=4, follower=MidiClockFollower()),
                         tmp_path)
    before = engine.scheduler.timeline
    with caplog.at_level("WARNING"):
        for _ in range(3):
            engine.submit(ControlEvent("tempo.bpm", 150.0, source="osc"))
        for _ in range(4):
            engine.submit(ControlEvent("tempo.tap", source="midi"))
    engine.scheduler.fill(0)  # drains the scheduler's queue: nothing there to apply
    assert engine.scheduler.timeline == before
    lines = [r.getMessage() for r in caplog.records if "ignored: the tempo follows clock midi:synthetic" in r.getMessage()]
    assert len(lines) == 1, lines  # rate-limited: one line, not seven
    assert "150.00 BPM from osc" in lines[0]


def test_local_tempo_is_proposed_to_link(tmp_path: Path) -> None:
    link = pytest.importorskip("link", reason="LinkPython-extern is not installed (pip install LinkPython-extern)")
    import time

    from engine.clock.link import LinkClock
    from engine.params import ControlEvent

    peer = LinkClock(bpm=120.0, beats_per_bar=4, binding=link)  # not enabled: no network traffic
    engine = engine_with(ClockDriver(ClockSource("link"), beats_per_bar=4, link=peer), tmp_path)
    engine.submit(ControlEvent("tempo.bpm", 140.0, source="osc"))
    assert peer.estimate(time.monotonic()).tempo_bpm == pytest.approx(140.0)


@pytest.mark.skipif(Path("/dev/snd/seq").exists(), reason="this machine has an ALSA sequencer")
def test_a_midi_clock_on_alsa_without_a_sequencer_names_the_jack_api(tmp_path: Path) -> None:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "engine", "run", "--patch", "patches/default.yaml", "--clock",
                           "midi:foo", "--output", f"wav:{tmp_path / 'x.wav'}", "--duration", "1", "--no-midi",
                           "--no-osc"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].endswith("no ALSA sequencer (/dev/snd/seq): try --midi-api jack")
