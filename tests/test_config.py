"""GADMSConfig (the model) and GADMSObjectiveConfig (the training objective): defaults from docs/method.md, presets,
validation, serialisation, and loading an earlier version's config that still holds objective settings."""

import json
import logging

import pytest
from transformers import AutoConfig

import modeling_gadms  # noqa: F401  (registers the Auto classes)
from modeling_gadms import PRESETS, GADMSConfig, GADMSObjectiveConfig
from modeling_gadms.configuration_gadms import OBJECTIVE_FIELDS

CONFIG_LOGGER = "modeling_gadms.configuration_gadms"


# -- the model config ----------------------------------------------------------------------------------------


def test_defaults_are_the_spec_values():
    config = GADMSConfig()
    assert config.model_type == "gadms"
    assert config.image_size == (384, 128)
    assert config.vision_config.patch_size == 16 and config.vision_config.hidden_size == 768
    assert config.text_config.hidden_size == 512 and config.text_config.num_attention_heads == 8
    assert config.text_config.max_position_embeddings == 77 and config.text_config.vocab_size == 49408
    assert config.projection_dim == 512
    assert config.temperature == 0.02 and config.logit_scale == pytest.approx(50.0)
    assert config.mask_token_id == 49405
    assert (config.decoder_layers, config.decoder_heads) == (4, 8)
    assert config.text_config.pad_token_id == 0
    assert (config.text_config.bos_token_id, config.text_config.eos_token_id) == (49406, 49407)
    # The objective settings are no longer part of the model config.
    assert not any(hasattr(config, name) for name in OBJECTIVE_FIELDS)
    assert not set(OBJECTIVE_FIELDS) & set(config.to_dict())


def test_partial_sub_config_keeps_gadms_defaults():
    config = GADMSConfig(vision_config={"num_hidden_layers": 2}, text_config={"num_hidden_layers": 8})
    assert config.vision_config.patch_size == 16 and config.image_size == (384, 128)
    assert config.vision_config.num_hidden_layers == 2 and config.text_config.pad_token_id == 0


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"vision_config": {"image_size": [380, 128]}}, "not divisible by the patch size 16"),
        ({"vision_config": {"image_size": [384, 120]}}, "not divisible by the patch size 16"),
        ({"temperature": 0.0}, "temperature must be positive"),
        ({"decoder_heads": 7}, "divisible by decoder_heads"),
        ({"mask_token_id": 49408}, "outside the text vocabulary"),
    ],
)
def test_invalid_values_raise_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GADMSConfig(**kwargs)


def test_save_and_load_round_trip(tmp_path):
    config = GADMSConfig(vision_config={"image_size": [256, 128]}, num_identities=11)
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, GADMSConfig)
    ignore = {"_name_or_path"}
    assert {k: v for k, v in loaded.to_dict().items() if k not in ignore} == {
        k: v for k, v in config.to_dict().items() if k not in ignore
    }
    assert loaded.image_size == (256, 128) and loaded.num_identities == 11
    # The saved config.json holds no objective settings.
    saved = json.loads((tmp_path / "config.json").read_text())
    assert not set(OBJECTIVE_FIELDS) & set(saved)


def test_tiny_config_is_consistent():
    config = GADMSConfig.tiny(vocab_size=300)
    assert config.text_config.eos_token_id == 299 and config.text_config.bos_token_id == 298
    assert config.mask_token_id == 297 and config.image_size == (64, 32)


# -- an earlier version's config with objective settings -----------------------------------------------------


def test_old_config_with_objective_settings_loads_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger=CONFIG_LOGGER):
        config = GADMSConfig(gass_variant="released", mtp_loss_weight=0.3, num_identities=5)
    assert config.num_identities == 5  # the model settings are kept
    assert not hasattr(config, "gass_variant") and not hasattr(config, "mtp_loss_weight")
    assert "gass_variant" not in config.to_dict() and "mtp_loss_weight" not in config.to_dict()
    warnings = [r for r in caplog.records if r.name == CONFIG_LOGGER and r.levelno == logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "gass_variant='released'" in message and "mtp_loss_weight=0.3" in message
    assert "GADMSObjectiveConfig" in message
    # A config without objective settings warns about nothing.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=CONFIG_LOGGER):
        GADMSConfig(num_identities=5)
    assert not [r for r in caplog.records if r.name == CONFIG_LOGGER]


def test_old_config_json_with_objective_settings_loads(tmp_path, caplog):
    GADMSConfig(num_identities=3).save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    old = json.loads(path.read_text())
    old.update({"gass_layers": 8, "gass_scales": [1, 2], "mask_lambda": 20.0, "initial_token_score": 0.85})
    path.write_text(json.dumps(old))
    with caplog.at_level(logging.WARNING, logger=CONFIG_LOGGER):
        loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, GADMSConfig) and loaded.num_identities == 3
    for name in ("gass_layers", "gass_scales", "mask_lambda", "initial_token_score"):
        assert not hasattr(loaded, name) and name not in loaded.to_dict()
    message = " ".join(r.getMessage() for r in caplog.records if r.name == CONFIG_LOGGER)
    for name in ("gass_layers", "gass_scales", "mask_lambda", "initial_token_score"):
        assert name in message


# -- the objective settings ----------------------------------------------------------------------------------


def test_objective_defaults_are_the_spec_values():
    settings = GADMSObjectiveConfig()
    assert settings.recipe == "gadms"
    assert (settings.gass_layers, settings.gass_scales, settings.gass_variant) == (None, (1, 2), "paper")
    assert settings.num_gass_layers(12) == 8  # the paper: the last 8 of 12 text layers
    assert settings.num_gass_layers(2) == 2  # a shallower tower: all its layers
    assert (settings.mask_alpha_noise, settings.mask_alpha_informative) == (0.2, 0.3)
    assert (settings.mask_lambda, settings.mask_gamma_noise) == (20.0, 0.9)
    assert settings.mask_gamma_informative == 0.1
    assert settings.initial_token_score == 0.85
    assert (settings.mask_replace_prob, settings.mask_random_prob) == (0.8, 0.1)
    assert settings.mlm_probability == 0.15
    assert (settings.sdm_loss_weight, settings.mtp_loss_weight) == (1.0, 0.4)
    assert (settings.id_loss_weight, settings.mlm_loss_weight) == (1.0, 1.0)
    assert set(OBJECTIVE_FIELDS) == set(settings.to_dict())


@pytest.mark.parametrize("name,variant,beta", [("paper", "paper", 0.4), ("released", "released", 0.3)])
def test_presets(name, variant, beta):
    settings = GADMSObjectiveConfig.from_preset(name)
    assert settings.gass_variant == variant and settings.mtp_loss_weight == beta
    assert PRESETS[name]["mtp_loss_weight"] == beta
    override = GADMSObjectiveConfig.from_preset(name, mtp_loss_weight=0.5)
    assert override.mtp_loss_weight == 0.5 and override.gass_variant == variant


def test_unknown_preset_and_unknown_setting():
    with pytest.raises(ValueError, match="(?i)unknown GA-DMS preset 'fancy'"):
        GADMSObjectiveConfig.from_preset("fancy")
    with pytest.raises(ValueError, match="unknown objective settings.*gass_layerz"):
        GADMSObjectiveConfig.from_preset("paper", gass_layerz=2)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"gass_variant": "other"}, "gass_variant must be one of"),
        ({"recipe": "clip"}, "recipe must be one of"),
        ({"mask_alpha_noise": 1.2}, "mask_alpha_noise is a probability"),
        ({"mask_alpha_informative": -0.1}, "mask_alpha_informative is a probability"),
        ({"mlm_probability": 2.0}, "mlm_probability is a probability"),
        ({"initial_token_score": 1.5}, "initial_token_score is a probability"),
        ({"mask_replace_prob": 0.95, "mask_random_prob": 0.1}, "must not exceed 1"),
        ({"gass_layers": 0}, "gass_layers must be >= 1"),
        ({"gass_scales": []}, "gass_scales"),
        ({"mtp_loss_weight": -1.0}, "mtp_loss_weight must be >= 0"),
        ({"mtp_loss_weight": "abc"}, "mtp_loss_weight must be a number, got 'abc'"),
        ({"mask_lambda": "abc"}, "mask_lambda must be a number, got 'abc'"),
        ({"mask_lambda": -1}, "mask_lambda .* must be >= 0"),
        ({"mask_alpha_noise": True}, "mask_alpha_noise must be a number, got True"),
        ({"gass_layers": 2.5}, "gass_layers must be a whole number, got 2.5"),
        ({"gass_scales": "12"}, "gass_scales must be a list"),
    ],
)
def test_invalid_objective_values_raise_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GADMSObjectiveConfig(**kwargs)
    with pytest.raises(ValueError, match=message):  # through a preset, too
        GADMSObjectiveConfig.from_preset("released", **kwargs)


def test_gass_layers_must_fit_the_text_tower():
    text_layers = GADMSConfig().text_config.num_hidden_layers  # 12
    settings = GADMSObjectiveConfig(gass_layers=13)  # the tower is not known until training
    with pytest.raises(ValueError, match=r"gass_layers must lie in \[1, 12\]"):
        settings.num_gass_layers(text_layers)
    assert GADMSObjectiveConfig(gass_layers=12).num_gass_layers(text_layers) == 12
    with pytest.raises(ValueError, match=r"gass_layers must lie in \[1, 2\]"):
        GADMSObjectiveConfig(gass_layers=3).num_gass_layers(GADMSConfig.tiny().text_config.num_hidden_layers)


def test_objective_round_trip_through_json():
    settings = GADMSObjectiveConfig.from_preset("released", gass_layers=4, gass_scales=[1, 2, 3])
    assert settings.gass_scales == (1, 2, 3)
    values = json.loads(json.dumps(settings.to_dict()))
    assert values["gass_scales"] == [1, 2, 3] and values["gass_variant"] == "released"
    loaded = GADMSObjectiveConfig(**values)
    assert loaded == settings
    assert loaded.gass_variant == "released" and loaded.mtp_loss_weight == 0.3 and loaded.gass_layers == 4


def test_objective_numbers_given_as_strings_are_read():
    """YAML reads `1e-4` without a dot as a string; such a string is the number it spells."""
    settings = GADMSObjectiveConfig(mtp_loss_weight="3e-1", gass_layers="4", gass_scales=["1", 2])
    assert settings.mtp_loss_weight == 0.3 and settings.gass_layers == 4 and settings.gass_scales == (1, 2)
