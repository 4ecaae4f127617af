"""Token masking for GA-DMS: score-guided dual masking (docs/method.md section 4) and the random MLM of fine-tuning.

Every function here is a plain, batch-vectorised tensor function. Results live on the device of `input_ids`;
random numbers are drawn from the optional `torch.Generator` (on the generator's own device, then moved), so a
seeded CPU generator gives the same masks whatever device the captions are on.

Token-id layout (GA-DMS / CLIP): all ids below `mask_token_id` are ordinary BPE tokens, then `<|mask|>`,
SOT (`mask_token_id + 1`) and EOT (`mask_token_id + 2`). A caption is SOT, its tokens, EOT, then padding.
The *ordinary positions* of a caption are `1 <= j < eos` (`eos` the position of its first EOT), excluding
positions that already hold the mask token. Only ordinary positions are ever chosen for masking.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .losses import IGNORE_INDEX

"""Label of positions that carry no prediction target (the `ignore_index` of the cross-entropy)."""


# ----------------------------------------------------------------------------------------------------------
# Random draws (generator-aware, device-agnostic)
# ----------------------------------------------------------------------------------------------------------


def _uniform(
    shape: torch.Size | tuple[int, ...], device: torch.device, generator: torch.Generator | None
) -> torch.Tensor:
    """Uniform [0, 1) float32 samples of `shape` on `device`, drawn from `generator` (on its device) if given."""
    if generator is None:
        return torch.rand(shape, device=device)
    return torch.rand(shape, generator=generator, device=generator.device).to(device)


def _randint(
    high: int, shape: torch.Size | tuple[int, ...], device: torch.device, generator: torch.Generator | None
) -> torch.Tensor:
    """Uniform integers in [0, high) (int64) of `shape` on `device`, drawn from `generator` if given."""
    if generator is None:
        return torch.randint(0, high, shape, device=device)
    return torch.randint(0, high, shape, generator=generator, device=generator.device).to(device)


# ----------------------------------------------------------------------------------------------------------
# Eligibility and probabilities
# ----------------------------------------------------------------------------------------------------------


def first_eos_position(input_ids: torch.Tensor, eos_token_id: int) -> torch.LongTensor:
    """Position of the first `eos_token_id` in each row of `input_ids` ([B, L]); `L` for a row without one.

    A row without an end-of-text token (a caption cut at the context length without its EOT) is treated as if
    its EOT were just past the end, so all its positions after SOT count as caption tokens.
    """
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be a [batch, length] tensor, got shape {tuple(input_ids.shape)}")
    is_eos = input_ids == eos_token_id
    length = input_ids.shape[1]
    first = is_eos.to(torch.uint8).argmax(dim=1)
    return torch.where(is_eos.any(dim=1), first, torch.full_like(first, length))


def ordinary_token_mask(input_ids: torch.Tensor, eos_token_id: int, mask_token_id: int) -> torch.BoolTensor:
    """Boolean mask [B, L] of the ordinary (maskable) positions of each caption.

    A position `j` is ordinary when `1 <= j < eos` (`eos` the position of the caption's first `eos_token_id`)
    and it does not already hold `mask_token_id`. SOT (position 0), EOS and padding are never ordinary.

    Args:
        input_ids: token ids, [batch, length], any integer dtype, any device.
        eos_token_id: id of the end-of-text token (EOT).
        mask_token_id: id of `<|mask|>`.

    Returns:
        A bool tensor with the shape and device of `input_ids`.
    """
    eos = first_eos_position(input_ids, eos_token_id)
    positions = torch.arange(input_ids.shape[1], device=input_ids.device)
    inside = (positions.unsqueeze(0) >= 1) & (positions.unsqueeze(0) < eos.unsqueeze(1))
    return inside & (input_ids != mask_token_id)


def noise_mask_probability(scores: torch.Tensor, alpha: float, lam: float, gamma: float) -> torch.Tensor:
    """Masking probability of the noise view: `alpha * sigmoid(lam * ((1 - s) - gamma))` (docs/method.md section 4).

    Low-score (likely noisy) tokens are masked most: the curve falls from about `alpha` to 0 around
    `s = 1 - gamma`. Computed in float32 at least; the result has the shape and device of `scores`.
    """
    s = scores if scores.dtype == torch.float64 else scores.float()
    return alpha * torch.sigmoid(lam * ((1.0 - s) - gamma))


def informative_mask_probability(scores: torch.Tensor, alpha: float, lam: float, gamma: float) -> torch.Tensor:
    """Masking probability of the informative (MTP) view: `alpha * sigmoid(lam * (s - gamma))` (docs/method.md section 4).

    High-score (informative) tokens are masked most: the curve rises from 0 to about `alpha` around `s = gamma`.
    Computed in float32 at least; the result has the shape and device of `scores`.
    """
    s = scores if scores.dtype == torch.float64 else scores.float()
    return alpha * torch.sigmoid(lam * (s - gamma))


# ----------------------------------------------------------------------------------------------------------
# Replacement and forced targets
# ----------------------------------------------------------------------------------------------------------


def replace_tokens(
    input_ids: torch.Tensor,
    chosen: torch.Tensor,
    mask_token_id: int,
    replace_prob: float = 0.8,
    random_prob: float = 0.1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """BERT-style corruption of the chosen positions; returns new ids (the input is not modified).

    Each chosen position independently becomes `mask_token_id` with probability `replace_prob`, a random
    ordinary token (uniform over ids `[0, mask_token_id)`) with probability `random_prob`, and keeps its id
    otherwise. Positions not chosen are never changed. (A random replacement may, by chance, draw the original
    id; that is part of the uniform draw, as in BERT.)

    Args:
        input_ids: token ids [B, L].
        chosen: bool [B, L], the positions to corrupt.
        mask_token_id: id of `<|mask|>`; also the number of ordinary ids.
        replace_prob: probability of the mask token.
        random_prob: probability of a random ordinary token.
        generator: optional `torch.Generator` for reproducible draws.
    """
    if chosen.shape != input_ids.shape:
        raise ValueError(
            f"chosen {tuple(chosen.shape)} and input_ids {tuple(input_ids.shape)} must have the same shape"
        )
    if not (0.0 <= replace_prob and 0.0 <= random_prob and replace_prob + random_prob <= 1.0):
        raise ValueError(f"replace_prob ({replace_prob}) and random_prob ({random_prob}) must be >= 0 and sum to <= 1")
    chosen = chosen.to(device=input_ids.device, dtype=torch.bool)
    u = _uniform(input_ids.shape, input_ids.device, generator)
    random_ids = _randint(mask_token_id, input_ids.shape, input_ids.device, generator).to(input_ids.dtype)
    to_mask = chosen & (u < replace_prob)
    to_random = chosen & (u >= replace_prob) & (u < replace_prob + random_prob)
    out = torch.where(to_mask, torch.full_like(input_ids, mask_token_id), input_ids)
    return torch.where(to_random, random_ids, out)


def force_one_target(chosen: torch.Tensor, eligible: torch.Tensor) -> torch.BoolTensor:
    """Add the first eligible position to every row of `chosen` that has none chosen but some eligible.

    Rows with no eligible position at all stay empty. Returns a new bool tensor [B, L].
    """
    chosen = chosen.bool()
    eligible = eligible.bool()
    first = eligible.to(torch.uint8).argmax(dim=1)
    needs = eligible.any(dim=1) & ~chosen.any(dim=1)
    forced = torch.zeros_like(chosen)
    forced[torch.arange(chosen.shape[0], device=chosen.device), first] = True
    return chosen | (forced & needs.unsqueeze(1))


def _labels(input_ids: torch.Tensor, chosen: torch.Tensor) -> torch.LongTensor:
    """Original id (int64) at chosen positions, `IGNORE_INDEX` elsewhere."""
    return torch.where(chosen, input_ids.long(), torch.full_like(input_ids, IGNORE_INDEX, dtype=torch.long))


def _eos_token_id(config: Any) -> int:
    """The text tower's end-of-text id from a GA-DMS config (`config.text_config.eos_token_id`)."""
    text = config.text_config
    return int(text["eos_token_id"] if isinstance(text, dict) else text.eos_token_id)


# ----------------------------------------------------------------------------------------------------------
# Dual masking (pretraining) and random MLM masking (fine-tuning)
# ----------------------------------------------------------------------------------------------------------


@dataclass
class DualMaskingOutput:
    """The two corrupted views of a batch of captions (docs/method.md section 4).

    Attributes:
        noise_input_ids: [B, L] the noise view, fed to the contrastive (SDM) loss.
        mtp_input_ids: [B, L] the informative view, fed to the masked-token-prediction decoder.
        mtp_labels: [B, L] int64, the original id at `mtp_mask` positions, -100 elsewhere.
        noise_mask: [B, L] bool, the positions chosen in the noise view.
        mtp_mask: [B, L] bool, the positions chosen in the informative view (forced targets included).
        eligible: [B, L] bool, the ordinary positions (`ordinary_token_mask`).
    """

    noise_input_ids: torch.Tensor
    mtp_input_ids: torch.Tensor
    mtp_labels: torch.Tensor
    noise_mask: torch.Tensor
    mtp_mask: torch.Tensor
    eligible: torch.Tensor


def shuffle_scores(scores: torch.Tensor, eligible: torch.Tensor,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Each row's scores at its `eligible` positions in a uniformly random order (other positions unchanged):
    the same values, so the same masking rates, with no information on which token is which. The `"shuffled"`
    `mask_scores` of the objective (the random-scores ablation, docs/method.md section 13)."""
    if scores.shape != eligible.shape:
        raise ValueError(f"scores {tuple(scores.shape)} and eligible {tuple(eligible.shape)} must have the same shape")
    eligible = eligible.to(scores.device).bool()
    positions = torch.arange(scores.shape[1], device=scores.device, dtype=torch.float64).expand(scores.shape)
    keys = _uniform(scores.shape, scores.device, generator).double()
    # eligible positions first in both orders (random, then ascending), the others after them in ascending order
    source = torch.where(eligible, keys, 2.0 + positions).argsort(dim=1, stable=True)
    target = torch.where(eligible, positions, scores.shape[1] + positions).argsort(dim=1, stable=True)
    return scores.clone().scatter_(1, target, scores.gather(1, source))


def dual_masking(
    input_ids: torch.Tensor,
    scores: torch.Tensor,
    settings: Any,
    config: Any,
    generator: torch.Generator | None = None,
) -> DualMaskingOutput:
    """Score-guided dual masking of GA-DMS (docs/method.md section 4).

    Two views are drawn independently, each by one Bernoulli draw per ordinary token:

    - noise view: `p = mask_alpha_noise * sigmoid(mask_lambda * ((1 - s) - mask_gamma_noise))`;
    - informative (MTP) view: `p = mask_alpha_informative * sigmoid(mask_lambda * (s - mask_gamma_informative))`.

    Chosen tokens are corrupted BERT-style (`mask_replace_prob` mask token, `mask_random_prob`
    random ordinary token, otherwise unchanged). A caption whose MTP view got no target but has an ordinary token
    gets its first ordinary token as the one target, so the MTP loss always has a target per such caption.

    With `settings.mask_scores == "shuffled"` each caption's scores are first shuffled among its ordinary tokens
    ([`shuffle_scores`], one uniform draw per position before the others).

    Draw order (for reproducibility with a seeded generator): noise choice, MTP choice, noise replacement
    (uniform then random ids), MTP replacement (uniform then random ids).

    Args:
        input_ids: [B, L] token ids (SOT, tokens, EOT, padding).
        scores: [B, L] token scores in [0, 1] (e.g. from the `ScoreBank`, the sample's previous visit); any float
            dtype, moved to the device of `input_ids`. Scores of non-ordinary positions are ignored.
        settings: a `GADMSObjectiveConfig` (or any object with its `mask_*` attributes): the curves.
        config: a `GADMSConfig` (or any object with `mask_token_id` and `text_config.eos_token_id`): the ids.
        generator: optional `torch.Generator` for reproducible masks.
    """
    if scores.shape != input_ids.shape:
        raise ValueError(
            f"scores {tuple(scores.shape)} and input_ids {tuple(input_ids.shape)} must have the same shape"
        )
    device = input_ids.device
    mask_token_id = int(config.mask_token_id)
    eligible = ordinary_token_mask(input_ids, _eos_token_id(config), mask_token_id)
    scores = scores.to(device=device, dtype=torch.float32)
    if getattr(settings, "mask_scores", "gass") == "shuffled":
        scores = shuffle_scores(scores, eligible, generator)

    p_noise = noise_mask_probability(scores, settings.mask_alpha_noise, settings.mask_lambda,
                                     settings.mask_gamma_noise)
    p_inf = informative_mask_probability(
        scores, settings.mask_alpha_informative, settings.mask_lambda, settings.mask_gamma_informative
    )
    noise_mask = eligible & (_uniform(input_ids.shape, device, generator) < p_noise)
    mtp_mask = eligible & (_uniform(input_ids.shape, device, generator) < p_inf)
    mtp_mask = force_one_target(mtp_mask, eligible)

    replace, rand = settings.mask_replace_prob, settings.mask_random_prob
    noise_ids = replace_tokens(input_ids, noise_mask, mask_token_id, replace, rand, generator)
    mtp_ids = replace_tokens(input_ids, mtp_mask, mask_token_id, replace, rand, generator)
    return DualMaskingOutput(
        noise_input_ids=noise_ids,
        mtp_input_ids=mtp_ids,
        mtp_labels=_labels(input_ids, mtp_mask),
        noise_mask=noise_mask,
        mtp_mask=mtp_mask,
        eligible=eligible,
    )


@dataclass
class MLMMaskingOutput:
    """A randomly masked batch for the fine-tuning MLM.

    Attributes:
        input_ids: [B, L] the corrupted captions.
        labels: [B, L] int64, the original id at `mask` positions, -100 elsewhere.
        mask: [B, L] bool, the chosen positions (forced targets included).
    """

    input_ids: torch.Tensor
    labels: torch.Tensor
    mask: torch.Tensor


def random_mlm_masking(
    input_ids: torch.Tensor,
    settings: Any | None = None,
    config: Any | None = None,
    *,
    probability: float | None = None,
    mask_token_id: int | None = None,
    eos_token_id: int | None = None,
    replace_prob: float | None = None,
    random_prob: float | None = None,
    generator: torch.Generator | None = None,
) -> MLMMaskingOutput:
    """Plain random MLM masking of the fine-tuning recipe (IRRA; docs/method.md section 5).

    Each ordinary token is chosen independently with `probability` (default `settings.mlm_probability`, 0.15) and
    corrupted BERT-style (80% mask token / 10% random ordinary token / 10% unchanged by default). A caption that
    has an ordinary token but got no target gets its first ordinary token as its one target, so that every such
    caption contributes to the loss and the MLM loss of a batch is never a mean over zero targets (NaN).

    Every argument left `None` is read from `settings` (a `GADMSObjectiveConfig`: `mlm_probability`,
    `mask_replace_prob`, `mask_random_prob`) or `config` (a `GADMSConfig`: `mask_token_id`,
    `text_config.eos_token_id`); without them, `probability`, `mask_token_id` and `eos_token_id` are required
    (replacement defaults to 0.8 / 0.1).

    Draw order: choice, then replacement (uniform, random ids).
    """
    def pick(value: Any, name: str, default: Any = None) -> Any:
        if value is not None:
            return value
        source = config if name in ("mask_token_id", "eos_token_id") else settings
        if source is not None:
            return _eos_token_id(source) if name == "eos_token_id" else getattr(source, name)
        if default is not None:
            return default
        raise ValueError(f"random_mlm_masking needs `{name}` (or {'a config' if source is config else 'settings'})")

    probability = float(pick(probability, "mlm_probability"))
    mask_token_id = int(pick(mask_token_id, "mask_token_id"))
    eos_token_id = int(pick(eos_token_id, "eos_token_id"))
    replace_prob = float(pick(replace_prob, "mask_replace_prob", 0.8))
    random_prob = float(pick(random_prob, "mask_random_prob", 0.1))
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"probability must lie in [0, 1], got {probability}")

    eligible = ordinary_token_mask(input_ids, eos_token_id, mask_token_id)
    chosen = eligible & (_uniform(input_ids.shape, input_ids.device, generator) < probability)
    chosen = force_one_target(chosen, eligible)
    ids = replace_tokens(input_ids, chosen, mask_token_id, replace_prob, random_prob, generator)
    return MLMMaskingOutput(input_ids=ids, labels=_labels(input_ids, chosen), mask=chosen)


__all__ = [
    "DualMaskingOutput",
    "MLMMaskingOutput",
    "dual_masking",
    "first_eos_position",
    "force_one_target",
    "informative_mask_probability",
    "noise_mask_probability",
    "ordinary_token_mask",
    "random_mlm_masking",
    "replace_tokens",
    "shuffle_scores",
]
