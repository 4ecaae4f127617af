"""The three places where GA-DMS leans on transformers internals (`modeling_gadms/transformers_compat.py`),
each checked against transformers itself, so that a change underneath fails here, loudly, by name."""

import inspect

import torch
from transformers import CLIPTextConfig, CLIPVisionConfig, PreTrainedModel
from transformers.models.clip.modeling_clip import CLIPEncoderLayer, CLIPTextModel, CLIPVisionModel

from modeling_gadms.modeling_gadms import GADMSVisionModel
from modeling_gadms.transformers_compat import causal_bias, clip_encoder_layer_forward

TOWER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)


def test_initialize_weights_still_takes_is_custom_code():
    """`LibraryInitMixin` overrides `PreTrainedModel._initialize_weights(module, is_custom_code=...)`."""
    assert hasattr(PreTrainedModel, "_initialize_weights"), "transformers removed PreTrainedModel._initialize_weights"
    parameters = inspect.signature(PreTrainedModel._initialize_weights).parameters
    assert "is_custom_code" in parameters, f"_initialize_weights now takes {list(parameters)}"


def test_vision_model_has_the_modules_and_forward_of_transformers_own():
    """`build_clip_vision_modules` mirrors `CLIPVisionModel.__init__`: same submodules and parameters, and with
    the same weights the same outputs (square input, where transformers' own embeddings work)."""
    config = CLIPVisionConfig(**TOWER, image_size=32, patch_size=8)
    torch.manual_seed(0)
    reference = CLIPVisionModel(config).eval()
    ours = GADMSVisionModel(config).eval()
    assert [n for n, _ in ours.named_children()] == [n for n, _ in reference.named_children()]
    assert {n: p.shape for n, p in ours.named_parameters()} == {n: p.shape for n, p in reference.named_parameters()}
    ours.load_state_dict(reference.state_dict())
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        a, b = ours(pixel_values=pixels), reference(pixel_values=pixels)
    torch.testing.assert_close(a.pooler_output, b.pooler_output)
    torch.testing.assert_close(a.last_hidden_state, b.last_hidden_state)


def test_encoder_layer_rerun_equals_the_layer_itself():
    """GASS re-runs `CLIPEncoderLayer`s from their attribute names: with the layer's own heads the output must be
    the layer's forward under the causal mask, and q/k/v/o its projections."""
    config = CLIPTextConfig(**TOWER, vocab_size=50, max_position_embeddings=12)
    torch.manual_seed(0)
    layer = CLIPEncoderLayer(config).eval()
    hidden = torch.randn(3, 12, 32)
    with torch.no_grad():
        expected = layer(hidden, causal_bias(12, hidden.dtype, hidden.device))
        expected = expected[0] if isinstance(expected, tuple) else expected
        out, q, k, v, o = clip_encoder_layer_forward(layer, hidden, heads=config.num_attention_heads)
        normed = layer.layer_norm1(hidden)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(q, layer.self_attn.q_proj(normed))
    torch.testing.assert_close(v, layer.self_attn.v_proj(normed))
    assert o.shape == hidden.shape


def test_text_tower_rerun_gives_the_towers_hidden_states():
    """Running embeddings + every layer by hand (as GASS does) reproduces `CLIPTextModel`'s last hidden state."""
    config = CLIPTextConfig(**TOWER, vocab_size=50, max_position_embeddings=12, eos_token_id=49)
    torch.manual_seed(0)
    model = CLIPTextModel(config).eval()
    ids = torch.randint(1, 48, (2, 12))
    with torch.no_grad():
        hidden = model.embeddings(input_ids=ids)
        for layer in model.encoder.layers:
            hidden, *_ = clip_encoder_layer_forward(layer, hidden, heads=config.num_attention_heads)
        expected = model(input_ids=ids).last_hidden_state
    torch.testing.assert_close(model.final_layer_norm(hidden), expected, atol=1e-5, rtol=1e-5)
