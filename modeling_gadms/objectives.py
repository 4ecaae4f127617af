"""The two training recipes that [`GADMSForPreTraining`] computes (docs/method.md section 5), as functions of
the pretraining model, a batch and the objective's settings ([`GADMSObjectiveConfig`]).

- `"gadms"` (pretraining): score-guided dual masking of each caption; SDM on the noise view; masked-token
  prediction on the informative view through the cross-modal decoder; GASS scores of the unmasked caption
  for the sample's next visit. `loss = sdm_loss_weight * L_sdm + mtp_loss_weight * L_mtp`.
- `"irra"` (fine-tuning, also the baseline): SDM on the clean caption, identity loss when the model has a
  classifier, and MLM with random 15% masking through the same decoder.
  `loss = sdm_loss_weight * L_sdm + id_loss_weight * L_id + mlm_loss_weight * L_mlm`.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from .gass import gass_scores
from .losses import id_loss, sdm_loss
from .masking import dual_masking, random_mlm_masking

def _person_ids(person_ids: torch.Tensor | None, batch: int, device) -> torch.Tensor:
    if person_ids is not None:
        return person_ids.to(device)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        raise ValueError("person_ids are required with several processes (batch positions are not identities)")
    return torch.arange(batch, device=device)


def gadms_objective(
    model,
    settings,
    input_ids: torch.Tensor,
    pixel_values: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    person_ids: torch.Tensor | None = None,
    token_scores: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    **image_kwargs,
) -> dict:
    """GA-DMS pretraining objective of `model` (a [`GADMSForPreTraining`]) with `settings` (a
    [`GADMSObjectiveConfig`]); `token_scores` are the scores of each sample's previous visit."""
    encoder = model.gadms
    if token_scores is None:
        token_scores = torch.full(input_ids.shape, settings.initial_token_score, device=input_ids.device)
    person_ids = _person_ids(person_ids, input_ids.shape[0], input_ids.device)
    image = encoder.encode_image(pixel_values, output_tokens=True, **image_kwargs)
    views = dual_masking(input_ids, token_scores, settings, model.config, generator=generator)
    noise_text = encoder.encode_text(views.noise_input_ids, attention_mask)
    sdm = sdm_loss(image.embeds, noise_text.embeds, person_ids, encoder.logit_scale)
    mtp_text = encoder.encode_text(views.mtp_input_ids, attention_mask, output_tokens=True)
    mtp = model.mtp_decoder.masked_token_loss(mtp_text.token_embeds, image.token_embeds, views.mtp_labels)
    layers = settings.num_gass_layers(model.config.text_config.num_hidden_layers)
    scores = gass_scores(encoder, input_ids, image.embeds.detach(), variant=settings.gass_variant,
                         num_layers=layers, scales=settings.gass_scales)
    return {
        "loss": settings.sdm_loss_weight * sdm + settings.mtp_loss_weight * mtp,
        "sdm_loss": sdm,
        "mtp_loss": mtp,
        "token_scores": scores,
        "image": image,
        "text": noise_text,
    }


def irra_objective(
    model,
    settings,
    input_ids: torch.Tensor,
    pixel_values: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    person_ids: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    **image_kwargs,
) -> dict:
    """IRRA fine-tuning objective of `model` (a [`GADMSForPreTraining`]) with `settings`: SDM on clean captions,
    identity loss (with a classifier), random MLM."""
    config, encoder = model.config, model.gadms
    person_ids = _person_ids(person_ids, input_ids.shape[0], input_ids.device)
    image = encoder.encode_image(pixel_values, output_tokens=True, **image_kwargs)
    text = encoder.encode_text(input_ids, attention_mask)
    sdm = sdm_loss(image.embeds, text.embeds, person_ids, encoder.logit_scale)
    loss = settings.sdm_loss_weight * sdm
    identity = None
    if model.classifier is not None:
        if int(person_ids.min()) < 0 or int(person_ids.max()) >= config.num_identities:
            raise ValueError(
                f"person_ids must lie in [0, {config.num_identities}) for the identity classifier, got "
                f"[{int(person_ids.min())}, {int(person_ids.max())}]"
            )
        identity = id_loss(model.classifier(image.embeds), model.classifier(text.embeds), person_ids)
        loss = loss + settings.id_loss_weight * identity
    masked = random_mlm_masking(input_ids, settings, config, generator=generator)
    mlm_text = encoder.encode_text(masked.input_ids, attention_mask, output_tokens=True)
    mlm = model.mtp_decoder.masked_token_loss(mlm_text.token_embeds, image.token_embeds, masked.labels)
    loss = loss + settings.mlm_loss_weight * mlm
    return {"loss": loss, "sdm_loss": sdm, "id_loss": identity, "mlm_loss": mlm, "image": image, "text": text}


__all__ = ["gadms_objective", "irra_objective"]
