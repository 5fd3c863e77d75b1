"""Building MRT2's sampler (depthformer + SpectroStream decoder) from a size and a codec.

magenta-rt's `MagentaRT2System` always builds the full-size codec and compiles a one-frame
step we do not use; building the sampler here lets the tiny test model pair with a tiny
codec (CPU tests and benches in seconds) and saves a compile at load.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from magenta_rt.config import ModelSpec
from magenta_rt.jax import model as mrt_model
from magenta_rt.jax import spectrostream
from magenta_rt.jax.system import MagentaRT2Sampler

Size = Literal["tiny", "mrt2_small", "mrt2_base"]
Codec = Literal["full", "tiny"]

# Safetensors metadata keys written by `random_weights`; released checkpoints have none.
META_SIZE = "backline.size"
META_CODEC = "backline.codec"

_TINY_SPEC = ModelSpec(
    num_layers=1, model_dims=32, hidden_dims=64, num_heads=2, dim_per_head=16, ffn_use_gated_activation=False
)


class TinyModel(mrt_model.MagentaRT2ModelBase):
    """One layer, 32 dims everywhere: exercises every code path of the real model, in milliseconds."""

    encoder_size = _TINY_SPEC
    decoder_temporal_size = _TINY_SPEC
    decoder_depth_size = _TINY_SPEC
    encoder_max_past_horizon = 8
    decoder_temporal_self_attention_max_past_horizon = 8
    decoder_temporal_cross_attention_max_past_horizon = 8


def model_class(size: Size) -> type[mrt_model.MagentaRT2ModelBase]:
    return TinyModel if size == "tiny" else mrt_model.get_model_class(size)


def codec_config(codec: Codec, *, rvq_truncation_level: int) -> spectrostream.SpectroStream.Config:
    """The 40 ms 48 kHz stereo SpectroStream; 'tiny' keeps its frame layout but shrinks every width."""
    full = spectrostream.stft_spectrostream_40ms_generic_48khz_stereo_config(
        rvq_truncation_level=rvq_truncation_level, use_unique_codes=False
    )
    if codec == "full":
        return full
    return dataclasses.replace(
        full,
        num_features=16,
        encoder_base_conv_depth=4,
        decoder_base_conv_depth=4,
        quantizer=dataclasses.replace(
            full.quantizer,
            embedding_dim=16,
            num_quantizers=rvq_truncation_level,
            target_num_quantizers=tuple(range(1, rvq_truncation_level + 1)),
        ),
    )


def sampler_config(size: Size, codec: Codec) -> MagentaRT2Sampler.Config:
    model = model_class(size)()
    return MagentaRT2Sampler.Config(
        depthformer=model.depthformer_config(),
        spectrostream=codec_config(codec, rvq_truncation_level=model.spectrostream.rvq_truncation_level),
    )


def num_channels(size: Size) -> int:
    """Conditioning channels per frame (144 for every released model)."""
    return model_class(size)().input_num_channels


__all__ = ["META_CODEC", "META_SIZE", "Codec", "Size", "TinyModel", "codec_config", "model_class", "num_channels", "sampler_config"]
