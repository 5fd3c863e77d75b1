"""The `magenta` generator: MRT2's sampler stepped frame by frame under per-frame conditioning.

Per-frame control: we jit our own T-frame step that scans `sampler.step_with_emits` over
the frames, each with its own tokens, temperature and top-k (runtime values, never
compile-time constants), so any parameter may change on any frame without recompiling.

Decoder delay: SpectroStream emits frame n's audio on step n+1 (it looks one frame ahead).
To return frame n's audio in slot n, each call also runs step n+T with a guess for the
next call's first frame (the last frame's conditioning repeated) and keeps the state from
before that step. If the next call's first frame matches the guess (the usual case) its
step is already done; if not, it is re-run from the kept state, so the tokens of every
frame are always sampled from that frame's own conditioning.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import flax.traverse_util as flaxtu
import jax
import jax.numpy as jnp
import magenta_rt  # noqa: F401  (puts its vendored sequence_layers on sys.path)
import numpy as np
import safetensors
import safetensors.flax
import sequence_layers.jax as sl
from magenta_rt import musiccoca

from engine.conditioning import FrameConditioning
from engine.errors import GeneratorError
from engine.generator.base import Generator
from engine.generator.magenta import AUDIO_LEAD, assets, model
from engine.generator.magenta.tokens import CHANNELS, MODEL_OFFSET, StyleTokenizer, TokenEncoder
from engine.style.embedder import Embedder
from engine.style.musiccoca import style_model_for
from engine.units import FRAME_SAMPLES

log = logging.getLogger(__name__)

StyleModel = Literal["musiccoca", "mock"]

# T, frames per jitted step call, chosen by bench/magenta_bench.py (tiny random weights,
# 2 shared CPU cores, 3 runs x 96 frames per T, 2026-11-22; bench/RESULTS.md). p50 ms per
# frame for T = 1 / 2 / 4 / 8 over three bench runs: 60 / 65 / 76 / 66 and 65 / 61 / 64 /
# 58 (load average 3 to 4), 48 / 49 / 47 / 43 (load 0.6). Per-frame compute, not dispatch,
# bounds a CPU: T=8 gains about 10% on a quiet machine, but compile time grows with T
# (unrolled scan) and its cold load took 268 s against 62 s for T=2. T=2 halves the
# dispatches and host round trips, which weigh more on a GPU (the RTX 5090 figures in
# MRT2.md use 2-frame calls), and matches the scheduler's 2 frames per call. On one H200
# (2026-12-04, mrt2_small random weights, bench/RESULTS.md) T=2 gains nothing either: 23.2
# ms a frame against 22.0 at T=1, so there `--frames-per-call 1` would halve the chunk the
# splice margin is made of (1.5 x p99: 36 ms against 84). Kept at 2 until the engine's own
# control latency is measured on a GPU with both.
DEFAULT_FRAMES_PER_CALL = 2


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/backline/jax` (or ~/.cache/backline/jax)."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "backline" / "jax"


def enable_compilation_cache(directory: Path) -> None:
    """Use JAX's persistent compilation cache, so a restart on this machine skips compiling."""
    directory.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def load_checkpoint(path: Path) -> tuple[dict, model.Size, model.Codec]:
    """Nested params plus the size and codec they were made for ('/'-joined keys, as magenta-rt saves)."""
    assets.require_checkpoint(path)
    try:
        with safetensors.safe_open(str(path), framework="flax") as fh:
            meta = fh.metadata() or {}
        flat = safetensors.flax.load_file(str(path))
    except (OSError, ValueError, safetensors.SafetensorError) as err:
        raise GeneratorError(f"MRT2 checkpoint {path}: cannot load: {err}") from err
    size = meta.get(model.META_SIZE) or path.stem
    if size not in ("tiny", *assets.RELEASED_SIZES):
        raise GeneratorError(f"MRT2 checkpoint {path}: unknown model size {size!r}; name the file mrt2_small or mrt2_base")
    params = flaxtu.unflatten_dict({tuple(k.split("/")): v for k, v in flat.items()})
    return params, size, meta.get(model.META_CODEC, "full")


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Generator state at a call boundary; restore() may use it any number of times."""

    frame: int
    before_guess: Any
    after_guess: Any
    guess: tuple[bytes, float, int] | None


class MagentaGenerator(Generator):
    """MRT2 (magenta-rt 2.0.3, JAX). Called from one thread only (the generator's own)."""

    name = "magenta"
    audio_lead = AUDIO_LEAD

    def __init__(
        self,
        *,
        checkpoint: str | Path | None = None,
        size: assets.ReleasedSize = "mrt2_small",
        style_model: StyleModel | StyleTokenizer = "musiccoca",
        magenta_home: str | Path | None = None,
        frames_per_call: int = DEFAULT_FRAMES_PER_CALL,
        seed: int = 0,
        compilation_cache_dir: str | Path | None = None,
        use_compilation_cache: bool = True,
        unroll: bool = True,
        log_tokens: bool = False,
    ) -> None:
        if frames_per_call < 1:
            raise ValueError(f"frames_per_call must be at least 1, got {frames_per_call}")
        if use_compilation_cache:
            enable_compilation_cache(Path(compilation_cache_dir) if compilation_cache_dir else default_cache_dir())
        path = assets.require_magenta(checkpoint=checkpoint, size=size, magenta_home=magenta_home,
                                      musiccoca=style_model == "musiccoca")
        started = time.perf_counter()
        self._params, self.size, self.codec = load_checkpoint(path)
        self._sampler = model.sampler_config(self.size, self.codec).make()
        self._encoder = TokenEncoder(_style_tokenizer(style_model, magenta_home))
        self._style_options = {"style_model": style_model, "magenta_home": magenta_home}
        self.frames_per_call = frames_per_call
        self.unroll = unroll
        self._steps = jax.jit(self._run_steps, donate_argnums=(4,))
        self._initial = jax.jit(self._initial_state)
        self.fed: dict[int, tuple[np.ndarray, float, int]] | None = {} if log_tokens else None
        self._warm_up()
        self.reset(seed)
        log.info(
            "magenta %s (codec %s) from %s ready in %.1f s, %d frames per step call",
            self.size, self.codec, path, time.perf_counter() - started, frames_per_call,
        )

    # --- jitted pieces -------------------------------------------------------------
    def _initial_state(self, params: dict, key: jax.Array) -> Any:
        """The sampler's initial state with weak types made strong.

        A few leaves start weakly typed and come out of a step strongly typed; without
        this, the first 1-frame step from a stepped state (a wrong guess) would retrace
        and recompile mid-performance: seconds, past the child's hang deadline.
        """
        spec = jax.ShapeDtypeStruct([CHANNELS], jnp.int32)
        state = self._sampler.apply(
            params, 1, spec, constants={}, training=False, rngs={"random": key}, method=self._sampler.get_initial_state
        )
        return jax.tree.map(lambda leaf: jax.lax.convert_element_type(leaf, leaf.dtype), state)

    def _run_steps(self, params: dict, tokens: jax.Array, temperature: jax.Array, top_k: jax.Array, state: Any):
        """k frames, one `step_with_emits` each: audio (k*1920, 2) int16, state before the last step, final state.

        One dispatch for all k frames. Unrolled (the default) is faster per frame but its
        compile time grows with k; `unroll=False` compiles one frame body for any k.
        """

        def frame(carry: tuple[Any, Any], row: tuple[jax.Array, jax.Array, jax.Array]):
            _, current = carry
            frame_tokens, frame_temperature, frame_top_k = row
            out, after, _ = self._sampler.apply(
                params,
                x=sl.Sequence.from_values(frame_tokens[None, None]),
                state=current,
                constants={"temperature": frame_temperature[None], "top_k": frame_top_k[None]},
                training=False,
                method=self._sampler.step_with_emits,
            )
            return (current, after), out.values[0]

        (before_last, final), audio = jax.lax.scan(
            frame, (state, state), (tokens, temperature, top_k), unroll=self.unroll
        )
        return audio.reshape(-1, audio.shape[-1]), before_last, final

    def _warm_up(self) -> None:
        """Compile the 1- and T-frame steps now, so the first real call is not a compile."""
        started = time.perf_counter()
        state = self._initial(self._params, jax.random.PRNGKey(0))
        for k in sorted({1, self.frames_per_call}):
            tokens = jnp.full((k, CHANNELS), MODEL_OFFSET - 1, jnp.int32)
            audio, _, state = self._steps(self._params, tokens, jnp.ones(k), jnp.full(k, 40, jnp.int32), state)
            audio.block_until_ready()
        log.info("magenta step compiled in %.1f s (T=1 and T=%d)", time.perf_counter() - started, self.frames_per_call)

    # --- Generator contract -----------------------------------------------------
    def style_model(self, *, cache_dir: Path | None = None) -> Embedder:
        """MusicCoCa (or MockMusicCoCa under `style_model="mock"`) in the caller's process, with
        the disk cache: the same model this generator tokenizes the mixed embedding with."""
        return style_model_for(self._style_options, cache_dir=cache_dir)

    def reset(self, seed: int) -> None:
        self._frame = 0
        self._before_guess = self._initial(self._params, jax.random.PRNGKey(seed))
        self._after_guess = None
        self._guess: tuple[bytes, float, int] | None = None
        if self.fed is not None:
            self.fed.clear()

    def generate(self, conditioning: Sequence[FrameConditioning]) -> np.ndarray:
        n = len(conditioning)
        if n == 0:
            return np.zeros((0, self.channels), dtype=np.float32)
        raw, temperature, top_k = self._encoder.block(conditioning)
        tokens = raw + MODEL_OFFSET
        first = (tokens[0].tobytes(), float(temperature[0]), int(top_k[0]))
        if self._guess == first:
            state = self._after_guess
        else:  # first call after reset/restore, or the guess was wrong: run frame n's own step
            _, _, state = self._steps(self._params, tokens[:1], temperature[:1], top_k[:1], self._before_guess)
        self._record(self._frame, raw[0], temperature[0], top_k[0])
        # Steps for frames n+1 .. n+len: the rest of this call, then the guess (last frame repeated).
        ahead = np.concatenate([np.arange(1, n), [n - 1]])
        chunks = []
        start = 0
        while start < n:
            k = self.frames_per_call if n - start >= self.frames_per_call else 1
            rows = ahead[start : start + k]
            audio, before, state = self._steps(self._params, tokens[rows], temperature[rows], top_k[rows], state)
            chunks.append(audio)
            for j, row in enumerate(rows):
                self._record(self._frame + start + j + 1, raw[row], temperature[row], top_k[row])
            start += k
        self._before_guess, self._after_guess = before, state
        self._guess = (tokens[-1].tobytes(), float(temperature[-1]), int(top_k[-1]))
        self._frame += n
        samples = np.asarray(jnp.concatenate(chunks), dtype=np.float32) / 32768.0
        if samples.shape != (n * FRAME_SAMPLES, self.channels):
            raise GeneratorError(f"magenta returned audio of shape {samples.shape}, expected ({n * FRAME_SAMPLES}, 2)")
        return samples

    def _record(self, frame: int, raw: np.ndarray, temperature: float, top_k: int) -> None:
        if self.fed is not None:
            self.fed[frame] = (raw.copy(), float(temperature), int(top_k))

    # --- look-ahead regeneration ------------------------------------------------
    def snapshot(self) -> Snapshot:
        """The state at this call boundary (copied: the live state is donated to the next step)."""
        return Snapshot(self._frame, _copy_tree(self._before_guess), _copy_tree(self._after_guess), self._guess)

    def restore(self, snap: Snapshot) -> None:
        """Continue from `snap` as if nothing after it had been generated; exact replay."""
        self._frame = snap.frame
        self._before_guess = _copy_tree(snap.before_guess)
        self._after_guess = _copy_tree(snap.after_guess)
        self._guess = snap.guess

    @property
    def frame(self) -> int:
        """Index of the next frame generate() produces."""
        return self._frame

    @property
    def tokenize_calls(self) -> int:
        return self._encoder.tokenize_calls


@jax.jit
def _copy_leaves(tree: Any) -> Any:
    return jax.tree.map(jnp.copy, tree)


def _copy_tree(tree: Any) -> Any:
    """One jitted copy of the whole state (0.7 ms for the tiny model on CPU, against 6 ms leaf by leaf)."""
    return None if tree is None else _copy_leaves(tree)


def _style_tokenizer(style_model: StyleModel | StyleTokenizer, home: str | Path | None) -> StyleTokenizer:
    if style_model == "mock":
        return musiccoca.MockMusicCoCa()
    if style_model == "musiccoca":
        return musiccoca.MusicCoCa(resource_dir=assets.require_musiccoca(assets.musiccoca_dir(home=home)))
    return style_model
