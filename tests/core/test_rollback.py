"""Rollback: a change that arrives inside the look-ahead regenerates it from a snapshot.

Checked on the rendered samples and on the conditioning each frame was generated with
(by frame index: a restore cuts the frames generated again, so the log is what plays),
against the same render without the change. The offline render is the live engine with
an offline sink; its splice margin is fixed (10 ms, at least a 256-sample block), so where a
change must land is computed here from when the automation issues it and from where each frame
starts in the fit that plays (`frame_starts`: stretch, frames of a beat's 1/F; resample, 1,920
samples read at the model's tempo within 4 cents). A change rolled back to under stretch may be
heard up to the stretcher's reach (26.5 ms) before its frame, never before a margin after it arrived.
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import soundfile
from scipy import signal

from engine.automation import TimedEvent, load_automation
from engine.generator.synth import SynthGenerator
from engine.params import ControlEvent
from engine.patch import load_patch, parse_patch
from engine.render import render
from engine.schedule.fit import frame_starts, make_fitter
from engine.timeline import Timeline
from engine.units import FRAME_SAMPLES, SAMPLE_RATE

BLOCK = 256
MARGIN = 480  # the render's fixed splice margin: 10 ms


class Recorder(SynthGenerator):
    """The synth, keeping each frame's conditioning by frame index and counting every frame generated."""

    def __init__(self) -> None:
        super().__init__()
        self.frames: list = []
        self.received = 0

    def generate(self, conditioning):
        self.frames += list(conditioning)
        self.received += len(conditioning)
        return super().generate(conditioning)

    def snapshot(self):
        return super().snapshot(), len(self.frames)

    def restore(self, snapshot) -> None:
        state, frames = snapshot
        super().restore(state)
        del self.frames[frames:]


def two_styles(tempo: float = 120.0):
    return parse_patch({"tempo": tempo, "meter": 4, "seed": 1, "style": [{"text": "warm pad"}, {"text": "glass", "weight": 0.0}]})


FITS = pytest.mark.parametrize("fit", ["stretch", "resample"])


def play(tmp_path: Path, name: str, events: str = "", *, tempo: float = 120.0, bars: int = 4, lookahead_ms: float = 200.0,
         rollback: bool = True, fit: str = "stretch"):
    """Render with automation `events` (YAML list items); (result, audio, recorder)."""
    auto = tmp_path / f"{name}.yaml"
    auto.write_text("events:\n" + events if events else "events: []\n")
    gen = Recorder()
    result = render(two_styles(tempo), bars=bars, output=tmp_path / f"{name}.wav", generator=gen,
                    automation=load_automation(auto), lookahead_ms=lookahead_ms, rollback=rollback, fit=fit)
    audio = soundfile.read(tmp_path / f"{name}.wav", dtype="float32", always_2d=True)[0]
    return result, audio, gen


def issued(sample: float) -> int:
    """The playhead when the automation hands over an event at `sample`: the first block boundary at or after it."""
    return math.ceil(sample / BLOCK) * BLOCK


def first_difference(a: np.ndarray, b: np.ndarray) -> int:
    differ = np.flatnonzero(np.any(a != b, axis=1))
    assert len(differ), "the change made no difference"
    return int(differ[0])


def first_frame_from(sample: int, fit: str, tempo: float = 120.0, lead: int = 0) -> tuple[int, int]:
    """(index, start) of the first frame a rollback may change for a change that must not be
    heard before `sample`: its start a fitter's reach (and the generator's audio lead) later."""
    starts = frame_starts(fit, Timeline.start(tempo, 4), 8)
    index = next(i for i, t in enumerate(starts) if t >= sample + make_fitter(fit).reach + lead)
    return index, starts[index]


def first_changed_frame(frames: list, reference: list) -> int:
    return next(i for i, (f, r) in enumerate(zip(frames, reference)) if not np.array_equal(f.style, r.style))


@FITS
def test_a_now_change_mid_lookahead_is_heard_from_the_planned_frame_without_a_click(tmp_path, fit) -> None:
    """style.1.weight 0 -> 2 at bar 2 beat 2.3 (now), 200 ms look-ahead: it is heard from the first
    frame a margin after it arrived; every sample before is the render without the change, and
    every sample from there the render that had the change planned for that frame all along (so
    the splice adds nothing: no click)."""
    _, ref, ref_gen = play(tmp_path, "ref", fit=fit)
    result, out, gen = play(tmp_path, "now", "  - {bar: 2, beat: 2.3, target: style.1.weight, value: 2.0, quantize: now}\n",
                            fit=fit)
    tl = Timeline.start(120.0, 4)
    arrived = issued(tl.bar_start(1) + 1.3 * tl.segment_at(0).beat_length)
    frame, planned = first_frame_from(arrived + MARGIN, fit)
    assert result.rollbacks == 1
    assert first_changed_frame(gen.frames, ref_gen.frames) == frame
    splice = first_difference(out, ref)
    print(f"\n{fit}: a now change heard {(splice - arrived) / 48:.1f} ms after it arrived, its frame "
          f"{(planned - arrived) / 48:.1f} ms after")
    if fit == "resample":  # 120 BPM: frames read as they are, so the change starts on its frame
        assert splice == planned, f"heard from sample {splice}, planned {planned}"
    else:  # the stretcher's window reaches back, never before the margin
        assert arrived + MARGIN <= splice <= planned, (arrived + MARGIN, splice, planned)
    # the splice is not a click: the high-passed output near it is no louder than elsewhere in the bar
    hp = np.abs(signal.sosfilt(signal.butter(4, 4000, "highpass", fs=SAMPLE_RATE, output="sos"), out[:, 0]))
    bar = tl.bar_at(splice)
    near = hp[splice - 240 : splice + 240].max()
    elsewhere = np.concatenate([hp[tl.bar_start(bar) : splice - 240], hp[splice + 240 : tl.bar_start(bar + 1)]]).max()
    assert near <= elsewhere, f"high-passed peak {near:.4f} at the splice, {elsewhere:.4f} elsewhere in the bar"
    # and the whole file is the one where the same change was planned for that frame from the start
    early = [TimedEvent(0, Fraction(0), ControlEvent("style.1.weight", 2.0, quantize="now", at=planned))]
    render(two_styles(), bars=4, output=tmp_path / "early.wav", generator=SynthGenerator(), automation=early,
           rollback=False, fit=fit)
    np.testing.assert_array_equal(out, soundfile.read(tmp_path / "early.wav", dtype="float32", always_2d=True)[0])
    # without rollback the same change waits for the look-ahead
    _, late, _ = play(tmp_path, "late", "  - {bar: 2, beat: 2.3, target: style.1.weight, value: 2.0, quantize: now}\n",
                      rollback=False, fit=fit)
    assert first_difference(late, ref) >= arrived + 200 * 48


@FITS
@pytest.mark.parametrize("tempo, lookahead_ms", [(120.0, 200.0), (174.0, 400.0)])
def test_a_bar_change_inside_the_lookahead_lands_on_its_bar(tmp_path, tempo, lookahead_ms, fit) -> None:
    """A bar-quantized style change 100 ms before bar 3's line, its audio already generated: it lands
    on bar 3's first frame, exactly; without rollback it slips to bar 4. (The synth's kick is on
    the line: the stretch fitter plays a hit's line from the new audio only, so to the sample.)"""
    tl = Timeline.start(tempo, 4)
    beat = 1 + (tl.bar_length(1) - 0.1 * SAMPLE_RATE) / tl.segment_at(0).beat_length  # 100 ms before bar 3
    event = f"  - {{bar: 2, beat: {float(beat):.6f}, target: style.1.weight, value: 2.0, quantize: bar}}\n"
    _, ref, ref_gen = play(tmp_path, "ref", tempo=tempo, lookahead_ms=lookahead_ms, fit=fit)
    result, out, gen = play(tmp_path, "bar", event, tempo=tempo, lookahead_ms=lookahead_ms, fit=fit)
    bar3 = result.bar_starts[2]
    frames_before = frame_starts(fit, tl, 3).index(bar3)
    assert result.rollbacks == 1
    assert first_changed_frame(gen.frames, ref_gen.frames) == frames_before
    splice = first_difference(out, ref)
    if tempo == 120.0 or fit == "stretch":  # 120 BPM resampled: 50 frames a bar, read as they are
        assert splice == bar3
    else:  # resampled within 4 cents: the spline reading the new frame reaches 16 samples back
        assert bar3 - 16 <= splice <= bar3
    _, late, _ = play(tmp_path, "late", event, tempo=tempo, lookahead_ms=lookahead_ms, rollback=False, fit=fit)
    assert first_difference(late, ref) >= result.bar_starts[3] - 16


def test_a_tempo_change_inside_the_lookahead_replans_its_bar(tmp_path) -> None:
    """tempo 120 -> 150 asked 100 ms before bar 3: bar 3 is planned again at 150 BPM."""
    event = "  - {bar: 2, beat: 4.8, target: tempo.bpm, value: 150}\n"
    result, _, _ = play(tmp_path, "tempo", event)
    assert result.bar_starts[2] == 2 * 96000
    assert result.bar_starts[3] - result.bar_starts[2] == 76800  # a 150 BPM bar
    off, _, _ = play(tmp_path, "tempo-off", event, rollback=False)
    assert off.bar_starts[3] - off.bar_starts[2] == 96000 and off.bar_starts[4] - off.bar_starts[3] == 76800


def test_a_fader_sweep_rolls_back_at_most_once_a_chunk(tmp_path) -> None:
    """50 updates a second for a bar (2 s, 25 chunks of 80 ms): rollbacks coalesce, one a chunk at most."""
    events = "".join(f"  - {{bar: 2, beat: {1 + 0.04 * i:.2f}, target: style.1.weight, value: {i / 50:.2f}, quantize: now}}\n"
                     for i in range(100))
    result, out, gen = play(tmp_path, "sweep", events)
    assert 10 <= result.rollbacks <= 26, result.rollbacks
    assert 1.0 < result.work < 3.0
    # the last value lands within a margin and a frame of its arrival, not a look-ahead later
    _, ref, ref_gen = play(tmp_path, "final", "  - {bar: 2, beat: 4.96, target: style.1.weight, value: 1.98, quantize: now}\n")
    last = next(i for i in range(len(gen.frames)) if np.array_equal(gen.frames[i].style, ref_gen.frames[-1].style))
    arrived = issued(96000 + 3.96 * 24000)
    starts = frame_starts("stretch", Timeline.start(120.0, 4), 4)
    assert starts[last] <= arrived + MARGIN + make_fitter("stretch").reach + 2 * 2000  # 12 frames a beat: 2,000 samples


def test_changes_that_arrive_early_enough_render_the_same_with_rollback_on_and_off(tmp_path) -> None:
    """Bar changes issued a bar ahead (a style, a tempo, a transport stop and play): the same file, no rollback."""
    events = ("  - {bar: 2, target: style.1.weight, value: 1.5, quantize: bar}\n"
              "  - {bar: 2, beat: 2, target: tempo.bpm, value: 133.33}\n"
              "  - {bar: 4, target: transport.stop, quantize: bar}\n"
              "  - {bar: 5, target: transport.play, quantize: bar}\n")
    on, a, _ = play(tmp_path, "on", events, bars=6)
    off, b, _ = play(tmp_path, "off", events, bars=6, rollback=False)
    assert on.rollbacks == 0 and on.bar_starts == off.bar_starts
    np.testing.assert_array_equal(a, b)


def test_a_render_with_rollbacks_is_deterministic(tmp_path) -> None:
    events = "".join(f"  - {{bar: 2, beat: {1 + 0.3 * i:.1f}, target: style.1.weight, value: {i / 10:.1f}, quantize: now}}\n"
                     for i in range(10))
    first, a, _ = play(tmp_path, "one", events)
    second, b, _ = play(tmp_path, "two", events)
    assert first.rollbacks == second.rollbacks >= 5
    np.testing.assert_array_equal(a, b)


@FITS
def test_a_staccato_note_inside_the_lookahead_sounds_a_margin_after_it_is_played(tmp_path, fit) -> None:
    """A key down and up 10 ms later (shorter than a frame), played mid-bar: its onset is in the
    first frame a margin after the key went down, not a look-ahead later."""
    from engine.conditioning import NOTE_ONSET

    events = ("  - {bar: 2, beat: 2.5, target: note.60, value: 1}\n"
              "  - {bar: 2, beat: 2.52, target: note.60, value: 0}\n")
    result, _, gen = play(tmp_path, "note", events, fit=fit)
    arrived = issued(96000 + 1.5 * 24000)
    onset = [i for i, f in enumerate(gen.frames) if f.notes[60] == NOTE_ONSET]
    assert onset == [first_frame_from(arrived + MARGIN, fit)[0]], onset
    assert result.rollbacks >= 1


def test_synth_snapshot_replays_exactly() -> None:
    from engine.conditioning import FrameConditioning, masked_notes
    from engine.style.embedder import HashEmbedder

    style = HashEmbedder().embed_text("a")
    cond = [FrameConditioning(style, masked_notes(), drum=1 if i == 3 else -1) for i in range(6)]
    gen = SynthGenerator(seed=4)
    gen.generate(cond[:2])
    snap = gen.snapshot()
    first = gen.generate(cond)
    gen.generate(cond)
    gen.restore(snap)
    np.testing.assert_array_equal(gen.generate(cond), first)


def test_the_splice_margin_rises_at_once_and_decays_slowly_within_its_bounds() -> None:
    """Chunk times of 2 ms, then jitter (a 60 ms chunk among every ten, the recent p99): the margin
    covers it at once, still covers most of it after a quiet minute, and sinks towards the quiet
    need over minutes; always within the config's bounds."""
    from engine.schedule.margin import SpliceMargin

    margin = SpliceMargin(min_ms=10, max_ms=150, block=256)
    t = 0.0
    for _ in range(100):
        margin.observe(0.002, t)
        t += 0.08
    quiet = margin.samples
    assert quiet == 640  # 1.5 x 2 ms + 5 ms of loop wake-up + a block, above the 10 ms floor
    for i in range(30):
        t += 0.08
        margin.observe(0.060 if i % 10 == 0 else 0.002, t)
        if i == 10:  # the second slow chunk: its p99 is now the stall
            assert margin.samples >= 1.5 * 0.060 * SAMPLE_RATE + 256
    stalled = margin.samples
    assert stalled >= 1.5 * 0.060 * SAMPLE_RATE + 256
    for _ in range(750):  # a quiet minute: the stall leaves the p99 window, the peak is held
        t += 0.08
        margin.observe(0.002, t)
    assert margin.samples > 0.7 * stalled
    for _ in range(7500):  # ten more minutes
        t += 0.08
        margin.observe(0.002, t)
    assert margin.samples < 0.2 * stalled
    for _ in range(3):  # stalls past the bound: the margin stops at max_ms (rollback then reaches less far)
        margin.observe(10.0, t)
    assert margin.samples == 150 * 48
    fixed = SpliceMargin(min_ms=10, max_ms=150, block=256, adaptive=False)
    fixed.observe(10.0, t)
    assert fixed.samples == 480


def test_a_patch_picked_100ms_before_a_bar_line_takes_over_on_that_bar(tmp_path) -> None:
    """`patch.load` 100 ms before bar 3 (its audio already generated): the new patch (150 BPM)
    plays from bar 3's first sample; without rollback from bar 4."""
    one, two = tmp_path / "one.yaml", tmp_path / "two.yaml"
    one.write_text("name: one\ntempo: 120\nseed: 1\nstyle: [{text: a}]\n")
    two.write_text("name: two\ntempo: 150\nseed: 1\nstyle: [{text: b}]\n")
    auto = tmp_path / "auto.yaml"
    auto.write_text("events:\n  - {bar: 2, beat: 4.8, target: patch.load, value: two}\n")
    lengths = {}
    for rollback in (True, False):
        result = render(load_patch(one), bars=5, output=tmp_path / f"{rollback}.wav",
                        generator=SynthGenerator(), automation=load_automation(auto), patch_set=[one, two],
                        rollback=rollback)
        lengths[rollback] = [b - a for a, b in zip(result.bar_starts, result.bar_starts[1:])]
    assert lengths[True] == [96000, 96000, 76800, 76800, 76800]
    assert lengths[False] == [96000, 96000, 96000, 76800, 76800]


class Forgetful(SynthGenerator):
    """The synth whose snapshots are lost (as a restarted child's are): restore always fails."""

    def restore(self, snapshot) -> None:
        from engine.errors import GeneratorError

        raise GeneratorError("the snapshot was taken by a child that has since restarted")


@pytest.mark.parametrize("event", ["{target: tempo.bpm, value: 150}", "{target: patch.load, value: two}"])
def test_a_bar_change_that_cannot_roll_back_lands_on_the_next_bar_not_inside_a_planned_one(tmp_path, event) -> None:
    """Asked 100 ms before bar 3 while the generator cannot restore: the tempo or patch change
    waits for the next bar planned (bar 4); it never changes bar 3, which is already planned
    (that stopped the engine loop: 'bar 3 does not follow bar 2')."""
    one, two = tmp_path / "one.yaml", tmp_path / "two.yaml"
    one.write_text("name: one\ntempo: 120\nseed: 1\nstyle: [{text: a}]\n")
    two.write_text("name: two\ntempo: 150\nseed: 1\nstyle: [{text: b}]\n")
    auto = tmp_path / "auto.yaml"
    auto.write_text("events:\n  - {bar: 2, beat: 4.8, " + event[1:] + "\n")
    result = render(load_patch(one), bars=5, output=tmp_path / "out.wav", generator=Forgetful(),
                    automation=load_automation(auto), patch_set=[one, two])
    lengths = [b - a for a, b in zip(result.bar_starts, result.bar_starts[1:])]
    assert lengths == [96000, 96000, 96000, 76800, 76800]
    assert result.rollbacks == 0 and len(soundfile.read(tmp_path / "out.wav")[0]) == result.bar_starts[-1]


def test_a_tempo_change_waiting_for_its_rollback_never_changes_a_bar_already_planned() -> None:
    """A rollback has just run (the one-per-chunk grid holds the next), a tempo change for bar 3
    arrives inside the look-ahead, new frames are generated meanwhile, and then the generator
    cannot restore: the change lands on the next bar planned. It used to be applied by a new
    frame inside bar 3, already planned, and the loop stopped: 'bar 3 does not follow bar 2'."""
    from engine.audio.ring import PlaybackRing
    from engine.params import ControlEvent
    from engine.schedule.scheduler import Scheduler
    from engine.style.embedder import HashEmbedder

    gen = SynthGenerator()
    sched = Scheduler.for_patch(two_styles(), gen, ring=PlaybackRing(), embedder=HashEmbedder(), lookahead_ms=200.0)
    playhead = 0
    while playhead < 2 * 96000 - 4800 - 2000:
        sched.fill(playhead)
        playhead += BLOCK
    sched.submit(ControlEvent("style.1.weight", 1.0, quantize="now"))
    sched.fill(playhead)
    assert sched.rollbacks == 1
    while sched.ring.cursor < sched.ring.written:  # the rollback generates the look-ahead again, a few chunks a turn
        sched.fill(playhead)
    assert sched.planned_until > 2 * 96000  # bar 3 is planned
    sched.submit(ControlEvent("tempo.bpm", 150.0, quantize="bar"))  # for bar 3, 150 ms away: generated already
    for _ in range(3):  # the same chunk of playback: the grid holds its rollback; new frames come
        playhead += 64
        sched.fill(playhead)
    gen.restore = Forgetful.restore.__get__(gen)  # now the generator cannot go back
    while playhead < 5 * 96000:
        sched.fill(playhead)
        playhead += BLOCK
    sched.close()
    assert sched.timeline.bar_length(2) == 96000 and sched.timeline.bar_length(3) == 76800
    assert sched.rollbacks_missed >= 1


@FITS
def test_changes_applied_before_a_second_rollback_replay_at_their_own_sample(fit) -> None:
    """A gain move pinned 700 samples into a frame, rolled back to; then a style change rolls back
    again from the chunk holding that frame: every sample before the style change's frame is as
    it was (the gain move replays at its own sample, not at its frame's start)."""
    from engine.audio.ring import PlaybackRing
    from engine.params import ControlEvent
    from engine.schedule.scheduler import Scheduler
    from engine.style.embedder import HashEmbedder

    ring = PlaybackRing()
    sched = Scheduler.for_patch(two_styles(), SynthGenerator(), ring=ring, embedder=HashEmbedder(), lookahead_ms=200.0,
                                fit=fit)
    playhead = 0
    while playhead < 116992:
        sched.fill(playhead)
        playhead += BLOCK
    _, frame = first_frame_from(playhead + sched.margin.samples, fit)
    sched.submit(ControlEvent("master.gain", 0.5, quantize="now", at=frame + 700))
    sched.fill(playhead)
    assert sched.rollbacks == 1
    later = (playhead // 3840 + 1) * 3840  # the next chunk of playback: a rollback may run again
    before = np.zeros((ring.written - later, 2), np.float32)
    ring.read(before, later)
    sched.submit(ControlEvent("style.1.weight", 2.0, quantize="now"))
    sched.fill(later)
    assert sched.rollbacks == 2
    after = np.zeros_like(before)
    ring.read(after, later)
    changed = later + int(np.flatnonzero(np.any(before != after, axis=1))[0])
    _, landed = first_frame_from(later + sched.margin.samples, fit)
    if fit == "resample":
        assert changed == landed > frame + 700, (changed, landed, frame)
    else:  # the stretcher's window reaches back from the frame, never before the margin
        assert later + sched.margin.samples <= changed <= landed and changed > frame + 700, (changed, landed, frame)
    sched.close()


class Level(SynthGenerator):
    """Every sample 0.5 (the synth's state and snapshots kept): the output is the gain envelope."""

    def generate(self, conditioning):
        super().generate(conditioning)
        return np.full((len(conditioning) * FRAME_SAMPLES, 2), 0.5, np.float32)


@FITS
def test_a_master_gain_move_inside_the_lookahead_starts_on_the_margin_sample_not_a_frame(tmp_path, fit) -> None:
    """Master gain shapes the output after the generator, so a rollback starts it on the very
    sample a splice margin after it arrived (not on the next frame), and nothing before changes.
    Read as the ratio to the same render without the move (the stretcher does not keep a
    constant exactly constant)."""
    auto = tmp_path / "gain.yaml"
    auto.write_text("events:\n  - {bar: 2, beat: 2.3, target: master.gain, value: 0.5, quantize: now}\n")
    outs = []
    for name, automation in (("ref", []), ("gain", load_automation(auto))):
        result = render(two_styles(), bars=3, output=tmp_path / f"{name}.wav", generator=Level(), automation=automation,
                        fit=fit)
        outs.append(soundfile.read(tmp_path / f"{name}.wav", dtype="float32", always_2d=True)[0][:, 0])
    gain = outs[1] / outs[0]
    arrived = issued(96000 + 1.3 * 24000)
    first = int(np.flatnonzero(gain != 1.0)[0])
    assert result.rollbacks == 1
    assert first == arrived + MARGIN + 1, (first, arrived + MARGIN, first % FRAME_SAMPLES)  # the ramp leaves 1.0 there
    assert gain[-1] == pytest.approx(0.5)


def _temperatures(gen: Recorder) -> list[float]:
    """The temperature of every frame as it plays, from the first one a move changed."""
    values = [frame.sampling.temperature for frame in gen.frames]
    return [v for i, v in enumerate(values) if i >= next(j for j, w in enumerate(values) if w != values[0])]


def _in_arrival_order(values: list[float], last: float) -> bool:
    """Moves sent rising, then `last`: the frames follow them in the order they were sent."""
    cut = values.index(last)
    return all(a <= b for a, b in zip(values[:cut], values[1:cut])) and set(values[cut:]) == {last}


@FITS
def test_a_late_fader_move_never_lands_after_the_one_sent_after_it(fit) -> None:
    """A rollback runs, and the next is held for a chunk of playback while a raw fader goes on
    (moves 250-500 samples apart); by the time it runs, the playhead has passed some of them,
    which move on keeping their spacing. They used to pass the fader's last move (0.05), left
    where it was, and land after it: the engine stayed at 0.89-0.9, not where the fader was let go.
    Now every frame follows the moves in the order they were sent, and 0.05 is in force from a
    frame inside the look-ahead (it is not delayed by the moves before it)."""
    from engine.audio.ring import PlaybackRing
    from engine.schedule.scheduler import Scheduler
    from engine.style.embedder import HashEmbedder

    gen = Recorder()
    sched = Scheduler.for_patch(two_styles(), gen, ring=PlaybackRing(), embedder=HashEmbedder(), lookahead_ms=200.0, fit=fit)
    playhead = 0
    sched.playhead_now = lambda: playhead

    def play_to(sample: int) -> None:
        nonlocal playhead
        while playhead < sample:
            sched.fill(playhead)
            playhead = min(playhead + 64, sample)
        sched.fill(playhead)

    def move(value: float) -> None:
        sched.submit(ControlEvent("sampling.temperature", value, quantize="now"))

    chunk = 2 * FRAME_SAMPLES  # one rollback per chunk of playback
    start = 30 * chunk
    play_to(start)
    move(0.5)
    play_to(start)
    assert sched.rollbacks == 1
    move(0.6)
    play_to(start + 64)
    move(0.7)
    play_to(start + 576)
    for i, sample in enumerate(range(start + 1000, start + chunk, 250)):
        move(0.8 + i / 100)
        play_to(sample)
    move(0.05)
    sent = playhead
    play_to(start + 10 * chunk)
    sched.close()
    assert sched.rollbacks == 2  # the held one ran in the next chunk
    assert sched.state.sampling.temperature == 0.05
    values = _temperatures(gen)
    assert _in_arrival_order(values, 0.05), values
    starts = frame_starts(fit, Timeline.start(120.0, 4), 4)
    landed = starts[[frame.sampling.temperature for frame in gen.frames].index(0.05)]
    assert landed < sent + 9600, (landed - sent)  # inside the 200 ms look-ahead from when it was sent


@pytest.mark.parametrize("seed", [1, 2, 5])  # each failed in both fits before the fix
@FITS
def test_after_a_flood_of_moves_with_rollbacks_the_last_move_is_in_force(fit, seed) -> None:
    """A web page's or OSC flood at a scheduler: bursts of 0-5 moves of one control between turns
    of the loop 1-21 ms apart, for about 3 s, then a last one. The frames follow the moves in the
    order they were sent, and the last is in force (the frames used to go back to an earlier value)."""
    import random

    from engine.audio.ring import PlaybackRing
    from engine.schedule.scheduler import Scheduler
    from engine.style.embedder import HashEmbedder

    rng = random.Random(seed)
    gen = Recorder()
    patch = parse_patch({"tempo": 240, "meter": 4, "seed": 1, "style": [{"text": "warm pad"}, {"text": "glass", "weight": 0.0}]})
    sched = Scheduler.for_patch(patch, gen, ring=PlaybackRing(), embedder=HashEmbedder(), lookahead_ms=200.0, fit=fit)
    playhead = 0
    sched.playhead_now = lambda: playhead
    sent = 0
    while playhead < 3 * SAMPLE_RATE:
        for _ in range(rng.choice([0, 0, 1, 1, 2, 5])):
            sent += 1
            sched.submit(ControlEvent("sampling.temperature", 0.1 + sent / 1000, quantize="now"))
        sched.fill(playhead)
        playhead += rng.choice([64, 256, 256, 512, 1024])
    sched.submit(ControlEvent("sampling.temperature", 0.05, quantize="now"))
    for _ in range(200):
        sched.fill(playhead)
        playhead += 256
    sched.close()
    assert sched.rollbacks > 20
    assert sched.state.sampling.temperature == 0.05
    assert _in_arrival_order(_temperatures(gen), 0.05)
