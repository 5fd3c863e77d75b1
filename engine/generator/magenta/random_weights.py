"""Random MRT2 checkpoints: exercise the real magenta-rt code path without downloading weights.

Random full-size weights cost the same compute as real ones, which is how GPU speed is
measured here; the 'tiny' size (one 32-dim layer, tiny codec) makes CPU tests take seconds.
"""

from __future__ import annotations

import logging
from pathlib import Path

import flax.traverse_util as flaxtu
import jax
import jax.numpy as jnp
import magenta_rt  # noqa: F401  (puts its vendored sequence_layers on sys.path)
import numpy as np
import safetensors.numpy
import sequence_layers.jax as sl
from flax.core import meta

from engine.generator.magenta import model

log = logging.getLogger(__name__)


def init_params(size: model.Size, codec: model.Codec, *, seed: int = 0) -> dict:
    """Random parameters for the sampler, initialised as magenta-rt's layers define them."""
    sampler = model.sampler_config(size, codec).make()
    channels = model.num_channels(size)
    spec = jax.ShapeDtypeStruct([channels], jnp.int32)
    x = sl.Sequence.from_values(jnp.zeros((1, 1, channels), jnp.int32))
    constants = {"temperature": jnp.array([1.0]), "top_k": jnp.array([1], jnp.int32)}

    def first_step(module, x, constants):
        state = module.get_initial_state(1, spec, constants={}, training=False)
        return module.step_with_emits(x, state, training=False, constants=constants)

    rngs = {"params": jax.random.PRNGKey(seed), "random": jax.random.PRNGKey(seed + 1)}
    lowered = jax.jit(lambda r: sampler.init(r, x, constants, method=first_step)).lower(rngs)
    # Init runs once, so its speed is irrelevant; XLA's optimisation passes are not: on a
    # 2-core CPU the tiny sampler's init compiles in about 9 s unoptimised against 31 s.
    fast = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
    boxed = lowered.compile(compiler_options=fast if jax.default_backend() == "cpu" else None)(rngs)
    return meta.unbox(boxed)


def make_random_checkpoint(
    out_dir: str | Path, *, size: model.Size = "tiny", seed: int = 0, codec: model.Codec | None = None
) -> Path:
    """Write `<out_dir>/<size>.safetensors` with random weights and return its path.

    The codec defaults to 'tiny' for the tiny size and 'full' otherwise; size and codec
    are stored in the file's metadata so the generator rebuilds the matching sampler.
    """
    codec = codec or ("tiny" if size == "tiny" else "full")
    params = init_params(size, codec, seed=seed)
    flat = {"/".join(k): np.asarray(v) for k, v in flaxtu.flatten_dict(params).items()}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{size}.safetensors"
    safetensors.numpy.save_file(flat, str(path), metadata={model.META_SIZE: size, model.META_CODEC: codec})
    log.info("wrote random %s checkpoint (codec %s, %d parameters) to %s", size, codec, sum(a.size for a in flat.values()), path)
    return path
