"""Training objectives of GA-DMS (docs/method.md section 5): SDM, masked-token prediction (MTP / MLM) and the ID loss.

All losses are plain tensor functions computed in float32 (inputs in half precision are upcast), on the device
of their inputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .distributed import gather_features

IGNORE_INDEX = -100


def sdm_loss(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    person_ids: torch.Tensor,
    logit_scale: float | torch.Tensor,
    epsilon: float = 1e-8,
    gather: bool = True,
) -> torch.Tensor:
    """Similarity distribution matching loss (IRRA; docs/method.md section 5).

    With `v_i`, `t_j` the L2-normalised image and text embeddings (row `i` of both belongs to the same sample),
    `p_ij = softmax_j(cos(v_i, t_j) * logit_scale)` and `q_ij = y_ij / sum_j y_ij` (`y_ij = 1` when the person
    ids of `i` and `j` match):

        L_i2t = mean_i sum_j p_ij * (log p_ij - log(q_ij + epsilon))

    `L_t2i` is the same with texts as rows and images as columns; the loss is `L_i2t + L_t2i`.

    Args:
        image_embeds: [B, D] image features (normalised here).
        text_embeds: [B, D] text features of the same samples (normalised here).
        person_ids: [B] integer person ids.
        logit_scale: multiplier of the cosine, `1 / temperature` (50 for GA-DMS).
        epsilon: added to `q` inside the log.
        gather: under `torch.distributed` with several processes, gather features and ids from all processes and
            compute the loss over the whole gathered batch (only the local features carry gradient). Every
            process then gets the loss of one process on the concatenated batch, and the gradient with respect to
            its local features equals that single-process gradient for those rows. (Under DDP, which averages
            parameter gradients over processes, the parameter gradient is the single-process one divided by the
            world size.)

    Returns:
        A scalar float32 tensor.
    """
    if image_embeds.dim() != 2 or text_embeds.dim() != 2 or image_embeds.shape != text_embeds.shape:
        raise ValueError(
            f"image_embeds and text_embeds must both be [batch, dim] of the same shape, got "
            f"{tuple(image_embeds.shape)} and {tuple(text_embeds.shape)}"
        )
    if person_ids.reshape(-1).shape[0] != image_embeds.shape[0]:
        raise ValueError(f"person_ids has {person_ids.numel()} entries for a batch of {image_embeds.shape[0]}")
    person_ids = person_ids.reshape(-1).to(image_embeds.device)
    if gather:
        image_embeds = gather_features(image_embeds)
        text_embeds = gather_features(text_embeds)
        person_ids = gather_features(person_ids)

    image = F.normalize(image_embeds.float(), dim=-1)
    text = F.normalize(text_embeds.float(), dim=-1)
    logits = logit_scale * (image @ text.t())  # [images, texts]

    matches = (person_ids.unsqueeze(1) == person_ids.unsqueeze(0)).float()
    log_q = torch.log(matches / matches.sum(dim=1, keepdim=True) + epsilon)  # symmetric: same for both directions

    def direction(rows: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(rows, dim=1)
        return (log_p.exp() * (log_p - log_q)).sum(dim=1).mean()

    return direction(logits) + direction(logits.t())


def mtp_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Masked-token prediction loss: mean cross-entropy over the positions whose label is not `ignore_index`.

    Used for GA-DMS's MTP (informative view) and for the fine-tuning MLM.

    Args:
        logits: [B, L, V] (or [N, V]) vocabulary logits.
        labels: [B, L] (or [N]) target ids, `ignore_index` (-100) where there is no target.

    Returns:
        A scalar float32 tensor: the mean over target positions of the whole batch (a token-level mean). With no
        target at all it is 0 (with a graph to `logits`), not NaN.
    """
    vocab = logits.shape[-1]
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} do not match")
    flat_labels = labels.reshape(-1).to(logits.device).long()
    total = F.cross_entropy(
        logits.reshape(-1, vocab).float(), flat_labels, ignore_index=ignore_index, reduction="sum"
    )
    count = (flat_labels != ignore_index).sum().clamp(min=1)
    return total / count


def id_loss(image_logits: torch.Tensor, text_logits: torch.Tensor, person_ids: torch.Tensor) -> torch.Tensor:
    """Identity classification loss of the fine-tuning recipe (IRRA): the mean of the image and text cross-entropies.

    Args:
        image_logits: [B, num_identities] classifier logits of the image features.
        text_logits: [B, num_identities] classifier logits of the text features.
        person_ids: [B] class indices in `[0, num_identities)`.
    """
    targets = person_ids.reshape(-1).to(image_logits.device).long()
    return 0.5 * (F.cross_entropy(image_logits.float(), targets) + F.cross_entropy(text_logits.float(), targets))


__all__ = ["IGNORE_INDEX", "id_loss", "mtp_loss", "sdm_loss"]
