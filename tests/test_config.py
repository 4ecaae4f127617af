"""GADMSConfig: defaults from the SPEC, presets, validation, serialisation."""

import pytest
from transformers import AutoConfig

import modeling_gadms  # noqa: F401  (registers the Auto classes)
from modeling_gadms import PRESETS, GADMSConfig


def test_defaults_are_the_spec_values():
    config = GADMSConfig()
    assert config.model_type == "gadms"
    assert config.image_size == (384, 128)
    assert config.vision_config.patch_size == 16 and config.vision_config.hidden_size == 768
    assert config.text_config.hidden_size == 512 and config.text_config.num_attention_heads == 8
    assert config.text_config.max_position_embeddings == 77 and config.text_config.vocab_size == 49408
    assert config.projection_dim == 512
    assert config.temperature == 0.02 and config.logit_scale == pytest.approx(50.0)
    assert (config.gass_layers, config.gass_scales, config.gass_variant) == (8, [1, 2], "paper")
    assert (config.mask_alpha_noise, config.mask_alpha_informative) == (0.2, 0.3)
    assert (config.mask_lambda, config.mask_gamma_noise, config.mask_gamma_informative) == (20.0, 0.9, 0.1)
    assert config.initial_token_score == 0.85 and config.mask_token_id == 49405
    assert (config.decoder_layers, config.decoder_heads) == (4, 8)
    assert config.text_config.pad_token_id == 0
    assert (config.text_config.bos_token_id, config.text_config.eos_token_id) == (49406, 49407)


@pytest.mark.parametrize("name,variant,beta", [("paper", "paper", 0.4), ("released", "released", 0.3)])
def test_presets(name, variant, beta):
    config = GADMSConfig.from_preset(name)
    assert config.gass_variant == variant and config.mtp_loss_weight == beta
    assert PRESETS[name]["mtp_loss_weight"] == beta
    override = GADMSConfig.from_preset(name, mtp_loss_weight=0.5)
    assert override.mtp_loss_weight == 0.5 and override.gass_variant == variant


def test_unknown_preset():
    with pytest.raises(ValueError, match="Unknown GA-DMS preset 'fancy'"):
        GADMSConfig.from_preset("fancy")


def test_partial_sub_config_keeps_gadms_defaults():
    config = GADMSConfig(vision_config={"num_hidden_layers": 2}, text_config={"num_hidden_layers": 8})
    assert config.vision_config.patch_size == 16 and config.image_size == (384, 128)
    assert config.vision_config.num_hidden_layers == 2 and config.text_config.pad_token_id == 0


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"vision_config": {"image_size": [380, 128]}}, "not divisible by the patch size 16"),
        ({"vision_config": {"image_size": [384, 120]}}, "not divisible by the patch size 16"),
        ({"gass_variant": "other"}, "gass_variant must be one of"),
        ({"mask_alpha_noise": 1.2}, "mask_alpha_noise is a probability"),
        ({"mask_alpha_informative": -0.1}, "mask_alpha_informative is a probability"),
        ({"mlm_probability": 2.0}, "mlm_probability is a probability"),
        ({"initial_token_score": 1.5}, "initial_token_score is a probability"),
        ({"mask_replace_prob": 0.95, "mask_random_prob": 0.1}, "must not exceed 1"),
        ({"temperature": 0.0}, "temperature must be positive"),
        ({"gass_layers": 13}, "gass_layers must lie in"),
        ({"gass_scales": []}, "gass_scales"),
        ({"decoder_heads": 7}, "divisible by decoder_heads"),
        ({"mtp_loss_weight": -1.0}, "mtp_loss_weight must be >= 0"),
        ({"mask_token_id": 49408}, "outside the text vocabulary"),
    ],
)
def test_invalid_values_raise_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GADMSConfig(**kwargs)


def test_save_and_load_round_trip(tmp_path):
    config = GADMSConfig.from_preset("released", vision_config={"image_size": [256, 128]}, num_identities=11)
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, GADMSConfig)
    ignore = {"_name_or_path"}
    assert {k: v for k, v in loaded.to_dict().items() if k not in ignore} == {
        k: v for k, v in config.to_dict().items() if k not in ignore
    }
    assert loaded.image_size == (256, 128) and loaded.gass_variant == "released" and loaded.num_identities == 11


def test_tiny_config_is_consistent():
    config = GADMSConfig.tiny(vocab_size=300)
    assert config.text_config.eos_token_id == 299 and config.text_config.bos_token_id == 298
    assert config.mask_token_id == 297 and config.image_size == (64, 32)
