"""The trainer's entry point: `GADMSForPreTraining.forward` with the `gadms` and `irra` recipes of its
`GADMSObjectiveConfig`, and the score bank around it as the trainer drives it."""

import pytest
import torch

import modeling_gadms.objectives as objectives
from modeling_gadms import GADMSConfig, GADMSForPreTraining, GADMSObjectiveConfig
from modeling_gadms.losses import sdm_loss
from modeling_gadms.score_bank import ScoreBank

VOCAB = 400


def _config(**kwargs):
    return GADMSConfig.tiny(vocab_size=VOCAB, **kwargs)


def _batch(batch=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB - 3, (batch, 77), generator=generator)
    ids[:, 0] = VOCAB - 2
    eos = torch.tensor([6, 11, 17, 25, 9, 13][:batch])
    for row, position in enumerate(eos.tolist()):
        ids[row, position], ids[row, position + 1:] = VOCAB - 1, 0
    mask = (torch.arange(77)[None] <= eos[:, None]).long()
    pixels = torch.randn(batch, 3, 64, 32, generator=generator)
    return ids, mask, pixels


def _recipe(model, recipe, **settings):
    model.objective = GADMSObjectiveConfig(recipe=recipe, **settings)
    return model


@pytest.fixture()
def model(pretraining):
    pretraining.objective = GADMSObjectiveConfig()
    return pretraining


@pytest.fixture(scope="module")
def pretraining():
    torch.manual_seed(0)
    return GADMSForPreTraining(_config(num_identities=3)).train()


def test_gadms_loss_is_weighted_sum_and_scores_are_returned(model):
    ids, mask, pixels = _batch()
    out = model(input_ids=ids, pixel_values=pixels, attention_mask=mask,
                person_ids=torch.tensor([0, 0, 1, 2]), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(out.loss, out.sdm_loss + model.objective.mtp_loss_weight * out.mtp_loss)
    assert out.token_scores.shape == ids.shape and not out.token_scores.requires_grad
    assert out.token_scores.min() >= 0 and out.token_scores.max() <= 1
    assert out.id_loss is None and out.mlm_loss is None
    assert out.logits_per_text.shape == (4, 4)
    model.zero_grad(set_to_none=True)
    out.loss.backward()
    for name in ("mtp_decoder.mlm_head.fc.weight", "gadms.text_projection.weight",
                 "gadms.vision_model.embeddings.class_embedding"):
        assert model.get_parameter(name).grad is not None, name
    assert model.classifier.weight.grad is None  # no identity loss in pretraining


def test_without_noise_masking_gadms_sdm_equals_irra_sdm():
    torch.manual_seed(0)
    model = GADMSForPreTraining(_config()).eval()
    ids, mask, pixels = _batch()
    pids = torch.tensor([0, 1, 1, 2])
    gadms = _recipe(model, "gadms", mask_alpha_noise=0.0)(input_ids=ids, pixel_values=pixels, attention_mask=mask,
                                                          person_ids=pids)
    irra = _recipe(model, "irra")(input_ids=ids, pixel_values=pixels, attention_mask=mask, person_ids=pids)
    torch.testing.assert_close(gadms.sdm_loss, irra.sdm_loss)
    with torch.no_grad():
        reference = sdm_loss(model.get_image_features(pixels), model.get_text_features(ids, mask), pids, 50.0)
    torch.testing.assert_close(irra.sdm_loss.detach(), reference)


def test_irra_loss_terms(model):
    ids, mask, pixels = _batch()
    _recipe(model, "irra", sdm_loss_weight=1.0, id_loss_weight=0.5, mlm_loss_weight=2.0)
    out = model(input_ids=ids, pixel_values=pixels, attention_mask=mask, person_ids=torch.tensor([0, 2, 1, 2]))
    settings = model.objective
    expected = (settings.sdm_loss_weight * out.sdm_loss + settings.id_loss_weight * out.id_loss
                + settings.mlm_loss_weight * out.mlm_loss)
    torch.testing.assert_close(out.loss, expected)
    assert out.token_scores is None and out.mtp_loss is None
    with pytest.raises(ValueError, match=r"person_ids must lie in \[0, 3\)"):
        model(input_ids=ids, pixel_values=pixels, person_ids=torch.tensor([0, 1, 2, 3]))


def _bank_step(model, bank, index, **batch):
    """One step as the trainer runs it: read the previous scores, forward, store the new ones."""
    out = model(**batch, token_scores=bank.get(index))
    bank.update(index, bank.pad(out.token_scores))
    return out


def test_score_bank_previous_visit_drives_the_masks(model, monkeypatch):
    ids, mask, pixels = _batch()
    bank = ScoreBank.from_config(model.config, num_samples=20, objective=model.objective)
    seen = []
    original = objectives.dual_masking

    def recording(input_ids, scores, settings, config, generator=None):
        seen.append(scores.clone())
        return original(input_ids, scores, settings, config, generator=generator)

    monkeypatch.setattr(objectives, "dual_masking", recording)
    index = torch.tensor([3, 7, 11, 19])
    batch = dict(input_ids=ids, pixel_values=pixels, attention_mask=mask)
    first = _bank_step(model, bank, index, **batch)
    torch.testing.assert_close(seen[0], torch.full(ids.shape, 0.85), atol=1e-3, rtol=0)  # initial score
    stored = bank.get(index)
    torch.testing.assert_close(stored, first.token_scores.float(), atol=1e-3, rtol=0)  # float16 storage
    _bank_step(model, bank, index, **batch)
    torch.testing.assert_close(seen[1], stored)  # second visit uses the first visit's scores
    untouched = bank.get(torch.tensor([0, 1, 2]))
    torch.testing.assert_close(untouched, torch.full((3, 77), 0.85), atol=1e-3, rtol=0)
    # without scores, the recipe starts from the objective's initial score
    model(**batch)
    torch.testing.assert_close(seen[2], torch.full(ids.shape, model.objective.initial_token_score))


def test_explicit_token_scores_and_generator_determinism(model):
    ids, mask, pixels = _batch()
    scores = torch.rand(ids.shape, generator=torch.Generator().manual_seed(3))
    runs = [model(input_ids=ids, pixel_values=pixels, attention_mask=mask, token_scores=scores,
                  generator=torch.Generator().manual_seed(5)) for _ in range(2)]
    torch.testing.assert_close(runs[0].loss, runs[1].loss)
    torch.testing.assert_close(runs[0].token_scores, runs[1].token_scores)


def test_objective_errors(model):
    ids, mask, pixels = _batch()
    with pytest.raises(ValueError, match="recipe must be one of"):
        GADMSObjectiveConfig(recipe="clip")
    with pytest.raises(ValueError, match="one image per caption: 4 captions, 3 images"):
        model(input_ids=ids, pixel_values=pixels[:3])


def test_compute_token_scores_for_users(model):
    ids, _, pixels = _batch()
    scores = model.gadms.compute_token_scores(ids, pixels)
    assert scores.shape == ids.shape and scores[:, 0].eq(0).all()


def test_score_bank_with_captions_shorter_than_the_bank(model):
    ids, mask, pixels = _batch()
    short = ids[:, :40]
    bank = ScoreBank.from_config(model.config, num_samples=8)
    out = _bank_step(model, bank, torch.tensor([0, 1, 2, 3]), input_ids=short, pixel_values=pixels,
                     attention_mask=mask[:, :40])
    stored = bank.get(torch.tensor([0, 1, 2, 3]))
    torch.testing.assert_close(stored[:, :40], out.token_scores.float(), atol=1e-3, rtol=0)
    assert (stored[:, 40:] == 0).all()


def test_masked_token_loss_equals_the_loss_of_the_full_logits(tiny_config):
    from modeling_gadms.losses import IGNORE_INDEX, mtp_loss

    torch.manual_seed(0)
    decoder = GADMSForPreTraining(tiny_config).mtp_decoder
    batch, positions, width = 3, 9, tiny_config.projection_dim
    text = torch.randn(batch, positions, width, requires_grad=True)
    image = torch.randn(batch, 5, width)
    labels = torch.full((batch, positions), IGNORE_INDEX)
    labels[0, 2], labels[1, 5], labels[1, 7], labels[2, 1] = 4, 9, 4, 11

    reference = mtp_loss(decoder(text, image), labels)
    (reference_grad,) = torch.autograd.grad(reference, text)
    loss = decoder.masked_token_loss(text, image, labels)
    (grad,) = torch.autograd.grad(loss, text)
    torch.testing.assert_close(loss, reference)
    torch.testing.assert_close(grad, reference_grad)
    # the selected logits are the full logits' rows at the labelled positions, in row-major order
    selected = decoder(text, image, positions=labels != IGNORE_INDEX)
    torch.testing.assert_close(selected, decoder(text, image)[labels != IGNORE_INDEX])
    assert selected.shape == (4, tiny_config.text_config.vocab_size)
