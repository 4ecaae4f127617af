"""Gradient-Attention Similarity Score (GASS): how much each caption token drives the match with its image.

Implements docs/method.md section 3, both formulations:

- `"paper"`: over each caption's own positions (SOT through EOS; padding never enters), for each of the last
  `L` text layers: the gradient `g` of the matched-pair cosine similarity with respect to the attention output
  at EOS, a spatial weight from multi-scale-pooled queries and keys, and the layer's EOS attention row; the
  product is averaged over layers, rectified and min-max normalised per caption.
- `"released"`: the authors' code, for reproduction: the last `L` layers re-run as single-head attention,
  pooling and normalisation over all (padded) positions, layers summed, batch-wide min-max.

All text layers run once without autograd, keeping each GASS layer's queries, keys, values and attention
output. The gradients need no backward pass through every position: under causal attention the attention output
at EOS reaches the text feature through the EOS row alone, so a graph over the EOS rows of the last `L` layers
(the other positions' keys and values as constants) and one `torch.autograd.grad` call give all layers' exact
gradients at a small fraction of a text backward pass. Only the attention outputs are asked for, so no gradient
reaches the weights. The model's own attention implementation (sdpa by default) is untouched.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from .configuration_gadms import gass_layer_count
from .masking import first_eos_position
from .transformers_compat import causal_bias, clip_encoder_layer_forward

NORM_EPS = 1e-8


def eos_positions(input_ids: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """Index of the first `eos_token_id` of each caption; a caption without one is an error here (GASS
    differentiates the similarity at the EOS feature)."""
    eos = first_eos_position(input_ids, eos_token_id)
    missing = (eos == input_ids.shape[1]).nonzero().flatten().tolist()
    if missing:
        raise ValueError(f"captions {missing} of the batch have no end-of-text token (id {eos_token_id})")
    return eos


def multi_scale_pool(x: torch.Tensor, lengths: torch.Tensor, scales) -> torch.Tensor:
    """Multi-scale pooling MSP of token features over each caption's first `lengths[b]` positions.

    `x` is `(..., batch, positions, dim)`. For a window size `s`, positions `(0..s-1), (s..2s-1), ...` are
    averaged (a short last window is averaged alone) and the `ceil(n / s)` window means are linearly
    interpolated back to `n` positions (the rule of `F.interpolate(mode="linear", align_corners=False)`);
    MSP is the mean over the scales. Positions from `lengths[b]` on are returned as 0.

    All of it is linear in `x`: one `(positions, positions)` matrix per caption length (built once per length and
    reused), applied with one batched matrix product.
    """
    positions = x.shape[-2]
    scales = tuple(int(s) for s in scales)
    lengths = lengths.to(x.device).long()
    unique, inverse = lengths.unique(return_inverse=True)
    matrices = torch.stack([_pool_matrix(int(n), positions, scales) for n in unique.tolist()])
    pool = matrices.to(device=x.device, dtype=x.dtype)[inverse]  # (batch, positions, positions)
    return pool @ x  # broadcast over the leading axes of x


@functools.lru_cache(maxsize=512)
def _pool_matrix(n: int, positions: int, scales: tuple[int, ...]) -> torch.Tensor:
    """The `(positions, positions)` float64 matrix of MSP over the first `n` positions (zero elsewhere)."""
    total = torch.zeros(positions, positions, dtype=torch.float64)
    if n <= 0:
        return total
    for s in scales:
        m = -(-n // s)  # windows
        means = torch.zeros(m, n, dtype=torch.float64)
        for w in range(m):
            means[w, w * s: min((w + 1) * s, n)] = 1.0 / (min((w + 1) * s, n) - w * s)
        source = ((torch.arange(n, dtype=torch.float64) + 0.5) * m / n - 0.5).clamp(min=0)
        left = source.floor().long().clamp(max=m - 1)
        right = (left + 1).clamp(max=m - 1)
        weight = source - left.double()
        interpolate = torch.zeros(n, m, dtype=torch.float64)
        rows = torch.arange(n)
        interpolate[rows, left] += 1 - weight
        interpolate[rows, right] += weight
        total[:n, :n] += interpolate @ means
    return total / len(scales)


def _min_max(x: torch.Tensor, valid: torch.Tensor, eps: float = NORM_EPS) -> torch.Tensor:
    """`(x - min) / (max - min + eps)` over the positions where `valid`, per row; 0 elsewhere."""
    high = x.masked_fill(~valid, float("-inf")).amax(dim=-1, keepdim=True)
    low = x.masked_fill(~valid, float("inf")).amin(dim=-1, keepdim=True)
    return ((x - low) / (high - low + eps)).masked_fill(~valid, 0.0)


def _eos_attention(q: torch.Tensor, k: torch.Tensor, eos: torch.Tensor, heads: int) -> torch.Tensor:
    """The EOS row of the causal attention map averaged over heads: `(layers, batch, positions)`."""
    layers, batch, positions, width = k.shape
    head_dim = width // heads
    q_eos = q[:, torch.arange(batch, device=q.device), eos]  # (layers, batch, width)
    logits = torch.einsum(
        "lbhd,lbhnd->lbhn",
        q_eos.view(layers, batch, heads, head_dim),
        k.view(layers, batch, positions, heads, head_dim).transpose(2, 3),
    ) / head_dim**0.5
    after_eos = torch.arange(positions, device=q.device).view(1, 1, 1, -1) > eos.view(1, -1, 1, 1)
    return logits.masked_fill(after_eos, float("-inf")).softmax(dim=-1).mean(dim=2)


def gass_scores(
    model,
    input_ids: torch.Tensor,
    image_embeds: torch.Tensor,
    variant: str = "paper",
    num_layers: int | None = None,
    scales=(1, 2),
) -> torch.Tensor:
    """GASS token scores `(batch, positions)` in [0, 1] for unmasked captions and their images' features.

    Args:
        model: a [`GADMSModel`] (its text tower and text projection are used; its weights get no gradient).
        input_ids: `(batch, positions)` unmasked captions (SOT ... EOS, then padding).
        image_embeds: `(batch, projection_dim)` global features of each caption's own image (treated as constants).
        variant: `"paper"` or `"released"` (docs/method.md section 3).
        num_layers: the last `num_layers` text layers are used; `None`: 8, or all layers of a shallower tower.
        scales: window sizes of the multi-scale pooling.

    SOT, EOS and padding positions score 0. [`GADMSObjectiveConfig`] holds these settings for training
    (`gass_variant`, `gass_layers`, `gass_scales`).
    """
    config = model.config
    scales = list(scales)
    context = config.text_config.max_position_embeddings
    if variant == "released" and input_ids.shape[1] < context:
        # the released formula pools and min-maxes over all `context` (77) positions, padding included: a
        # batch padded to its longest caption is padded out to the context (with the text config's pad id, 0,
        # as the processor pads), so that the scores do not depend on the batch's width; the extra positions
        # score 0
        width = input_ids.shape[1]
        pad_id = config.text_config.pad_token_id or 0
        padded = F.pad(input_ids, (0, context - width), value=pad_id)
        return gass_scores(model, padded, image_embeds, variant, num_layers, scales)[:, :width]
    if torch.is_inference_mode_enabled():
        raise RuntimeError("GASS needs autograd: call it under torch.no_grad() or normally, not torch.inference_mode()")
    if variant not in ("paper", "released"):
        raise ValueError(f"unknown GASS variant {variant!r}; choose 'paper' or 'released'")
    text_model = model.text_model
    layers = text_model.encoder.layers
    num_layers = gass_layer_count(num_layers, len(layers), name="num_layers")
    eos = eos_positions(input_ids, config.text_config.eos_token_id)
    batch, positions = input_ids.shape
    heads = layers[0].self_attn.num_heads if variant == "paper" else 1
    rows = torch.arange(batch, device=input_ids.device)

    with torch.no_grad():  # every position's q, k, v and attention output: no graph
        hidden = text_model.embeddings(input_ids=input_ids)
        bias = causal_bias(positions, hidden.dtype, hidden.device)
        for layer in layers[: len(layers) - num_layers]:
            hidden = layer(hidden, bias)
        saved, layer_inputs = [], []
        for layer in layers[len(layers) - num_layers:]:
            layer_inputs.append(hidden[rows, eos])
            hidden, q, k, v, o = clip_encoder_layer_forward(layer, hidden, heads)
            saved.append((q, k, v, o))
    grads = _eos_gradients(model, layers[len(layers) - num_layers:], saved, layer_inputs[0], eos, heads, image_embeds)
    with torch.autocast(input_ids.device.type, enabled=False):  # the scoring maths in float32 under AMP
        dtype = torch.promote_types(saved[0][0].dtype, torch.float32)  # float32 (or float64) scores
        q = torch.stack([s[0] for s in saved]).to(dtype)
        k = torch.stack([s[1] for s in saved]).to(dtype)
        v = torch.stack([s[2] for s in saved]).to(dtype)
        g = torch.stack(grads).to(dtype)  # (layers, batch, width)
        attention = _eos_attention(q, k, eos, heads)  # (layers, batch, positions)

        index = torch.arange(positions, device=input_ids.device).view(1, -1)
        ordinary = (index >= 1) & (index < eos.view(-1, 1))  # (batch, positions)
        value_grad = torch.einsum("lbnd,lbd->lbn", v, g)
        if variant == "paper":
            lengths = eos + 1
            own = index < lengths.view(-1, 1)
        else:
            lengths = torch.full_like(eos, positions)
            own = torch.ones_like(ordinary)
        q_pooled = multi_scale_pool(q, lengths, scales)
        k_pooled = multi_scale_pool(k, lengths, scales)
        q_eos = q_pooled[:, rows, eos]  # (layers, batch, width)
        spatial = F.cosine_similarity(q_eos.unsqueeze(2), k_pooled, dim=-1)
        spatial = _min_max(spatial, own.unsqueeze(0).expand_as(spatial))

        if variant == "paper":
            gradient_score = spatial * value_grad
            attention_score = attention / attention.masked_fill(~own, 0).sum(dim=-1, keepdim=True)
            score = torch.relu((gradient_score * attention_score).mean(dim=0)).masked_fill(~ordinary, 0.0)
            return _min_max(score, ordinary)

        mask = ordinary.to(spatial.dtype).unsqueeze(0)
        relevance = spatial * value_grad  # r
        weights = attention * mask / (relevance.sum(dim=-1, keepdim=True) + NORM_EPS)  # a: the sum of r, not A
        evidence = torch.relu((relevance * mask * weights).sum(dim=0)) * mask[0]  # E, layers summed
        low, high = evidence.min(), evidence.max()
        if high == low:  # the released formula has no epsilon; an all-equal batch scores 0
            return torch.zeros_like(evidence)
        return (evidence - low) / (high - low)


def _eos_gradients(model, layers, saved, eos_input, eos, heads, image_embeds) -> list[torch.Tensor]:
    """`dSIM / d o^l` at each caption's EOS position for each of `layers`, `(batch, width)` each.

    Under causal attention only the EOS position's own row carries the attention output at EOS forward to the
    text feature: positions before EOS never see it, positions after it are never read. So the graph is built
    over the EOS rows alone (the other positions' keys and values are the constants of the gradient-free pass in
    `saved`): the same gradients as a backward pass through every position, for the cost of one row.
    """
    rows = torch.arange(eos.shape[0], device=eos.device)
    after_eos = torch.arange(saved[0][1].shape[1], device=eos.device).view(1, 1, -1) > eos.view(-1, 1, 1)
    outputs = []
    with torch.enable_grad():
        hidden = eos_input  # (batch, width): the EOS row entering the first GASS layer, a constant
        for index, (layer, (_, k, v, o)) in enumerate(zip(layers, saved)):
            attn = layer.self_attn
            if index == 0:
                out = o[rows, eos].detach().requires_grad_(True)  # a graph even when the weights are frozen
            else:  # the EOS row of this layer, from the previous layer's EOS row (graph) and constant K, V elsewhere
                normed = layer.layer_norm1(hidden)
                keys = k.index_put((rows, eos), attn.k_proj(normed))
                values = v.index_put((rows, eos), attn.v_proj(normed))
                out = _row_attention(attn.q_proj(normed), keys, values, after_eos, heads)
            outputs.append(out)
            hidden = hidden + attn.out_proj(out)
            hidden = hidden + layer.mlp(layer.layer_norm2(hidden))
        text = model.text_projection(model.text_model.final_layer_norm(hidden))
        similarity = F.cosine_similarity(text, image_embeds.detach().to(text.dtype), dim=-1).sum()
        return list(torch.autograd.grad(similarity, outputs))


def _row_attention(query, keys, values, masked, heads: int) -> torch.Tensor:
    """Multi-head attention of one query row per caption: `query (batch, width)` over `keys, values
    (batch, positions, width)`, positions where `masked (batch, 1, positions)` left out; `(batch, width)`."""
    batch, positions, width = keys.shape
    head_dim = width // heads
    q = query.view(batch, heads, 1, head_dim)
    k = keys.view(batch, positions, heads, head_dim).transpose(1, 2)
    weights = (q @ k.transpose(-1, -2) / head_dim**0.5).masked_fill(masked.unsqueeze(1), float("-inf")).softmax(-1)
    return (weights @ values.view(batch, positions, heads, head_dim).transpose(1, 2)).reshape(batch, width)


__all__ = ["eos_positions", "gass_scores", "multi_scale_pool"]
