"""Every place where GA-DMS leans on transformers internals, in one module.

transformers' CLIP classes are reused as they are wherever possible. Three things cannot be done through
public API, and live here so that a change of transformers breaks one file, loudly, in
`tests/test_transformers_compat.py`:

1. `LibraryInitMixin` overrides the private `PreTrainedModel._initialize_weights`: transformers skips
   parameter-less modules of custom (non-library) code, assuming their `_init_weights` might overwrite loaded
   weights; ours only uses `transformers.initialization`, which leaves loaded tensors alone.
2. `build_clip_vision_modules` builds the attributes of `CLIPVisionModel.__init__` (whose own embeddings
   cannot take a rectangular `image_size`) with GA-DMS's rectangular embeddings instead.
3. `clip_encoder_layer_forward` re-runs a `CLIPEncoderLayer` from its attribute names (`layer_norm1`,
   `self_attn.{q,k,v,out}_proj`, `mlp`, `layer_norm2`), returning the intermediate tensors GASS needs
   (docs/method.md section 3) without touching the model's own attention implementation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.clip.modeling_clip import CLIPEncoder


class LibraryInitMixin:
    """Initialise every module with `_init_weights`, as transformers does for its own models (see the module
    docstring, item 1)."""

    def _initialize_weights(self, module, is_custom_code: bool = False):
        return super()._initialize_weights(module, is_custom_code=False)


def build_clip_vision_modules(model: nn.Module, config, embeddings: nn.Module) -> None:
    """Give `model` the submodules `CLIPVisionModel.__init__` creates, with `embeddings` as its embeddings
    (item 2 of the module docstring). The caller runs `PreTrainedModel.__init__` before and `post_init` after."""
    embed_dim = config.hidden_size
    model.embeddings = embeddings
    model.pre_layrnorm = nn.LayerNorm(embed_dim, eps=config.layer_norm_eps)
    model.encoder = CLIPEncoder(config)
    model.post_layernorm = nn.LayerNorm(embed_dim, eps=config.layer_norm_eps)


def causal_bias(positions: int, dtype: torch.dtype, device) -> torch.Tensor:
    """Additive causal mask `(1, 1, positions, positions)` in the form transformers' CLIP encoder layers take."""
    return torch.full((positions, positions), float("-inf"), dtype=dtype, device=device).triu(1)[None, None]


def clip_encoder_layer_forward(layer, hidden: torch.Tensor, heads: int):
    """One `CLIPEncoderLayer`, causal, with `heads` attention heads (the layer's own, or 1 for GASS's `released`
    variant), from its attribute names (item 3 of the module docstring).

    Returns the layer output and the queries, keys, values (heads concatenated, before scaling) and the
    attention output before `out_proj`.
    """
    attn = layer.self_attn
    batch, positions, width = hidden.shape
    normed = layer.layer_norm1(hidden)
    q, k, v = attn.q_proj(normed), attn.k_proj(normed), attn.v_proj(normed)

    def split(t):
        return t.view(batch, positions, heads, width // heads).transpose(1, 2)

    o = F.scaled_dot_product_attention(split(q), split(k), split(v), is_causal=True)
    o = o.transpose(1, 2).reshape(batch, positions, width)
    hidden = hidden + attn.out_proj(o)
    hidden = hidden + layer.mlp(layer.layer_norm2(hidden))
    return hidden, q, k, v, o


__all__ = ["LibraryInitMixin", "build_clip_vision_modules", "causal_bias", "clip_encoder_layer_forward"]
