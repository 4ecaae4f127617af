"""Released GA-DMS / IRRA / NAM checkpoints -> GA-DMS: built in the test from open_clip's OpenAI-format CLIP plus
IRRA-style decoder modules (torch MultiheadAttention, open_clip's Transformer, an `mlm_head` Sequential)."""

from collections import OrderedDict

import open_clip
import pytest
import torch
from open_clip.transformer import QuickGELU, Transformer
from torch import nn
from transformers import AutoModelForPreTraining

import modeling_gadms  # noqa: F401
from modeling_gadms.convert import (
    ConversionError,
    convert_released_state_dict,
    gadms_to_released_state_dict,
    main,
)

VOCAB, WIDTH = 49408, 32


def _perturb(module, seed):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * 0.05)
    return module.eval()


class ReleasedModel(nn.Module):
    """The released checkpoint's module layout; `decode` is the IRRA cross-former + MLM head forward."""

    def __init__(self, identities=7, quick_gelu=True):
        super().__init__()
        torch.manual_seed(0)
        self.base_model = open_clip.model.CLIP(
            WIDTH,
            vision_cfg=dict(image_size=(64, 32), layers=2, width=64, patch_size=16, head_width=32),
            text_cfg=dict(context_length=77, vocab_size=VOCAB, width=64, heads=2, layers=2),
            quick_gelu=quick_gelu,
        )
        self.cross_attn = nn.MultiheadAttention(WIDTH, 4, batch_first=True)
        self.cross_modal_transformer = Transformer(WIDTH, 2, 4, act_layer=QuickGELU)
        self.ln_pre_t, self.ln_pre_i, self.ln_post = nn.LayerNorm(WIDTH), nn.LayerNorm(WIDTH), nn.LayerNorm(WIDTH)
        self.mlm_head = nn.Sequential(OrderedDict([
            ("dense", nn.Linear(WIDTH, WIDTH)), ("gelu", QuickGELU()), ("ln", nn.LayerNorm(WIDTH)),
            ("fc", nn.Linear(WIDTH, VOCAB)),
        ]))
        self.classifier = nn.Linear(WIDTH, identities)
        _perturb(self, 1)

    def decode(self, text_tokens, image_tokens):
        image = self.ln_pre_i(image_tokens)
        x = self.cross_attn(self.ln_pre_t(text_tokens), image, image, need_weights=False)[0]
        return self.mlm_head(self.ln_post(self.cross_modal_transformer(x)))


@pytest.fixture(scope="module")
def released():
    return ReleasedModel()


def test_released_checkpoint_converts_and_matches(released, tmp_path, capsys):
    state = {f"module.{k}": v for k, v in released.state_dict().items()}
    torch.save({"model": state, "epoch": 30}, tmp_path / "best.pth")
    out = tmp_path / "gadms"
    assert main(["released", str(tmp_path / "best.pth"), str(out), "--image-size", "64", "32",
                 "--vision-heads", "2", "--text-heads", "2", "--decoder-heads", "4"]) == 0
    assert "activation: quick_gelu (default for released GA-DMS / IRRA checkpoints" in capsys.readouterr().out
    model = AutoModelForPreTraining.from_pretrained(out).eval()  # the encoder and the released heads
    assert type(model).__name__ == "GADMSForPreTraining"
    config = model.config
    assert (config.decoder_layers, config.decoder_heads, config.num_identities) == (2, 4, 7)

    generator = torch.Generator().manual_seed(2)
    ids = torch.randint(1, VOCAB - 3, (3, 77), generator=generator)
    ids[:, 0], ids[:, 9], ids[:, 10:] = VOCAB - 2, VOCAB - 1, 0
    pixels = torch.randn(2, 3, 64, 32, generator=generator)
    text_tokens = torch.randn(3, 77, WIDTH, generator=generator)
    image_tokens = torch.randn(3, 9, WIDTH, generator=generator)
    with torch.no_grad():
        assert (released.base_model.encode_text(ids) - model.get_text_features(ids)).abs().max() <= 1e-5
        assert (released.base_model.encode_image(pixels) - model.get_image_features(pixels)).abs().max() <= 1e-5
        expected = released.decode(text_tokens, image_tokens)
        assert (model.mtp_decoder(text_tokens, image_tokens) - expected).abs().max() <= 1e-5
        features = torch.randn(4, WIDTH, generator=generator)
        torch.testing.assert_close(model.classifier(features), released.classifier(features))


def test_converting_back_reproduces_every_tensor(released):
    state = released.state_dict()
    model = convert_released_state_dict(state, image_size=(64, 32), vision_heads=2, text_heads=2, decoder_heads=4)
    back = gadms_to_released_state_dict(model.state_dict())
    assert set(back) == set(state) - {"base_model.logit_scale"}
    for key, value in back.items():
        assert torch.equal(value, state[key]), key


def test_unknown_and_missing_released_keys_are_listed(released):
    state = dict(released.state_dict())
    with pytest.raises(ConversionError, match=r"unknown keys in the released checkpoint: \['prompt_learner.ctx'\]"):
        convert_released_state_dict({**state, "prompt_learner.ctx": torch.zeros(2)}, image_size=(64, 32),
                                    vision_heads=2, text_heads=2)
    del state["mlm_head.fc.bias"]
    with pytest.raises(ConversionError, match=r"missing keys \['mtp_decoder.mlm_head.fc.bias'\]"):
        convert_released_state_dict(state, image_size=(64, 32), vision_heads=2, text_heads=2)
    with pytest.raises(ConversionError, match="not a released GA-DMS / IRRA checkpoint"):
        convert_released_state_dict(released.base_model.state_dict(), image_size=(64, 32))


def test_released_checkpoint_on_gelu_clip_with_activation_flag(tmp_path, capsys):
    """`--activation gelu` for a checkpoint fine-tuned from GELU weights: the towers match, the decoder keeps
    IRRA's QuickGELU; the default (QuickGELU) towers are off."""
    released = ReleasedModel(quick_gelu=False)
    torch.save({"model": released.state_dict()}, tmp_path / "best.pth")
    flags = ["--image-size", "64", "32", "--vision-heads", "2", "--text-heads", "2", "--decoder-heads", "4"]
    flags += ["--activation", "gelu"]
    assert main(["released", str(tmp_path / "best.pth"), str(tmp_path / "gelu"), *flags]) == 0
    assert "activation: gelu (from --activation)" in capsys.readouterr().out
    model = AutoModelForPreTraining.from_pretrained(tmp_path / "gelu").eval()
    assert model.config.text_config.hidden_act == model.config.vision_config.hidden_act == "gelu"
    default = convert_released_state_dict(released.state_dict(), image_size=(64, 32), vision_heads=2,
                                          text_heads=2, decoder_heads=4).eval()
    assert default.config.vision_config.hidden_act == "quick_gelu"
    generator = torch.Generator().manual_seed(3)
    ids = torch.randint(1, VOCAB - 3, (2, 77), generator=generator)
    ids[:, 0], ids[:, 9], ids[:, 10:] = VOCAB - 2, VOCAB - 1, 0
    pixels = torch.randn(2, 3, 64, 32, generator=generator)
    text_tokens, image_tokens = torch.randn(2, 77, WIDTH, generator=generator), torch.randn(2, 9, WIDTH)
    with torch.no_grad():
        reference = released.base_model
        assert (reference.encode_text(ids) - model.get_text_features(ids)).abs().max() <= 1e-5
        assert (reference.encode_image(pixels) - model.get_image_features(pixels)).abs().max() <= 1e-5
        expected = released.decode(text_tokens, image_tokens)
        assert (model.mtp_decoder(text_tokens, image_tokens) - expected).abs().max() <= 1e-5
        assert (reference.encode_text(ids) - default.get_text_features(ids)).abs().max() > 1e-3
