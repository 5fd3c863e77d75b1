"""The control layer on a running engine, built the way `backline run`/`serve` build it.

The service runner starts the real engine (synth generator, the real-time WAV sink, since
this machine has no sound card) and its ControlSurfaces; the tests talk to it over real
UDP OSC and read feedback with liblo's oscdump. A quantized patch load is checked on the
rendered samples against offline renders (`render()`, the same engine with an offline sink): bar N matches the
old patch to its last sample and bar N+1 the new patch from its first.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import soundfile
from pythonosc.osc_message import OscMessage

from control_helpers import LIBLO, FrameLog, client_socket, dumped, oscdump, send, serving, wait_for
from engine.automation import TimedEvent
from engine.engine import Engine
from engine.generator.synth import SynthGenerator
from engine.params import ControlEvent
from engine.patch import load_patch
from engine.render import render
from engine.service.runner import Service
from engine.units import SAMPLE_RATE

REPO = Path(__file__).resolve().parents[2]
LOOKAHEAD_MS = 200
# 240 BPM in 4/4: a 1 s bar of exactly 25 frames; B at 200 BPM: 1.2 s, 30 frames (no resampling)
PATCH_A = """name: a
tempo: 240
meter: 4
seed: 3
style:
  - {text: "warm analog synth groove, round bass", weight: 1.0}
  - {text: "lo-fi hip hop, dusty drums", weight: 0.5}
sampling: {temperature: 1.0, top_k: 40, cfg_style: 3.0}
"""
PATCH_B = """name: b
tempo: 200
meter: 4
seed: 3
style:
  - {text: "warm analog synth groove, round bass", weight: 0.25}
  - {text: bright glassy arpeggio, weight: 0.75}
sampling: {temperature: 2.0, top_k: 40, cfg_style: 5.0}
"""

SMOOTHED = """info: {name: smoothed test fader}
controls:
- name: temperature
  match: {osc: /test/temperature}
  target: sampling.temperature
  options: {range: [0.0, 2.0], smoothing: 0.2}
"""


@dataclass
class Running:
    service: Service
    engine: Engine
    osc: tuple[str, int]
    wav: Path
    changes: list[tuple[str, object, str, int]]  # (path, value, source, sample it applied at)
    patches: Path
    frames: FrameLog


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    patches = tmp_path / "patches"
    patches.mkdir()
    (patches / "a.yaml").write_text(PATCH_A)
    (patches / "b.yaml").write_text(PATCH_B)
    smoothed = tmp_path / "smoothed.yaml"
    smoothed.write_text(SMOOTHED)
    config = tmp_path / "config.yaml"
    config.write_text(
        f"output: wav:{tmp_path / 'out.wav'}\npatch: {patches / 'a.yaml'}\npatches: {patches}\n"
        f"state_file: null\nlookahead_ms: {LOOKAHEAD_MS}\nfade_s: 0.05\nosc: {{port: 0}}\nmidi: {{enabled: false}}\n"
        f"mappings: [{REPO / 'mappings/osc-generic.yaml'}, {smoothed}]\nlearn_file: {tmp_path / 'learned.yaml'}\n"
    )
    changes: list[tuple[str, object, str, int]] = []

    frames: list[FrameLog] = []

    def record(service: Service):
        frames.append(FrameLog(service.engine))  # before the loop's first frame
        # runs on the scheduling thread, where next_frame_time() is the sample the change applies at
        return lambda p, v, s: changes.append((p, v, s, service.engine.scheduler.next_frame_time()))

    with serving(config, listener=record) as service:
        assert service.control is not None and service.control.osc is not None
        yield Running(service, service.engine, service.control.osc.address, tmp_path / "out.wav", changes, patches,
                      frames[0])


def offline(patches: Path, *, bars: int, switch_at: int | None = None) -> np.ndarray:
    """`backline render` of a.yaml (the same engine with an offline sink), optionally with an
    automation `patch.load b` issued at the start of bar `switch_at` (0-based)."""
    out = patches / f"offline-{bars}-{switch_at}.wav"
    automation = [] if switch_at is None else [TimedEvent(switch_at, Fraction(0), ControlEvent("patch.load", "b"))]
    render(load_patch(patches / "a.yaml"), bars=bars, output=out, generator=SynthGenerator(), automation=automation,
           lookahead_ms=LOOKAHEAD_MS, patch_set=sorted(patches.glob("*.yaml")))
    return soundfile.read(out, dtype="float32", always_2d=True)[0]


def bar_containing(engine: Engine, *, after_s: float, within_s: float) -> int:
    """Wait until the playhead is `after_s`..`within_s` into a bar (past bar 0) and return that bar."""
    tl = engine.scheduler.timeline

    def early_in_bar() -> bool:
        p = engine.sink.playhead
        bar = tl.bar_at(p)
        return bar >= 1 and after_s * SAMPLE_RATE <= p - tl.bar_start(bar) <= within_s * SAMPLE_RATE

    assert wait_for(early_in_bar, 10), "the engine did not play"
    return tl.bar_at(engine.sink.playhead)


@pytest.mark.skipif(not LIBLO, reason="liblo-tools (oscsend, oscdump) not installed")
def test_quantized_patch_load_lands_on_the_next_bar_and_is_fed_back(running: Running):
    engine, changes = running.engine, running.changes
    with oscdump() as (dump_port, dump), client_socket() as a, client_socket() as b:
        send(a, running.osc, "/backline/register", dump_port)  # surface A listens at oscdump's port
        b_source = f"osc:127.0.0.1:{b.getsockname()[1]}"
        send(b, running.osc, "/backline/register")  # surface B gets feedback at its own address
        assert wait_for(lambda: len(running.service.control.osc.clients) == 2)
        # a value B sends reaches A (oscdump) but is not echoed back to B
        send(b, running.osc, "/backline/mean/weight", 0.3)
        assert wait_for(lambda: ("/backline/mean/weight", (0.3,)) in map(dumped, dump))
        sent_bar = bar_containing(engine, after_s=0.05, within_s=0.35)
        send(b, running.osc, "/backline/patch/load", "b")
        assert wait_for(lambda: any(c[0] == "patch.load" for c in changes), 10)
        expected = {("/backline/tempo/bpm", (200.0,)), ("/backline/style/0/weight", (0.25,)),
                    ("/backline/style/1/weight", (0.75,)), ("/backline/style/1/text", ("bright glassy arpeggio",)),
                    ("/backline/sampling/temperature", (2.0,)), ("/backline/sampling/cfg_style", (5.0,)),
                    ("/backline/mean/weight", (0.0,)), ("/backline/surface/fader/1", (0.25,)),
                    ("/backline/surface/fader/2", (0.75,)), ("/backline/patch/load", ("b",))}

        assert wait_for(lambda: expected <= set(map(dumped, dump))), "\n".join(dump)
        b.settimeout(0.5)
        to_b: list[tuple[str, list]] = []
        try:
            while True:
                msg = OscMessage(b.recv(65536))
                to_b.append((msg.address, msg.params))
        except TimeoutError:
            pass
        # wait until bar N+2 has been played, then stop
        applied = next(c for c in changes if c[0] == "patch.load")
        tl = engine.scheduler.timeline
        landed = tl.bar_at(applied[3])
        end = tl.bar_start(landed + 1)
        assert wait_for(lambda: engine.sink.playhead > end + SAMPLE_RATE // 10, 10)
    running.service.terminate()

    # it lands on the bar line right after the bar it was sent in, at that bar's first sample
    assert landed == sent_bar + 1
    assert applied[3] == tl.bar_start(landed)
    assert applied[1:3] == ("b", b_source)
    # every value the patch changed is notified with source "patch", at the same sample; unchanged ones are not
    patch_changes = {p: v for p, v, s, at in changes if s == "patch"}
    assert all(at == applied[3] for p, v, s, at in changes if s == "patch")
    assert patch_changes == {"tempo.bpm": 200.0, "style.0.weight": 0.25, "style.1.weight": 0.75,
                             "style.1.text": "bright glassy arpeggio", "sampling.temperature": 2.0,
                             "sampling.cfg_style": 5.0, "mean.weight": 0.0}
    # B hears the new values (its faders follow) but not its own mean/weight or patch/load back
    assert ("/backline/mean/weight", [0.0]) in to_b
    assert ("/backline/tempo/bpm", [200.0]) in to_b
    assert ("/backline/mean/weight", [pytest.approx(0.3)]) not in to_b
    assert not any(address == "/backline/patch/load" for address, _ in to_b)

    # the rendered samples: bar N is patch a to its last sample, bar N+1 is patch b from its first
    start = applied[3]
    played, _ = soundfile.read(running.wav, dtype="float32", always_2d=True)
    assert len(played) >= end
    old = offline(running.patches, bars=landed + 2)[:end]  # a bar more: patch a's bars are shorter
    new = offline(running.patches, bars=landed + 2, switch_at=landed - 1)[:end]
    differs = np.flatnonzero(np.any(played[:end] != old, axis=1))
    # the stretcher's window reaches back: at a bar line without a hit on it the new patch may be
    # heard up to its reach (26.5 ms) early, at the window's tail (a hit's line is exact)
    reach = engine.scheduler.fitter.reach
    print(f"\npatch b heard {(start - differs[0]) / 48:.2f} ms before its bar line")
    assert start - reach <= differs[0] <= start
    np.testing.assert_array_equal(played[tl.bar_start(landed - 1):differs[0]], old[tl.bar_start(landed - 1):differs[0]])
    np.testing.assert_array_equal(played[differs[0]:end], new[differs[0]:end])
    assert engine.ring.underruns == 0


def status_reply(sock, dest) -> dict[str, object]:
    """`/backline/status` over UDP, as a surface asks for it, by STATUS_FIELDS name."""
    from engine.control.osc_space import STATUS_FIELDS

    for _ in range(5):
        send(sock, dest, "/backline/status")
        try:
            while True:
                msg = OscMessage(sock.recv(65536))
                if msg.address == "/backline/status":
                    return dict(zip((name for name, _, _ in STATUS_FIELDS), msg.params))
        except TimeoutError:
            continue
    raise AssertionError("no /backline/status reply")


def test_a_smoothed_fader_sweeps_the_parameter_frame_by_frame(running: Running):
    """smoothing: 0.2 s is 5 frames: the generator gets 1.2, 1.4, 1.6, 1.8, 2.0 on consecutive
    frames (the first move after start-up glides from the patch's value, it does not jump). Each
    step is rolled back into the look-ahead; when the playhead and the adaptive margin have moved
    past a step's frame by the time its rollback runs, the step before is held one frame more and
    the ramp goes on from the next open frame, its steps still a frame apart (they all used to
    land in that one frame, the last winning: a step lost)."""
    frames = running.frames.frames
    assert wait_for(lambda: len(frames) > 30, 10)
    with client_socket() as c:
        generated, playing = len(frames), running.engine.sink.playhead // 1920
        send(c, running.osc, "/test/temperature", 1.0)  # native 2.0; the patch plays 1.0
        assert wait_for(lambda: any(f.sampling.temperature == pytest.approx(2.0) for f in list(frames)), 10)
        reached = next(i for i, f in enumerate(list(frames)) if f.sampling.temperature == pytest.approx(2.0))
        assert wait_for(lambda: len(frames) > reached + 10, 10)
    temps = [f.sampling.temperature for f in list(frames)]
    first = next(i for i, t in enumerate(temps) if t != 1.0)
    assert playing < first < generated, (playing, first, generated)  # inside the look-ahead: rolled back
    ramp = temps[first:first + 6]
    steps = [t for i, t in enumerate(ramp) if i == 0 or t != pytest.approx(ramp[i - 1])]
    print(f"\nsmoothed ramp, frame by frame: {[round(t, 3) for t in ramp]}")
    assert steps[:5] == pytest.approx([1.2, 1.4, 1.6, 1.8, 2.0]), ramp  # every step, in order, none lost
    reached = first + next(i for i, t in enumerate(ramp) if t == pytest.approx(2.0))
    assert reached - first <= 5  # at most one frame held
    assert all(t == pytest.approx(2.0) for t in temps[reached:])


def test_patch_load_by_number_and_name_inside_the_set_only(running: Running, tmp_path: Path):
    """`/backline/patch/load i 1` loads the set's second file (0-based) at the next bar; a path,
    an index outside the set or an unknown name is refused and counted, and the patch plays on."""
    outside = tmp_path / "outside.yaml"
    outside.write_text(PATCH_B.replace("name: b", "name: outside"))
    engine = running.engine
    with client_socket() as c:
        before = status_reply(c, running.osc)
        assert before["patch"] == "a"
        bar = bar_containing(engine, after_s=0.05, within_s=0.35)
        send(c, running.osc, "/backline/patch/load", 1)
        assert wait_for(lambda: any(ch[0] == "patch.load" for ch in running.changes), 10)
        applied = next(ch for ch in running.changes if ch[0] == "patch.load")
        tl = engine.scheduler.timeline
        assert applied[1] == "b" and applied[3] == tl.bar_start(bar + 1)
        assert wait_for(lambda: status_reply(c, running.osc)["patch"] == "b", 5)
        for bad in (str(outside), "../outside", "outside.yaml", 2, -1, "nope"):
            send(c, running.osc, "/backline/patch/load", bad)
        send(c, running.osc, "/backline/patch/load", "a")  # by name: the set's a.yaml
        assert wait_for(lambda: [ch[1] for ch in running.changes if ch[0] == "patch.load"] == ["b", "a"], 10)
        send(c, running.osc, "/backline/patch/load", 1.0)  # a whole float (TouchOSC sends floats) is an index
        assert wait_for(lambda: [ch[1] for ch in running.changes if ch[0] == "patch.load"] == ["b", "a", "b"], 10)
        after = status_reply(c, running.osc)
    assert after["patch"] == "b"
    assert after["rejected"] - before["rejected"] == 6
    assert engine.refused == 6


def test_a_beat_quantized_change_lands_with_that_beats_drum_hit(running: Running):
    """`/backline/sampling/temperature f V s beat`: each value first reaches the generator on the
    frame that carries its beat's tempo-lock drum hit (the frame nearest the beat, at 240 BPM
    beats fall a quarter and a half into frames), never the frame after it."""
    from engine.conditioning import DRUM_HIT

    frames = running.frames.frames
    values = (1.25, 1.5, 1.75, 2.0, 2.25, 2.5)
    assert wait_for(lambda: len(frames) > 30, 10)
    with client_socket() as c:
        for value in values:
            send(c, running.osc, "/backline/sampling/temperature", value, "beat")
            assert wait_for(lambda: any(f.sampling.temperature == value for f in list(frames)), 5)
            first = next(i for i, f in enumerate(list(frames)) if f.sampling.temperature == value)
            # heard before the next is sent (else the next, for the same beat, replaces it: it lands inside the look-ahead)
            assert wait_for(lambda: running.engine.sink.playhead > (first + 1) * 1920, 5)
    temps = [f.sampling.temperature for f in list(frames)]
    for value in values:
        first = temps.index(value)
        assert frames[first].drum == DRUM_HIT and temps[first - 1] != value, (value, first)


def test_a_tempo_change_asked_for_now_is_refused_with_its_reason(running: Running):
    """Tempo starts a new segment at a bar line: `now` or `beat` on it is refused and counted
    (never silently moved to a bar), and the tempo stays; with `bar` it is taken."""
    with client_socket() as c:
        before = status_reply(c, running.osc)
        send(c, running.osc, "/backline/tempo/bpm", 180.0, "now")
        send(c, running.osc, "/backline/meter/beats_per_bar", 3, "beat")
        assert wait_for(lambda: status_reply(c, running.osc)["rejected"] == before["rejected"] + 2, 5)
        assert running.service.control.dispatcher.rejects.counts()["bad_value"] == 2
        assert not any(ch[0] in ("tempo.bpm", "meter.beats_per_bar") for ch in running.changes)
        send(c, running.osc, "/backline/tempo/bpm", 180.0, "bar")
        assert wait_for(lambda: status_reply(c, running.osc)["tempo"] == 180.0, 10)


def test_a_change_inside_the_lookahead_is_heard_a_margin_after_it_arrives(running: Running):
    """`/backline/sampling/temperature 1.7` over UDP while the 200 ms look-ahead is full: rollback
    regenerates it, so the generator gets the value on a frame well inside the look-ahead; the
    recorded samples are exactly the offline render with that change planned for that frame
    from the start (the splice adds nothing); `/backline/status` reports the margin and the rollback."""
    frames, engine = running.frames.frames, running.engine
    assert wait_for(lambda: len(frames) > 30, 10)
    with client_socket() as c:
        before = status_reply(c, running.osc)
        sent = engine.sink.playhead
        send(c, running.osc, "/backline/sampling/temperature", 1.7)
        assert wait_for(lambda: any(f.sampling.temperature == pytest.approx(1.7) for f in list(frames)), 5)
        after = status_reply(c, running.osc)
        first = next(i for i, f in enumerate(list(frames)) if f.sampling.temperature == pytest.approx(1.7))
        landed = first * 1920  # 240 BPM: 25 frames of exactly 1920 samples a bar
        end = landed + SAMPLE_RATE
        assert wait_for(lambda: engine.sink.playhead > end + SAMPLE_RATE // 10, 10)
    running.service.terminate()
    assert landed - sent < LOOKAHEAD_MS * SAMPLE_RATE // 1000, f"heard {(landed - sent) / 48:.0f} ms after it was sent"
    assert after["rollbacks"] > before["rollbacks"] and 0 < after["margin_ms"] < LOOKAHEAD_MS
    played, _ = soundfile.read(running.wav, dtype="float32", always_2d=True)
    planned = running.patches / "planned.wav"
    pinned = [TimedEvent(0, Fraction(0), ControlEvent("sampling.temperature", 1.7, quantize="now", at=landed))]
    render(load_patch(running.patches / "a.yaml"), bars=end // SAMPLE_RATE + 1, output=planned, generator=SynthGenerator(),
           automation=pinned, lookahead_ms=LOOKAHEAD_MS, rollback=False)
    np.testing.assert_array_equal(played[:end], soundfile.read(planned, dtype="float32", always_2d=True)[0][:end])
    assert engine.ring.underruns == 0
