"""GADMSModel and GADMSForPreTraining: shapes, features, rectangular positions, initialisation, save/load
(registered, remote code, hub cache, the heads dropped by AutoModel and restored by AutoModelForPreTraining)."""

import json
import logging
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoModelForPreTraining
from transformers.utils import logging as transformers_logging

import modeling_gadms  # noqa: F401  (registers the Auto classes)
from modeling_gadms import GADMSConfig, GADMSForPreTraining, GADMSModel
from modeling_gadms.losses import sdm_loss
from modeling_gadms.modeling_gadms import resize_position_embedding

REPO = Path(__file__).resolve().parents[1]


def _inputs(config, batch=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    vocab = config.text_config.vocab_size
    ids = torch.randint(1, vocab - 3, (batch, 77), generator=generator)
    ids[:, 0] = config.text_config.bos_token_id
    for row in range(batch):
        eos = 5 + 3 * row
        ids[row, eos] = config.text_config.eos_token_id
        ids[row, eos + 1:] = 0
    mask = (torch.arange(77)[None] <= torch.tensor([5 + 3 * r for r in range(batch)])[:, None]).long()
    pixels = torch.randn(batch + 1, 3, *config.image_size, generator=generator)
    return ids, mask, pixels


@pytest.fixture(scope="module")
def model(tiny_config):
    torch.manual_seed(0)
    return GADMSModel(tiny_config).eval()


def test_forward_logits_are_scaled_cosines(model, tiny_config):
    ids, mask, pixels = _inputs(tiny_config)
    with torch.no_grad():
        out = model(input_ids=ids, pixel_values=pixels, attention_mask=mask)
        text = model.get_text_features(ids, mask)
        image = model.get_image_features(pixels)
    assert out.logits_per_text.shape == (3, 4) and out.logits_per_image.shape == (4, 3)
    expected = torch.stack([torch.stack([F.cosine_similarity(t, i, dim=0) for i in image]) for t in text]) / 0.02
    torch.testing.assert_close(out.logits_per_text, expected, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(out.logits_per_image, expected.t(), atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(out.text_embeds.norm(dim=-1), torch.ones(3))
    assert model.get_text_features(ids, mask, normalize=True).norm(dim=-1).allclose(torch.ones(3))
    assert isinstance(model(input_ids=ids, pixel_values=pixels, return_dict=False), tuple)


def test_token_features_match_global_features(model, tiny_config):
    ids, mask, pixels = _inputs(tiny_config)
    with torch.no_grad():
        image_tokens = model.get_image_token_features(pixels)
        text_tokens = model.get_text_token_features(ids, mask)
        image, text = model.get_image_features(pixels), model.get_text_features(ids, mask)
    height, width = tiny_config.image_size
    assert image_tokens.shape == (4, 1 + (height // 16) * (width // 16), tiny_config.projection_dim)
    assert text_tokens.shape == (3, 77, tiny_config.projection_dim)
    torch.testing.assert_close(image_tokens[:, 0], image)  # CLS after the final layer norm and projection
    eos = (ids == tiny_config.text_config.eos_token_id).int().argmax(dim=1)
    torch.testing.assert_close(text_tokens[torch.arange(3), eos], text)
    # Every image token went through post_layernorm: per-token statistics before the projection are normalised.
    hidden = model.vision_model(pixel_values=pixels).last_hidden_state
    normed = F.layer_norm(hidden, (hidden.shape[-1],), model.vision_model.post_layernorm.weight,
                          model.vision_model.post_layernorm.bias)
    torch.testing.assert_close(image_tokens, normed @ model.visual_projection.weight.t())


def test_text_features_ignore_padding_and_attention_mask(model, tiny_config):
    ids, mask, _ = _inputs(tiny_config)
    other = ids.clone()
    other[mask == 0] = 7  # different padding ids after EOS
    with torch.no_grad():
        torch.testing.assert_close(model.get_text_features(ids, mask), model.get_text_features(other))


def test_rectangular_input_and_wrong_size(model, tiny_config):
    height, width = tiny_config.image_size
    assert height != width
    assert model.vision_model.embeddings.position_embedding.weight.shape[0] == 1 + (height // 16) * (width // 16)
    with pytest.raises(ValueError, match=r"Input image size 32x64 .* does not match the model's 64x32"):
        model.get_image_features(torch.zeros(1, 3, 32, 64))
    with torch.no_grad():
        out = model.encode_image(torch.zeros(1, 3, 96, 48), interpolate_pos_encoding=True)
    assert out.embeds.shape == (1, tiny_config.projection_dim)


def _naive_bilinear(grid, out_h, out_w):
    """Bilinear resize with half-pixel centres (align_corners=False), one output pixel at a time."""
    in_h, in_w, dim = grid.shape
    out = torch.zeros(out_h, out_w, dim, dtype=grid.dtype)
    for y in range(out_h):
        sy = max((y + 0.5) * in_h / out_h - 0.5, 0.0)
        y0 = min(math.floor(sy), in_h - 1)
        y1, wy = min(y0 + 1, in_h - 1), sy - y0
        for x in range(out_w):
            sx = max((x + 0.5) * in_w / out_w - 0.5, 0.0)
            x0 = min(math.floor(sx), in_w - 1)
            x1, wx = min(x0 + 1, in_w - 1), sx - x0
            out[y, x] = ((1 - wy) * (1 - wx) * grid[y0, x0] + (1 - wy) * wx * grid[y0, x1]
                         + wy * (1 - wx) * grid[y1, x0] + wy * wx * grid[y1, x1])
    return out


def test_position_resize_matches_hand_written_bilinear():
    torch.manual_seed(1)
    table = torch.randn(1 + 3 * 3, 4, dtype=torch.float64)
    resized = resize_position_embedding(table, (3, 3), (5, 2))
    assert resized.shape == (1 + 5 * 2, 4)
    torch.testing.assert_close(resized[0], table[0])
    expected = _naive_bilinear(table[1:].reshape(3, 3, 4), 5, 2).reshape(10, 4)
    torch.testing.assert_close(resized[1:], expected)
    with pytest.raises(ValueError, match="expected 1 \\+ 4x4"):
        resize_position_embedding(table, (4, 4), (2, 2))


def _std(tensors):
    return torch.cat([t.detach().flatten() for t in tensors]).std().item()


@pytest.mark.parametrize("tower", ["text_model", "vision_model"])
def test_towers_initialise_like_clip(model, tiny_config, tower):
    layers = getattr(model, tower).encoder.layers
    width, depth = layers[0].self_attn.embed_dim, len(layers)
    in_std = width**-0.5 * (2 * depth) ** -0.5
    assert _std(l.self_attn.q_proj.weight for l in layers) == pytest.approx(in_std, rel=0.15)
    assert _std(l.self_attn.out_proj.weight for l in layers) == pytest.approx(width**-0.5, rel=0.15)
    assert _std(l.mlp.fc1.weight for l in layers) == pytest.approx((2 * width) ** -0.5, rel=0.15)
    assert _std(l.mlp.fc2.weight for l in layers) == pytest.approx(in_std, rel=0.15)
    assert model.text_projection.weight.std().item() == pytest.approx(width**-0.5, rel=0.15)
    assert model.visual_projection.weight.std().item() == pytest.approx(width**-0.5, rel=0.15)


def test_decoder_and_classifier_initialise_as_the_spec(tiny_config):
    torch.manual_seed(0)
    model = GADMSForPreTraining(GADMSConfig.tiny(vocab_size=2000, num_identities=50, decoder_layers=3,
                                                 projection_dim=64, decoder_heads=4))
    decoder, d, layers = model.mtp_decoder, 64, 3
    attn, proj, fc = d**-0.5, d**-0.5 * (2 * layers) ** -0.5, (2 * d) ** -0.5
    blocks = decoder.cross_modal_transformer.layers
    assert _std([decoder.cross_attn.in_proj_weight]) == pytest.approx(attn, rel=0.1)
    assert _std([decoder.cross_attn.out_proj.weight]) == pytest.approx(proj, rel=0.1)
    assert _std(b.self_attn.k_proj.weight for b in blocks) == pytest.approx(attn, rel=0.1)
    assert _std(b.self_attn.out_proj.weight for b in blocks) == pytest.approx(proj, rel=0.1)
    assert _std(b.mlp.fc1.weight for b in blocks) == pytest.approx(fc, rel=0.1)
    assert _std(b.mlp.fc2.weight for b in blocks) == pytest.approx(proj, rel=0.1)
    assert _std([decoder.mlm_head.dense.weight]) == pytest.approx(fc, rel=0.1)
    assert _std([decoder.mlm_head.fc.weight]) == pytest.approx(proj, rel=0.1)
    assert all(b.self_attn.q_proj.bias.abs().max() == 0 for b in blocks)
    assert model.classifier.weight.std().item() == pytest.approx(0.001, rel=0.1)
    assert model.classifier.out_features == 50 and model.classifier.bias.abs().max() == 0


def test_saved_model_loads_with_no_missing_or_unexpected_keys(tmp_path):
    config = GADMSConfig.tiny(vocab_size=400, num_identities=7)
    GADMSForPreTraining(config).save_pretrained(tmp_path)
    model, info = AutoModelForPreTraining.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert model.classifier.out_features == 7
    assert any(k.startswith("mtp_decoder.cross_modal_transformer.layers.0.") for k in model.state_dict())


def test_one_directory_loads_as_the_dual_encoder_and_as_the_pretraining_model(tmp_path, caplog):
    torch.manual_seed(0)
    pretraining = GADMSForPreTraining(GADMSConfig.tiny(vocab_size=400, num_identities=7)).eval()
    pretraining.save_pretrained(tmp_path / "pt")
    saved = json.loads((tmp_path / "pt" / "config.json").read_text())
    assert saved["auto_map"]["AutoModel"].endswith("GADMSModel")
    assert saved["auto_map"]["AutoModelForPreTraining"].endswith("GADMSForPreTraining")
    assert not any(key.startswith(("gass_", "mask_alpha", "mtp_loss")) for key in saved)  # no objective settings
    # the heads come back with AutoModelForPreTraining ...
    restored = AutoModelForPreTraining.from_pretrained(tmp_path / "pt")
    for name, value in pretraining.state_dict().items():
        assert torch.equal(restored.state_dict()[name], value), name
    # ... and AutoModel gives the dual encoder, dropping them without a word
    transformers_logging.enable_propagation()
    with caplog.at_level(logging.WARNING):
        encoder, info = AutoModel.from_pretrained(tmp_path / "pt", output_loading_info=True)
    assert type(encoder) is GADMSModel and not hasattr(encoder, "mtp_decoder")
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert not [r for r in caplog.records if "mtp_decoder" in r.getMessage() or "classifier" in r.getMessage()]
    for name, value in pretraining.gadms.state_dict().items():
        assert torch.equal(encoder.state_dict()[name], value), name
    # a dual encoder's directory starts pretraining with fresh heads, the encoder's weights kept
    encoder.save_pretrained(tmp_path / "enc")
    fresh = AutoModelForPreTraining.from_pretrained(tmp_path / "enc")
    assert torch.equal(fresh.gadms.text_projection.weight, pretraining.gadms.text_projection.weight)


def test_an_earlier_versions_directory_still_loads(tmp_path, caplog):
    """Earlier versions saved one GADMSModel holding the heads at the top level and the objective's settings in
    config.json: both classes load it; the settings are dropped with a message that says where they went."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    pretraining = GADMSForPreTraining(GADMSConfig.tiny(vocab_size=400, num_identities=3))
    pretraining.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config.update(gass_variant="released", mtp_loss_weight=0.3, gass_layers=2, architectures=["GADMSModel"])
    config.pop("auto_map")
    (tmp_path / "config.json").write_text(json.dumps(config))
    flat = {k.removeprefix("gadms."): v.contiguous() for k, v in pretraining.state_dict().items()}
    save_file(flat, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    transformers_logging.enable_propagation()
    with caplog.at_level(logging.WARNING):
        old = AutoModelForPreTraining.from_pretrained(tmp_path)
    moved = [r.getMessage() for r in caplog.records if "objective" in r.getMessage()]
    assert moved and "gass_variant='released'" in moved[0] and "objective_preset" in moved[0]
    assert not hasattr(old.config, "gass_variant")
    for name, value in pretraining.state_dict().items():
        assert torch.equal(old.state_dict()[name], value), name
    encoder = AutoModel.from_pretrained(tmp_path)
    assert torch.equal(encoder.text_projection.weight, pretraining.gadms.text_projection.weight)


def test_return_loss_is_the_sdm_loss(tiny_config):
    torch.manual_seed(0)
    model = GADMSModel(tiny_config).eval()
    ids, mask, pixels = _inputs(tiny_config)
    pixels = pixels[: ids.shape[0]]
    pids = torch.tensor([0, 0, 1])
    with torch.no_grad():
        out = model(input_ids=ids, pixel_values=pixels, attention_mask=mask, person_ids=pids, return_loss=True)
        plain = model(input_ids=ids, pixel_values=pixels, attention_mask=mask)
        reference = sdm_loss(model.get_image_features(pixels), model.get_text_features(ids, mask), pids,
                             1 / tiny_config.temperature)
    torch.testing.assert_close(out.loss, reference)
    assert plain.loss is None
    torch.testing.assert_close(out.logits_per_text, plain.logits_per_text)


def test_sdpa_by_default_and_equal_to_eager(tiny_gadms_dir, tiny_config):
    sdpa = AutoModel.from_pretrained(tiny_gadms_dir).eval()
    eager = AutoModel.from_pretrained(tiny_gadms_dir, attn_implementation="eager").eval()
    assert sdpa.text_model.config._attn_implementation == "sdpa"
    assert sdpa.vision_model.config._attn_implementation == "sdpa"
    assert eager.text_model.config._attn_implementation == "eager"
    ids, mask, pixels = _inputs(tiny_config)
    with torch.no_grad():
        a, b = sdpa(input_ids=ids, pixel_values=pixels, attention_mask=mask), eager(input_ids=ids, pixel_values=pixels)
    torch.testing.assert_close(a.logits_per_text, b.logits_per_text, atol=1e-4, rtol=1e-4)


def test_activation_checkpointing_gives_same_gradients(tiny_config):
    torch.manual_seed(0)
    plain = GADMSModel(tiny_config).train()
    checkpointed = GADMSModel(tiny_config).train()
    checkpointed.load_state_dict(plain.state_dict())
    checkpointed.gradient_checkpointing_enable()
    ids, mask, pixels = _inputs(tiny_config)
    for m in (plain, checkpointed):
        m(input_ids=ids, pixel_values=pixels[:3], attention_mask=mask).logits_per_text.diagonal().sum().backward()
    for (name, p1), (_, p2) in zip(plain.named_parameters(), checkpointed.named_parameters()):
        torch.testing.assert_close(p1.grad, p2.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_save_load_registered_round_trip(tiny_gadms_dir, tiny_config):
    files = sorted(os.listdir(tiny_gadms_dir))
    assert "model.safetensors" in files and not any(f.endswith((".bin", ".pt", ".pth")) for f in files)
    config = json.loads((tiny_gadms_dir / "config.json").read_text())
    assert config["auto_map"]["AutoModel"].endswith("modeling_gadms.GADMSModel")
    assert {"modeling_gadms.py", "configuration_gadms.py", "processing_gadms.py"} <= set(files)
    loaded = AutoModel.from_pretrained(tiny_gadms_dir).eval()
    assert type(loaded) is GADMSModel
    torch.manual_seed(0)
    original = GADMSModel(tiny_config).eval()  # same seed as the fixture
    for key, value in original.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, msg=key)


def _run_isolated(script: str, env_extra: dict) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(env_extra)
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd="/", env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


BLOCK_PACKAGE = """
import importlib.abc, sys
class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "modeling_gadms" or name.startswith("modeling_gadms."):
            raise ImportError("modeling_gadms is blocked in this test")
sys.meta_path.insert(0, _Block())
try:
    import modeling_gadms
    raise SystemExit("the package was importable")
except ImportError:
    pass
"""


def test_remote_code_loads_without_the_package(tiny_gadms_dir, tiny_config, tmp_path):
    ids, mask, pixels = _inputs(tiny_config)
    with torch.no_grad():
        expected = AutoModel.from_pretrained(tiny_gadms_dir).eval()(input_ids=ids, pixel_values=pixels).logits_per_text
    torch.save({"ids": ids, "pixels": pixels, "expected": expected}, tmp_path / "io.pt")
    script = BLOCK_PACKAGE + f"""
import torch
from PIL import Image
from transformers import AutoModel, AutoProcessor
model = AutoModel.from_pretrained({str(tiny_gadms_dir)!r}, trust_remote_code=True).eval()
processor = AutoProcessor.from_pretrained({str(tiny_gadms_dir)!r}, trust_remote_code=True)
assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
assert type(processor).__name__ == "GADMSProcessor"
io = torch.load({str(tmp_path / "io.pt")!r})
with torch.no_grad():
    got = model(input_ids=io["ids"], pixel_values=io["pixels"]).logits_per_text
print("maxdiff", (got - io["expected"]).abs().max().item())
batch = processor(text=["a man in a red coat"], images=[Image.new("L", (20, 50))])
print("shapes", tuple(batch["input_ids"].shape), tuple(batch["pixel_values"].shape))
"""
    out = _run_isolated(script, {"HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"})
    assert float(out.split("maxdiff")[1].split()[0]) <= 1e-6
    height, width = tiny_config.image_size
    assert f"shapes (1, 77) (1, 3, {height}, {width})" in out


def test_hub_cache_load_offline(tiny_gadms_dir, tiny_config, tmp_path):
    """Seed a Hugging Face cache with `org/gadms-vitb16` and load it by id, offline."""
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--org--gadms-vitb16"
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    for file in tiny_gadms_dir.iterdir():
        (snapshot / file.name).write_bytes(file.read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    ids, _, pixels = _inputs(tiny_config)
    with torch.no_grad():
        expected = AutoModel.from_pretrained(tiny_gadms_dir).eval()(input_ids=ids, pixel_values=pixels).logits_per_text
    torch.save({"ids": ids, "pixels": pixels, "expected": expected}, tmp_path / "io.pt")
    script = f"""
import sys, torch
sys.path.insert(0, {str(REPO)!r})
import modeling_gadms
from transformers import AutoModel, AutoProcessor
model = AutoModel.from_pretrained("org/gadms-vitb16").eval()
processor = AutoProcessor.from_pretrained("org/gadms-vitb16")
assert type(model) is modeling_gadms.GADMSModel and type(processor) is modeling_gadms.GADMSProcessor
io = torch.load({str(tmp_path / "io.pt")!r})
with torch.no_grad():
    got = model(input_ids=io["ids"], pixel_values=io["pixels"]).logits_per_text
print("maxdiff", (got - io["expected"]).abs().max().item())
"""
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HOME": str(tmp_path / "home")}
    out = _run_isolated(script, env)
    assert float(out.split("maxdiff")[1].split()[0]) <= 1e-6
