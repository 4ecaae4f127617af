"""Do token scores find the noise in captions? The noise-token AUC (docs/method.md section 13).

A data set that keeps each caption's clean version next to the published (noisy) one, as the synthetic person
set does (`caption1_clean`, `caption2_clean`), tells exactly which tokens are noise: the tokens of the noisy
caption that a token-level diff does not match to the clean caption (an inserted sentence, filler words, a
replaced colour). A token score that means "how much this token matters" should rank the caption's clean tokens
above its noise tokens. Per caption,

    AUC = P(score of a clean token > score of a noise token)   (ties count one half),

over its ordinary tokens (not start, end or padding), averaged over the captions that have both kinds. 0.5 is
chance; 1 ranks every noise token below every clean token.

Scores come from GASS (`gass-paper`, `gass-released`: docs/method.md section 3) or from leave-one-token-out
occlusion (`occlusion`: how much the caption's cosine with its own image drops without the token), the
reference for what the model itself knows.

```python
>>> from evaluation import noise_token_auc_of
>>> result = noise_token_auc_of(model, processor, images, captions, clean_captions, method="gass-paper")
>>> result.auc, result.captions
```
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

__all__ = [
    "METHODS",
    "NoiseTokenAUC",
    "noise_token_auc",
    "noise_token_auc_of",
    "noise_token_auc_on_split",
    "noise_token_auc_ceiling",
    "label_noise_tokens",
    "noise_token_labels",
    "noisy_captions",
    "occlusion_scores",
    "stored_score_report",
]

METHODS = ("gass-paper", "gass-released", "occlusion")


def noise_token_labels(noisy_ids: Sequence[int], clean_ids: Sequence[int]) -> list[bool]:
    """For each position of `noisy_ids`, whether it is noise: not matched to `clean_ids` by a token-level diff
    (`difflib.SequenceMatcher` without its junk heuristic)."""
    noisy_ids, clean_ids = list(noisy_ids), list(clean_ids)
    noise = [True] * len(noisy_ids)
    matcher = difflib.SequenceMatcher(None, clean_ids, noisy_ids, autojunk=False)
    for block in matcher.get_matching_blocks():
        for position in range(block.b, block.b + block.size):
            noise[position] = False
    return noise


def noise_token_auc(scores: Sequence[float] | torch.Tensor, noise: Sequence[bool] | torch.Tensor,
                    valid: Sequence[bool] | torch.Tensor | None = None) -> float | None:
    """AUC of one caption: the probability that a clean token scores above a noise token (ties count 1/2).

    Args:
        scores: one score per position.
        noise: `True` where the position is a noise token.
        valid: the positions that count (default: all); start, end and padding positions should be left out.

    Returns:
        The AUC, or `None` when the caption has no noise token or no clean token among the valid positions.
    """
    scores = torch.as_tensor(scores, dtype=torch.float64).flatten()
    noise = torch.as_tensor(noise, dtype=torch.bool).flatten()
    valid = torch.ones_like(noise) if valid is None else torch.as_tensor(valid, dtype=torch.bool).flatten()
    if not scores.shape == noise.shape == valid.shape:
        raise ValueError(f"scores, noise and valid must have one entry per position, got shapes "
                         f"{tuple(scores.shape)}, {tuple(noise.shape)}, {tuple(valid.shape)}")
    noisy, clean = scores[noise & valid], scores[~noise & valid]
    if not len(noisy) or not len(clean):
        return None
    above = (clean.view(-1, 1) > noisy.view(1, -1)).double()
    ties = (clean.view(-1, 1) == noisy.view(1, -1)).double()
    return float((above + 0.5 * ties).mean())


@dataclass
class NoiseTokenAUC:
    """Result of [`noise_token_auc_of`].

    Attributes:
        auc: mean AUC over the captions that have both noise and clean tokens (`nan` when none has).
        per_caption: each caption's AUC (`None` for a caption without noise or clean tokens).
        method: the token scores used (`gass-paper`, `gass-released` or `occlusion`).
        noise_tokens, clean_tokens: how many ordinary tokens of each kind were ranked.
    """

    auc: float
    per_caption: list[float | None] = field(default_factory=list)
    method: str = "gass-paper"
    noise_tokens: int = 0
    clean_tokens: int = 0

    @property
    def captions(self) -> int:
        """Number of captions that entered the mean."""
        return sum(value is not None for value in self.per_caption)


def _encoder(model):
    """The dual encoder of a `GADMSModel` or of a `GADMSForPreTraining` (its `.gadms`)."""
    return getattr(model, "gadms", model)


def _tokenize(processor, texts: Sequence[str]) -> list[list[int]]:
    tokenizer = getattr(processor, "tokenizer", processor)
    if not len(texts):  # no caption (e.g. a split without noise): tokenizers refuse an empty batch
        return []
    return tokenizer(list(texts), padding=False, truncation=True, max_length=tokenizer.model_max_length)["input_ids"]


def label_noise_tokens(processor, texts: Sequence[str], clean_texts: Sequence[str]) -> list[tuple]:
    """Each caption's `(token ids, noise labels, ordinary positions)`: the ids as `processor` tokenizes it, which
    positions [`noise_token_labels`] calls noise, and which positions count (not the first or last token).
    Computed once, they can be given to [`stored_score_report`] again and again (`labels=`)."""
    if len(texts) != len(clean_texts):
        raise ValueError(f"texts and clean_texts must be aligned, got {len(texts)} and {len(clean_texts)} items")
    rows = []
    for ids, clean in zip(_tokenize(processor, texts), _tokenize(processor, clean_texts)):
        rows.append((ids, noise_token_labels(ids, clean), [0 < j < len(ids) - 1 for j in range(len(ids))]))
    return rows


def _mean_auc(values) -> tuple[float, int]:
    values = [value for value in values if value is not None]
    return (sum(values) / len(values) if values else float("nan")), len(values)


def _pad(rows: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(row) for row in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids, mask


def occlusion_scores(model, input_ids: Sequence[int], image_embeds: torch.Tensor) -> torch.Tensor:
    """Leave-one-token-out scores of one caption: for each ordinary position `j` (not the first or last token),
    the cosine of the caption with its image minus the cosine of the caption without token `j`; 0 at the first
    and last positions.

    Args:
        model: a `GADMSModel` (or anything with `get_text_features(input_ids, attention_mask, normalize=True)`).
        input_ids: one tokenized caption, start to end token, no padding.
        image_embeds: `(projection_dim,)` the caption's image feature.
    """
    ids = list(input_ids)
    variants = [ids] + [ids[:j] + ids[j + 1:] for j in range(1, len(ids) - 1)]
    tokens, mask = _pad(variants)
    with torch.no_grad():
        text = model.get_text_features(tokens, mask, normalize=True)
        cosine = text @ torch.nn.functional.normalize(image_embeds.to(text.dtype), dim=-1)
    scores = torch.zeros(len(ids), dtype=torch.float64)
    scores[1: len(ids) - 1] = (cosine[0] - cosine[1:]).double()
    return scores


def noise_token_auc_of(model, processor, images: Sequence[Any], texts: Sequence[str], clean_texts: Sequence[str],
                       method: str = "gass-paper", batch_size: int = 64, gass_layers: int | None = None,
                       gass_scales: Sequence[int] = (1, 2)) -> NoiseTokenAUC:
    """The noise-token AUC of `model`'s token scores on captions whose clean versions are known.

    Args:
        model: a `GADMSModel` or `GADMSForPreTraining` (its dual encoder is used, in eval mode; no weight changes).
        processor: its `GADMSProcessor` (the tokenizer decides what a token is).
        images: each caption's own image (PIL images or arrays), one per caption.
        texts: the captions as published (with noise).
        clean_texts: the same captions before noise. A caption equal to its clean version has no noise token and
            does not enter the mean.
        method: `"gass-paper"`, `"gass-released"` (GASS variants) or `"occlusion"` (leave-one-token-out).
        batch_size: captions per forward pass.
        gass_layers, gass_scales: GASS settings (default: as in training: 8 layers, or all of a shallower tower).

    Returns:
        A [`NoiseTokenAUC`].
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if not len(images) == len(texts) == len(clean_texts):
        raise ValueError(f"images, texts and clean_texts must be aligned, got {len(images)}, {len(texts)} and "
                         f"{len(clean_texts)} items")
    encoder = _encoder(model)
    was_training = encoder.training
    encoder.eval()
    noisy_ids, clean_ids = _tokenize(processor, texts), _tokenize(processor, clean_texts)
    result = NoiseTokenAUC(auc=float("nan"), method=method)
    try:
        for start in range(0, len(texts), batch_size):
            stop = min(start + batch_size, len(texts))
            rows = noisy_ids[start:stop]
            pixel_values = processor(images=list(images[start:stop]))["pixel_values"]
            if method == "occlusion":
                with torch.no_grad():
                    image_embeds = encoder.get_image_features(pixel_values)
                batch_scores = [occlusion_scores(encoder, row, image_embeds[i]) for i, row in enumerate(rows)]
            else:  # compute_token_scores embeds the images itself
                ids, _ = _pad(rows)
                scores = encoder.compute_token_scores(ids, pixel_values, variant=method.split("-", 1)[1],
                                                      num_layers=gass_layers, scales=tuple(gass_scales))
                batch_scores = [scores[i, : len(row)] for i, row in enumerate(rows)]
            for offset, (row, scores) in enumerate(zip(rows, batch_scores)):
                noise = noise_token_labels(row, clean_ids[start + offset])
                valid = [0 < j < len(row) - 1 for j in range(len(row))]
                result.per_caption.append(noise_token_auc(scores, noise, valid))
                if result.per_caption[-1] is not None:
                    result.noise_tokens += sum(n and v for n, v in zip(noise, valid))
                    result.clean_tokens += sum(not n and v for n, v in zip(noise, valid))
    finally:
        encoder.train(was_training)
    values = [value for value in result.per_caption if value is not None]
    if values:
        result.auc = sum(values) / len(values)
    return result


def noisy_captions(table) -> tuple[list, list[str], list[str]]:
    """The noisy captions of a split in the WebPerson layout with clean captions (`image`, `caption1`,
    `caption2`, `caption1_clean`, `caption2_clean`; a `datasets.Dataset` or a list of records), e.g. a split of the
    synthetic person set: `(images, texts, clean_texts)`, aligned, one entry per caption that differs from its
    clean version, as [`noise_token_auc_of`] takes them.

    Raises:
        ValueError: when the split does not record clean captions.
    """
    columns = getattr(table, "column_names", None) or (list(table[0]) if len(table) else [])
    missing = [c for c in ("image", "caption1", "caption2", "caption1_clean", "caption2_clean") if c not in columns]
    if missing:
        raise ValueError(f"the split has no {', '.join(missing)} column(s): the noise-token AUC needs each caption's "
                         "clean version (the synthetic person set records it)")
    images, texts, clean = [], [], []
    records = table.select_columns(["image", "caption1", "caption2", "caption1_clean", "caption2_clean"]) \
        if hasattr(table, "select_columns") else table
    for record in records:
        for key in ("caption1", "caption2"):
            if record[key] != record[f"{key}_clean"]:
                images.append(record["image"])
                texts.append(record[key])
                clean.append(record[f"{key}_clean"])
    return images, texts, clean


def noise_token_auc_on_split(model, processor, table, method: str = "gass-paper", **kwargs) -> NoiseTokenAUC:
    """[`noise_token_auc_of`] over the [`noisy_captions`] of a split (to score one split with several methods,
    call `noisy_captions` once and `noise_token_auc_of` for each).

    Raises:
        ValueError: when the split does not record clean captions.
    """
    return noise_token_auc_of(model, processor, *noisy_captions(table), method=method, **kwargs)


def _word_membership(tokenizer, ids: Sequence[int], words: frozenset[str] | set[str]) -> list[bool]:
    """Whether each token belongs to a word of `words` (lower case). A word split into several BPE tokens is
    put back together first (CLIP marks a word's last token with `</w>`), and all its tokens get its answer."""
    from modeling_gadms.tokenization import END_OF_WORD

    tokens = tokenizer.convert_ids_to_tokens(list(ids))
    member, start = [False] * len(tokens), 0
    for j, token in enumerate(tokens):
        if token.endswith(END_OF_WORD) or j == len(tokens) - 1:
            word = "".join(tokens[start: j + 1]).replace(END_OF_WORD, "").lower()
            for k in range(start, j + 1):
                member[k] = word in words
            start = j + 1
    return member


def noise_token_auc_ceiling(processor, texts: Sequence[str], clean_texts: Sequence[str],
                            descriptive_words) -> dict[str, float]:
    """The noise-token AUC of two oracle token scores, which bound what a model's scores can reach on these
    captions (docs/method.md section 13). Both know exactly which words describe the person
    (`descriptive_words`, e.g. the synthetic set's `ATTRIBUTE_WORDS`):

    - `"words"`: 1 for a token of a descriptive word, 0 for any other (articles, verbs, fillers, an irrelevant
      sentence). A model that ignores everything but the person's description, and cannot tell that a described
      colour is wrong: a wrong colour scores like a right one.
    - `"image_aware"`: as `"words"`, and -1 for a descriptive word that is noise (a wrong colour): a model that
      also checks each described attribute against the image.

    Ties count one half, so the many clean tokens that describe nothing ("a", "is", "wearing") keep even the
    oracles well below 1.

    Returns:
        `{"words": auc, "image_aware": auc, "captions": n}` over the captions with both noise and clean tokens.
    """
    tokenizer = getattr(processor, "tokenizer", processor)
    words = frozenset(w.lower() for w in descriptive_words)
    plain, aware = [], []
    for ids, noise, valid in label_noise_tokens(processor, texts, clean_texts):
        member = _word_membership(tokenizer, ids, words)
        plain.append(noise_token_auc([float(m) for m in member], noise, valid))
        aware.append(noise_token_auc([(-1.0 if n else 1.0) if m else 0.0 for m, n in zip(member, noise)], noise, valid))
    (words_auc, count), (aware_auc, _) = _mean_auc(plain), _mean_auc(aware)
    return {"words": words_auc, "image_aware": aware_auc, "captions": count}


def stored_score_report(scores: torch.Tensor, processor, texts: Sequence[str] | None,
                        clean_texts: Sequence[str] | None, settings: Any = None,
                        labels: Sequence[tuple] | None = None) -> dict[str, float]:
    """How stored token scores, e.g. the GASS score bank's after an epoch, rank the noise of captions whose clean
    versions are known, and how often each view of the dual masking (docs/method.md section 4) would mask a
    noise token and a clean token with them.

    Args:
        scores: `[N, L]`, one row per caption: position `j` is token `j` of the caption as `processor` tokenizes it
            (start token at 0), as the score bank stores it.
        processor: the model's processor (or tokenizer).
        texts, clean_texts: the N captions as trained on, and their clean versions; captions equal to their clean
            version do not count.
        settings: the objective settings (`GADMSObjectiveConfig`, with the `mask_*` curves); without them only the
            AUC is given. With `mask_scores: shuffled` (the random-scores ablation) a token's chance is the mean of
            its caption's, which is what a uniformly random shuffle gives each position.
        labels: [`label_noise_tokens`] of the captions, computed earlier (then `texts` and `clean_texts` are not
            read; tokenizing and diffing is most of the cost when the same captions are scored every epoch).

    Returns:
        `{"auc", "captions"}`, and with `settings` the mean masking probability of noise and clean tokens in the
        noise view (`noise_view_noise`, `noise_view_clean`) and the MTP view (`mtp_view_noise`, `mtp_view_clean`).
    """
    from modeling_gadms.masking import informative_mask_probability, noise_mask_probability

    if labels is None:
        labels = label_noise_tokens(processor, texts, clean_texts)
    if scores.dim() != 2 or scores.shape[0] != len(labels):
        raise ValueError(f"scores must have one row per caption, [{len(labels)}, L], got {tuple(scores.shape)}")
    aucs, sums = [], {key: [0.0, 0] for key in ("noise_view_noise", "noise_view_clean", "mtp_view_noise",
                                                  "mtp_view_clean")}
    for row, (ids, noise, valid) in zip(scores.float(), labels):
        if not any(noise):
            continue
        width = min(len(ids), row.shape[0])
        is_noise, keep, row = torch.tensor(noise[:width]), torch.tensor(valid[:width]), row[:width].double()
        aucs.append(noise_token_auc(row, is_noise, keep))
        if settings is None:
            continue
        curves = {"noise_view": noise_mask_probability(row, settings.mask_alpha_noise, settings.mask_lambda,
                                                       settings.mask_gamma_noise),
                  "mtp_view": informative_mask_probability(row, settings.mask_alpha_informative,
                                                           settings.mask_lambda, settings.mask_gamma_informative)}
        for view, chance in curves.items():
            if getattr(settings, "mask_scores", "gass") == "shuffled" and keep.any():
                chance = torch.full_like(chance, float(chance[keep].mean()))
            for kind, chosen in (("noise", keep & is_noise), ("clean", keep & ~is_noise)):
                sums[f"{view}_{kind}"][0] += float(chance[chosen].sum())
                sums[f"{view}_{kind}"][1] += int(chosen.sum())
    auc, count = _mean_auc(aucs)
    report = {"auc": auc, "captions": count}
    if settings is not None:
        report.update({key: (total / n if n else float("nan")) for key, (total, n) in sums.items()})
    return report
