"""The magenta generator on the real magenta-rt code path: tiny random weights, MockMusicCoCa, CPU.

MockMusicCoCa (shipped in the magenta-rt wheel) stands in for MusicCoCa because its TFLite
files cannot be downloaded here; the sampler, depthformer and SpectroStream code are real.
"""

from __future__ import annotations

import os
from fractions import Fraction

import numpy as np
import pytest

try:
    import magenta_rt  # noqa: F401
except ImportError as err:
    if os.environ.get("CI"):
        raise
    print(f"skipping magenta tests: magenta-rt is not installed ({err}); pip install 'magenta-rt[jax]==2.0.3'")
    pytest.skip(f"magenta-rt is not installed: {err}", allow_module_level=True)

import jax
from magenta_rt.musiccoca import MockMusicCoCa

from engine.conditioning import NOTE_HELD, NOTE_ONSET, FrameConditioning, Sampling, masked_notes
from engine.errors import GeneratorError
from engine.generator.magenta.generator import MagentaGenerator
from engine.generator.magenta.tokens import CFG_SLICE, DRUM_INDEX, NOTES_SLICE, STYLE_SLICE
from engine.units import FRAME_SAMPLES

pytestmark = pytest.mark.magenta

STYLE_A = np.random.default_rng(1).standard_normal(768).astype(np.float32)
STYLE_B = np.random.default_rng(2).standard_normal(768).astype(np.float32)


@pytest.fixture(scope="module")
def generator(tiny_checkpoint, jax_cache_dir) -> MagentaGenerator:
    gen = MagentaGenerator(
        checkpoint=tiny_checkpoint, style_model="mock", frames_per_call=2, compilation_cache_dir=jax_cache_dir,
        log_tokens=True,
    )
    yield gen
    gen.close()


def frame(style=STYLE_A, *, onset: int | None = None, held: int | None = None, drum: int = -1, sampling=Sampling()):
    notes = masked_notes().copy()
    if onset is not None:
        notes[onset] = NOTE_ONSET
    if held is not None:
        notes[held] = NOTE_HELD
    return FrameConditioning(style=style, notes=notes, drum=drum, sampling=sampling)


CHANGING = [
    frame(),
    frame(),
    frame(onset=60),
    frame(held=60),
    frame(held=60, drum=1),
    frame(sampling=Sampling(temperature=0.7, top_k=5, cfg_style=5.0, cfg_notes=0.0, cfg_drums=3.0)),
    frame(STYLE_B),
    frame(STYLE_B, drum=0),
]


def states_equal(a, b) -> bool:
    return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_per_frame_conditioning_reaches_the_model_in_mrt2_layout(generator: MagentaGenerator) -> None:
    generator.reset(3)
    audio = generator.generate(CHANGING)
    assert audio.shape == (len(CHANGING) * FRAME_SAMPLES, 2) and audio.dtype == np.float32
    fed = generator.fed
    mock = MockMusicCoCa()
    for i in range(len(CHANGING)):
        tokens, temperature, top_k = fed[i]
        assert tokens.shape == (144,)
        expected_style = mock.tokenize(STYLE_B if i >= 6 else STYLE_A)
        np.testing.assert_array_equal(tokens[STYLE_SLICE], expected_style)
        np.testing.assert_array_equal(tokens[NOTES_SLICE], CHANGING[i].notes)
        assert tokens[DRUM_INDEX] == CHANGING[i].drum
        np.testing.assert_array_equal(tokens[CFG_SLICE], CHANGING[i].sampling.cfg_tokens())
        assert (temperature, top_k) == pytest.approx((CHANGING[i].sampling.temperature, CHANGING[i].sampling.top_k))
    assert fed[2][0][12 + 60] == NOTE_ONSET and fed[3][0][12 + 60] == NOTE_HELD and fed[1][0][12 + 60] == -1
    assert list(fed[5][0][CFG_SLICE]) == [30, 5, 4]  # 5.0 -> 30, 0.0 -> 5 (step 0.2), 3.0 -> 4 (step 1)

    # Same seed, constant conditioning: identical until frame 2's change, different after it.
    generator.reset(3)
    steady = generator.generate([frame()] * len(CHANGING))
    first_change = 2 * FRAME_SAMPLES
    # Frame 1's audio already depends on frame 2's tokens (decoder lookahead): compare frame 0 only.
    np.testing.assert_array_equal(audio[:FRAME_SAMPLES], steady[:FRAME_SAMPLES])
    assert not np.array_equal(audio[first_change:], steady[first_change:])


def test_style_tokenized_once_per_embedding(generator: MagentaGenerator) -> None:
    style_c, style_d = np.random.default_rng(9).standard_normal((2, 768)).astype(np.float32)
    generator.reset(0)
    before = generator.tokenize_calls
    generator.generate([frame(style_c)] * 4 + [frame(style_d)] * 4)
    assert generator.tokenize_calls == before + 2
    generator.generate([frame(style_c)] * 3)
    assert generator.tokenize_calls == before + 2


def test_batched_steps_feed_the_same_tokens_as_single_steps(generator: MagentaGenerator) -> None:
    generator.reset(5)
    batched = generator.generate(CHANGING)
    batched_fed = dict(generator.fed)
    batched_state = generator.snapshot().after_guess

    generator.reset(5)
    single = np.concatenate([generator.generate([c]) for c in CHANGING])
    single_fed = dict(generator.fed)
    single_state = generator.snapshot().after_guess

    assert batched_fed.keys() == single_fed.keys()
    for i in batched_fed:
        np.testing.assert_array_equal(batched_fed[i][0], single_fed[i][0])
        assert batched_fed[i][1:] == single_fed[i][1:]
    assert states_equal(batched_state, single_state)  # same sampled tokens, caches and PRNG key
    # Frames whose successor keeps the conditioning were never guessed wrong: equal audio.
    for i in (0, len(CHANGING) - 1):
        span = slice(i * FRAME_SAMPLES, (i + 1) * FRAME_SAMPLES)
        np.testing.assert_array_equal(batched[span], single[span])


def test_snapshot_and_replay_reproduce_exactly(generator: MagentaGenerator) -> None:
    generator.reset(7)
    generator.generate(CHANGING[:4])
    snap = generator.snapshot()
    first = generator.generate(CHANGING[4:])
    generator.restore(snap)
    assert generator.frame == 4
    other = generator.generate([frame(STYLE_B, onset=40)] * 4)
    assert not np.array_equal(other, first)
    generator.restore(snap)
    np.testing.assert_array_equal(generator.generate(CHANGING[4:]), first)


def test_seeds_are_honoured(generator: MagentaGenerator) -> None:
    runs = {}
    for seed in (11, 12, 11):
        generator.reset(seed)
        runs.setdefault(seed, []).append(generator.generate([frame()] * 4))
    np.testing.assert_array_equal(runs[11][0], runs[11][1])
    assert not np.array_equal(runs[11][0], runs[12][0])


def test_missing_weights_name_the_file_and_the_fetch_command(tmp_path) -> None:
    with pytest.raises(GeneratorError) as info:
        MagentaGenerator(size="mrt2_base", magenta_home=tmp_path, style_model="mock", use_compilation_cache=False)
    message = str(info.value)
    assert str(tmp_path / "magenta-rt-v2" / "checkpoints" / "mrt2_base.safetensors") in message
    assert "missing" in message and "backline models fetch base" in message

    corrupt = tmp_path / "mrt2_small.safetensors"
    corrupt.write_bytes(b"\xff" * 64)
    with pytest.raises(GeneratorError, match=r"mrt2_small\.safetensors.*backline models fetch small"):
        MagentaGenerator(checkpoint=corrupt, style_model="mock", use_compilation_cache=False)


def test_a_text_prompt_reaches_the_model_as_its_style_models_tokens(generator: MagentaGenerator, tmp_path,
                                                                    monkeypatch) -> None:
    """render() (what `backline render` runs) embeds a patch's text slot with the generator's own
    style model, MockMusicCoCa here, so every frame's style tokens are that model's tokens for
    the prompt; a hash stand-in's vector would tokenize to something else. A replaced prompt
    (`style.0.text` from an automation file) gets the style model's tokens too, and both
    embeddings are cached on disk under the model's version."""
    from engine.automation import TimedEvent
    from engine.params import ControlEvent
    from engine.patch import parse_patch
    from engine.render import render

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    first, second = "dub techno chords, deep echo", "bright glassy arpeggio"
    patch = parse_patch({"name": "p", "tempo": 240, "meter": 4, "seed": 1, "style": [{"text": first, "weight": 1.0}]})
    change = TimedEvent(0, Fraction(2), ControlEvent("style.0.text", second, source="automation"))
    generator.fed.clear()
    render(patch, bars=2, output=tmp_path / "p.wav", generator=generator, automation=[change])
    mock = MockMusicCoCa()
    want = {text: list(mock.tokenize(mock.embed(text))) for text in (first, second)}
    assert want[first] != want[second]
    got = [list(generator.fed[i][0][STYLE_SLICE]) for i in sorted(generator.fed)]
    assert got[0] == want[first]
    assert set(map(tuple, got)) == {tuple(want[first]), tuple(want[second])}
    assert got[-1] == want[second]
    assert len(list((tmp_path / "cache" / "backline" / "style").glob("*.npy"))) == 2


def test_a_change_inside_the_lookahead_rolls_magenta_back_and_lands_on_the_planned_frame(generator: MagentaGenerator,
                                                                                          tmp_path) -> None:
    """The real magenta-rt code path under rollback: a `now` temperature change mid look-ahead (200 ms)
    restores the generator's snapshot and regenerates; what the model was fed changes from the
    planned frame on and not before, and every sample before it is the render without the change.
    (Temperature, not style: the tiny random model's audio does not follow its style tokens.)"""
    import math

    import soundfile

    from engine.automation import TimedEvent
    from engine.params import ControlEvent
    from engine.patch import parse_patch
    from engine.render import render

    patch = parse_patch({"tempo": 120, "seed": 5, "style": [{"text": "a"}]})
    change = [TimedEvent(1, Fraction(1), ControlEvent("sampling.temperature", 0.0, quantize="now"))]  # bar 2, beat 2
    runs = {}
    for name, automation in (("ref", []), ("now", change)):
        result = render(patch, bars=2, output=tmp_path / f"{name}.wav", generator=generator, automation=automation)
        runs[name] = (result, soundfile.read(tmp_path / f"{name}.wav", dtype="float32", always_2d=True)[0],
                      {k: v[1] for k, v in generator.fed.items()})  # frame -> temperature fed
    (result, out, fed), (_, ref, ref_fed) = runs["now"], runs["ref"]
    from engine.schedule.fit import frame_starts, make_fitter
    from engine.timeline import Timeline

    arrived = math.ceil((96000 + 24000) / 256) * 256
    reach = make_fitter(None).reach  # the stretcher's window (the default fit)
    starts = frame_starts(None, Timeline.start(120, 4), 2)
    planned = next(i for i, t in enumerate(starts) if t >= arrived + 480 + generator.audio_lead + reach)
    assert result.rollbacks == 1
    changed = [f for f in sorted(fed) if fed[f] != ref_fed[f]]
    assert changed[0] == planned and all(fed[f] == 0.0 for f in changed), changed[:3]
    differ = np.flatnonzero(np.any(out != ref, axis=1))
    # SpectroStream's decoder overlap and the stretcher's window: the audio changes up to audio_lead
    # and the fitter's reach before the frame, never earlier than a margin after the change arrived
    assert max(arrived + 480, starts[planned] - generator.audio_lead - reach) <= differ[0] <= starts[planned]
    np.testing.assert_array_equal(out[:differ[0]], ref[:differ[0]])
