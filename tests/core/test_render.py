import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

from bench.onsets import onsets
from engine.automation import load_automation
from engine.generator.synth import SynthGenerator
from engine.patch import load_patch, parse_patch
from engine.render import render
from engine.schedule.fit import frame_starts
from engine.timeline import Timeline

REPO = Path(__file__).resolve().parents[2]


def patch(tempo="120", meter=4, **extra):
    data = {"tempo": float(tempo), "meter": meter, "seed": 1, "style": [{"text": "test groove"}], **extra}
    return parse_patch(data)


def do_render(tmp_path, p, bars, automation_yaml=None, name="out.wav"):
    events = []
    if automation_yaml:
        auto = tmp_path / f"{name}.auto.yaml"
        auto.write_text(automation_yaml)
        events = load_automation(auto)
    result = render(p, bars=bars, output=tmp_path / name, generator=SynthGenerator(), automation=events)
    audio, rate = soundfile.read(tmp_path / name, dtype="float32")
    assert rate == 48000
    return result, audio


@pytest.mark.parametrize("tempo", ["120", "91.3", "133.33"])
def test_render_length_is_exactly_bars_times_bar_length(tmp_path, tempo) -> None:
    result, audio = do_render(tmp_path, patch(tempo), 6)
    expected = Timeline.start(tempo, 4).bar_start(6)
    assert len(audio) == result.samples == expected
    assert result.underruns == 0


@pytest.mark.parametrize("tempo", ["91.3", "133.33", "174"])
def test_synth_onsets_land_within_20ms_of_the_beat_grid(tmp_path, tempo) -> None:
    _, audio = do_render(tmp_path, patch(tempo, sampling={"temperature": 0.0}), 8)
    timeline = Timeline.start(tempo, 4)
    found = onsets(audio[:, 0])
    beats = np.array([timeline.beat_start(b) for b in range(32)])
    assert len(found) == len(beats)
    errors_ms = np.abs(found - beats) / 48
    assert errors_ms.max() <= 20.5  # a frame is 40 ms: the nearest frame is at most 20 ms off
    assert np.abs(found[::4] - beats[::4]).max() <= 96  # downbeats start on the bar line (5 ms splice fade at most)


def test_tempo_change_mid_render_lands_on_a_bar_line(tmp_path) -> None:
    automation = "events:\n  - {bar: 3, beat: 2, target: tempo.bpm, value: 150}\n"
    result, audio = do_render(tmp_path, patch("120", sampling={"temperature": 0.0}), 6, automation)
    # Issued in bar 3, it applies at the next bar line: bar 4 (engine bar 3) starts the new tempo.
    assert result.bar_starts[:4] == (0, 96000, 192000, 288000)
    assert result.bar_starts[4] - result.bar_starts[3] == 76800  # a 150 BPM bar
    assert len(audio) == result.bar_starts[6]
    found = onsets(audio[:, 0])
    assert 288000 in range(found[12] - 48, found[12] + 48)  # first beat of the new tempo on the line
    assert abs(np.diff(found[12:16]).mean() - 19200) < 960


def test_bar_quantized_change_is_audible_from_exactly_that_bar(tmp_path) -> None:
    for tempo in ("120", "91.3"):
        p = patch(tempo, style=[{"text": "a"}, {"text": "b", "weight": 0.0}])
        _, plain = do_render(tmp_path, p, 6, name=f"plain{tempo}.wav")
        automation = "events:\n  - {bar: 3, beat: 3, target: style.1.weight, value: 3.0, quantize: bar}\n"
        _, changed = do_render(tmp_path, p, 6, automation, name=f"changed{tempo}.wav")
        bar4 = Timeline.start(tempo, 4).bar_start(3)
        assert np.array_equal(plain[:bar4], changed[:bar4]), "the change was audible before its bar"
        diff = np.abs(plain[bar4:] - changed[bar4:]).max(axis=1)
        assert diff[:48].max() > 1e-3, "the change was not audible in the bar's first millisecond"
        assert np.flatnonzero(diff > 1e-6)[0] < 8


def test_style_ramp_moves_gradually_over_the_given_beats(tmp_path) -> None:
    p = patch("120", style=[{"text": "a"}, {"text": "b", "weight": 0.0}], ramp={"bars": 2}, tempo_lock="none")
    _, plain = do_render(tmp_path, p, 6, name="p.wav")
    _, ramped = do_render(tmp_path, p, 6, "events:\n  - {bar: 2, target: style.1.weight, value: 4.0, quantize: bar}\n", name="r.wav")
    assert np.array_equal(plain[:96000], ramped[:96000])


def test_style_changes_landing_together_are_mixed_once_into_their_final_values(tmp_path, monkeypatch) -> None:
    """A fader sweep brings several style changes per frame; the mix is recomputed once, from the last values."""
    from engine.style.bank import StyleBank

    p = patch("120", style=[{"text": "a"}, {"text": "b", "weight": 0.0}], ramp={"beats": 1})
    final = "  - {bar: 2, target: style.0.weight, value: 0.5, quantize: bar}\n  - {bar: 2, target: style.1.weight, value: 3.0, quantize: bar}\n"
    _, once = do_render(tmp_path, p, 4, "events:\n" + final, name="once.wav")
    mixes = []
    real_mix = StyleBank.mix
    monkeypatch.setattr(StyleBank, "mix", lambda self, state: mixes.append(state) or real_mix(self, state))
    sweep = ("events:\n  - {bar: 2, target: style.0.weight, value: 0.1, quantize: bar}\n"
             "  - {bar: 2, target: style.1.weight, value: 1.0, quantize: bar}\n"
             "  - {bar: 2, target: style.0.weight, value: 0.3, quantize: bar}\n" + final)
    _, swept = do_render(tmp_path, p, 4, sweep, name="swept.wav")
    assert np.array_equal(once, swept)
    assert [s.style_weights for s in mixes] == [(1.0, 0.0), (0.5, 3.0)]  # the patch's start, then the sweep once


class DrumRecorder(SynthGenerator):
    """The synth, noting the drum state of every frame by frame index (a rollback's restore cuts
    the frames it generates again, so `drums` is what plays)."""

    def __init__(self) -> None:
        super().__init__()
        self.drums: list[int] = []

    def generate(self, conditioning):
        self.drums += [c.drum for c in conditioning]
        return super().generate(conditioning)

    def snapshot(self):
        return super().snapshot(), len(self.drums)

    def restore(self, snapshot) -> None:
        super().restore(snapshot[0])
        del self.drums[snapshot[1]:]


FITS = pytest.mark.parametrize("fit", ["stretch", "resample"])


def bar_frames(fit: str) -> int:
    """Frames in a 120 BPM bar: 48 stretched (12 a beat), 50 resampled."""
    return frame_starts(fit, Timeline.start("120", 4), 2).index(96000)


def hit_frames(tmp_path, beats: list[float], fit: str = "stretch") -> list[int]:
    """Frames with a drum hit when pads are struck at `beats` of bar 2 (120 BPM, no beat lock)."""
    from engine.conditioning import DRUM_HIT

    events = "".join(f"  - {{bar: 2, beat: {1 + b}, target: drum.hit}}\n" for b in beats)
    gen = DrumRecorder()
    render(patch("120", tempo_lock="none"), bars=4, output=tmp_path / "pads.wav", generator=gen,
           automation=load_automation_text(tmp_path, "events:\n" + events), fit=fit)
    return [i for i, d in enumerate(gen.drums) if d == DRUM_HIT]


@FITS
def test_pads_struck_together_are_one_hit(tmp_path, fit) -> None:
    hits, bar = hit_frames(tmp_path, [0.0] * 50, fit), bar_frames(fit)
    # heard when bar 2 plays, they land on the first frame not yet generated: one look-ahead later
    assert len(hits) == 1 and bar < hits[0] <= bar + 7, f"50 hits struck together sounded on frames {hits}"


def test_a_roll_keeps_its_rhythm_at_frame_resolution(tmp_path) -> None:
    """32nd notes at 120 BPM are 62.5 ms apart (1.56 frames): every one sounds, each on its own frame."""
    hits = hit_frames(tmp_path, [i / 8 for i in range(8)])
    assert len(hits) == 8, f"8 hits of a roll sounded on frames {hits}"
    assert set(np.diff(hits)) <= {1, 2} and hits[-1] - hits[0] in (10, 11, 12), hits  # 7 x 1.5625 = 10.9 frames


@FITS
@pytest.mark.parametrize("onset", [0.0, 0.04, 0.1])
@pytest.mark.parametrize("per_beat", [100, 2500])
def test_a_flood_of_hits_stops_sounding_when_it_stops(tmp_path, per_beat, onset, fit) -> None:
    """Hits 5 ms apart (about one per audio block) or 5,000 a second (many per block) over one
    bar: a hit on every frame while they come, none a look-ahead after. The frames of one
    generator call are conditioned together, so the call the flood starts in can only carry
    the hits heard before it ran: at most its second frame goes without (a 40 ms onset),
    whatever the flood's phase against the calls (three phases here)."""
    hits, bar = hit_frames(tmp_path, [onset + i / per_beat for i in range(round((4 - onset) * per_beat))], fit), bar_frames(fit)
    first, second, last = hits[0], hits[1], hits[-1]
    assert second - first <= 2 and hits[1:] == list(range(second, last + 1)), f"frames without a hit: {hits}"
    assert bar < first <= bar + 8 and 2 * bar <= last <= 2 * bar + 7, \
        f"the flood (frames {bar}-{2 * bar - 1}) sounded on frames {first}-{last}"


@FITS
def test_hits_that_arrive_while_the_generator_runs_keep_their_spacing(fit) -> None:
    """Live, the scheduler drains hits after a chunk it took a while to generate; each hit was
    stamped with the output sample playing when it arrived (the sink's playhead), so a roll that
    arrived meanwhile is not squashed into one frame."""
    from engine.audio.ring import PlaybackRing
    from engine.conditioning import DRUM_HIT
    from engine.units import FRAME_SAMPLES
    from engine.params import ControlEvent
    from engine.schedule.scheduler import Scheduler
    from engine.style.embedder import HashEmbedder

    playing = [0]
    gen = DrumRecorder()
    sched = Scheduler.for_patch(patch("120", tempo_lock="none"), gen, ring=PlaybackRing(), embedder=HashEmbedder(),
                                lookahead_ms=200, fit=fit)
    sched.playhead_now = lambda: playing[0]
    sched.fill(0)
    frame = 96000 // bar_frames(fit)  # output samples a frame plays for
    for heard in (100, 100 + 3 * frame, 100 + 6 * frame):  # three hits 3 frames apart, all before the next fill
        playing[0] = heard
        sched.submit(ControlEvent("drum.hit"))
    sched.fill(FRAME_SAMPLES)
    sched.fill(12 * FRAME_SAMPLES)
    sched.close()
    hits = [i for i, d in enumerate(gen.drums) if d == DRUM_HIT]
    assert len(hits) == 3 and list(np.diff(hits)) == [3, 3], f"a roll 3 frames apart sounded on frames {hits}"


def load_automation_text(tmp_path, text):
    path = tmp_path / "auto.yaml"
    path.write_text(text)
    return load_automation(path)


def test_cli_render_follows_the_readme(tmp_path) -> None:
    out = tmp_path / "demo.wav"
    proc = subprocess.run(
        [sys.executable, "-m", "engine", "render", "--patch", "patches/default.yaml", "--bars", "4", "-o", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert soundfile.info(str(out)).frames == 4 * 96000


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "patches").glob("*.yaml")))
def test_every_shipped_patch_loads_and_renders(tmp_path, name) -> None:
    p = load_patch(REPO / "patches" / name)
    result, audio = do_render(tmp_path, p, 2)
    assert len(audio) == Timeline.start(p.bpm, p.beats_per_bar).bar_start(2)
    assert np.abs(audio).max() > 0.05


def test_transport_stop_fades_to_silence_at_the_bar_and_play_comes_back_at_its_bar(tmp_path) -> None:
    """Stop and play are bar-quantized fades on the running stream, not an exit: the clock keeps going."""
    p = patch("120")
    _, plain = do_render(tmp_path, p, 7, name="plain.wav")
    automation = ("events:\n  - {bar: 2, beat: 3, target: transport.stop}\n"
                  "  - {bar: 4, beat: 2, target: transport.play}\n")
    _, stopped = do_render(tmp_path, p, 7, automation, name="stopped.wav")
    grid = Timeline.start("120", 4)
    bar3, bar4, bar5 = (grid.bar_start(k) for k in (2, 3, 4))
    assert np.array_equal(plain[:bar3], stopped[:bar3]), "the stop was audible before its bar"
    fade = 2400  # GAIN_RAMP_SAMPLES: 50 ms
    assert np.abs(stopped[bar3 + fade:bar5]).max() == 0.0, "not silent after the stop's fade"
    assert np.abs(plain[bar3:bar4]).max() > 0.1  # there was something to silence
    assert np.abs(stopped[bar3:bar3 + fade]).max() > 0.0, "the stop cut instead of fading"
    assert np.abs(stopped[bar5:bar5 + 480]).max() > 0.0, "play did not start on its bar line"
    assert np.abs(stopped[bar5 + fade:]).max() > 0.1, "play did not bring the sound back"


def test_a_flood_of_bad_changes_is_logged_at_a_rate_not_per_event(caplog) -> None:
    """Changes that fail when applied (a slot the patch does not have) are counted, and logged once per interval."""
    import logging

    from engine.audio.ring import PlaybackRing
    from engine.params import ControlEvent
    from engine.schedule.scheduler import Scheduler
    from engine.style.embedder import HashEmbedder

    scheduler = Scheduler.for_patch(patch("120"), SynthGenerator(), ring=PlaybackRing(), embedder=HashEmbedder(),
                                    lookahead_ms=200.0)
    caplog.set_level(logging.WARNING, logger="engine.schedule.scheduler")
    try:
        for k in range(200):
            scheduler.submit(ControlEvent("style.7.weight", 0.5, source="test", quantize="now"))
            scheduler.fill(k * 1920)
    finally:
        scheduler.close()
    assert scheduler.errors == 200
    assert 1 <= sum("rejected when applied" in r.message for r in caplog.records) <= 2


def test_tap_tempo_is_timed_by_when_the_taps_were_heard(tmp_path) -> None:
    """Four taps 0.6 s apart (automation at bar 2, beats 1, 2.2, 3.4, 4.6 at 120 BPM) set exactly
    100 BPM from the next bar line: taps are timed by the sample they were heard at, not by
    when a frame's drain handed them on (that made 0.6 s taps read 99-102 BPM live, and
    thousands of BPM in a render)."""
    taps = "".join(f"  - {{bar: 2, beat: {b}, target: tempo.tap}}\n" for b in (1, 2.2, 3.4, 4.6))
    result, _ = do_render(tmp_path, patch("120"), 6, "events:\n" + taps)
    lengths = np.diff(result.bar_starts)
    assert lengths[0] == lengths[1] == 96_000  # 120 BPM while the taps come
    assert lengths[-1] == 115_200  # 4 beats of 0.6 s: exactly 100 BPM


class _Level(SynthGenerator):
    """A generator whose every sample is 0.5: the output is then the gain envelope itself."""

    name = "level"

    def generate(self, conditioning):
        return np.full((len(conditioning) * 1920, 2), 0.5, np.float32)


@FITS
@pytest.mark.parametrize("quantize", ["now", "beat", "bar"])
def test_a_gain_move_ramps_from_the_sample_it_lands_on_and_never_jumps(tmp_path, quantize, fit) -> None:
    """master.gain 1 -> 0.2 at any quantize: the gain glides over 50 ms with no step (read as the
    ratio to the render without the move: the stretcher does not keep a constant exactly constant).
    With the nearest-frame rule a beat change lands up to half a frame before its frame, on audio
    already in the ring; a ramp started there jumped 0.39 of full scale in one sample."""
    auto = tmp_path / "gain.yaml"
    # beat 4 of a 120 BPM bar, resampled, is 37.5 frames in: its nearest frame (38) starts a generator call
    auto.write_text(f"events:\n  - {{bar: 2, beat: 3.3, target: master.gain, value: 0.2, quantize: {quantize}}}\n")
    outs = []
    for name, automation in (("ref", []), ("g", load_automation(auto))):
        render(patch("120"), bars=4, output=tmp_path / f"{name}.wav", generator=_Level(), automation=automation, fit=fit)
        outs.append(soundfile.read(tmp_path / f"{name}.wav", dtype="float32")[0][:, 0].astype(np.float64))
    gain = outs[1] / outs[0]
    steps = np.abs(np.diff(gain))
    ramp_step = 0.8 / 2400
    assert gain[0] == pytest.approx(1.0) and gain[-1] == pytest.approx(0.2)
    assert steps.max() <= ramp_step * 1.01, f"a step of {steps.max():.4f} (the ramp moves {ramp_step:.6f} a sample)"


def test_a_prompt_still_embedding_when_a_smaller_patch_takes_over_is_dropped(tmp_path, caplog) -> None:
    """style.1.text is sent, then a one-slot patch loads at the next bar while the prompt is still
    being embedded (the embedder finishes only once the generator has seen patch one's style):
    the prompt, for the old patch, is dropped and the render plays on to its end. It used to
    stop the engine loop with an IndexError."""
    import threading

    from engine.automation import TimedEvent
    from engine.params import ControlEvent
    from engine.style.embedder import HashEmbedder

    took_over, embedded = threading.Event(), threading.Event()
    one_style = HashEmbedder().embed_text("c")

    class Slow(HashEmbedder):
        def embed_text(self, text):
            if text == "late prompt":
                took_over.wait(10)  # still embedding when patch one takes over
                embedded.set()
            return super().embed_text(text)

    class Watch(SynthGenerator):
        def generate(self, conditioning):
            if not took_over.is_set() and any(np.allclose(c.style, one_style) for c in conditioning):
                took_over.set()  # patch one plays: let the prompt finish, and collect it from the next fill
                embedded.wait(10)
            return super().generate(conditioning)

    two = tmp_path / "two.yaml"
    two.write_text("name: two\ntempo: 120\nstyle:\n  - {text: a}\n  - {text: b}\n")
    one = tmp_path / "one.yaml"
    one.write_text("name: one\ntempo: 120\nstyle:\n  - {text: c}\n")
    automation = [TimedEvent(1, 0, ControlEvent("style.1.text", "late prompt", source="automation")),
                  TimedEvent(1, 1, ControlEvent("patch.load", "one", source="automation"))]
    with caplog.at_level("INFO"):
        # without rollback: with it, the prompt lands a margin after it is ready, while patch two still plays
        result = render(load_patch(two), bars=8, output=tmp_path / "r.wav", generator=Watch(),
                        automation=automation, embedder=Slow(), patch_set=[one, two], rollback=False)
    assert took_over.is_set() and embedded.is_set()
    assert result.samples == result.bar_starts[-1]
    assert "prompt 'late prompt' was for patch two, which no longer plays; dropped" in caplog.text
