"""CLIP -> GA-DMS conversion: parity with transformers' CLIPModel and with open_clip (the independent reference)."""

import json
import re
import sys

import open_clip
import pytest
import torch
from open_clip.tokenizer import default_bpe
from safetensors.torch import save_file
from transformers import AutoModel, AutoProcessor, CLIPConfig, CLIPModel, CLIPTokenizer

import modeling_gadms  # noqa: F401
from modeling_gadms.convert import (
    ConversionError,
    activation_from_open_clip,
    convert_clip_model,
    convert_openai_state_dict,
    gadms_to_openai_state_dict,
    load_state_dict,
    main,
    openai_to_gadms_state_dict,
    gadms_config_from_openai,
    tokenizer_from_directory,
)
from modeling_gadms.tokenization import BOS_TOKEN, CLIP_NUM_MERGES, EOS_TOKEN, base_vocabulary, read_merges

CAPTIONS = ["a woman in a long red coat with a black backpack", "a man wearing a white shirt and blue jeans"]


def _perturb(module, seed=0):
    """Randomise every parameter (layer norms and biases too) so that each tensor's mapping is exercised."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * 0.05)
    return module


def _token_ids(batch, vocab, seed=0):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab - 3, (batch, 77), generator=generator)
    ids[:, 0] = vocab - 2
    for row in range(batch):
        ids[row, 6 + 4 * row] = vocab - 1
        ids[row, 7 + 4 * row:] = 0
    return ids


def _open_clip_model(image_size=(64, 32), vocab=600, seed=0, quick_gelu=True):
    """A small open_clip CLIP (OpenAI format); `quick_gelu=False` is open_clip's GELU (LAION `ViT-B-16`)."""
    torch.manual_seed(seed)
    model = open_clip.model.CLIP(
        32,
        vision_cfg=dict(image_size=image_size, layers=2, width=64, patch_size=16, head_width=32),
        text_cfg=dict(context_length=77, vocab_size=vocab, width=64, heads=2, layers=2),
        quick_gelu=quick_gelu,
    )
    return _perturb(model, seed).eval()


def test_transformers_clip_parity_at_clip_resolution():
    vocab = 600
    config = CLIPConfig(
        text_config=dict(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=2, bos_token_id=vocab - 2, eos_token_id=vocab - 1),
        vision_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                           image_size=48, patch_size=16),
        projection_dim=32,
    )
    torch.manual_seed(0)
    clip = _perturb(CLIPModel(config)).eval()
    gadms = convert_clip_model(clip, image_size=None).eval()
    assert gadms.config.image_size == (48, 48)
    ids, pixels = _token_ids(3, vocab), torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        text_diff = (clip.get_text_features(input_ids=ids).pooler_output - gadms.get_text_features(ids)).abs().max()
        image_diff = (clip.get_image_features(pixel_values=pixels).pooler_output - gadms.get_image_features(pixels))
    assert text_diff <= 1e-6 and image_diff.abs().max() <= 1e-6


def test_transformers_clip_to_rectangular_resizes_positions_once():
    config = CLIPConfig(
        text_config=dict(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=64, patch_size=16),
        projection_dim=16,
    )
    clip = CLIPModel(config).eval()
    gadms = convert_clip_model(clip, image_size=(96, 32))
    table = gadms.vision_model.embeddings.position_embedding.weight
    assert table.shape == (1 + 6 * 2, 32)
    torch.testing.assert_close(table[0], clip.vision_model.embeddings.position_embedding.weight[0])


def test_openai_format_parity_with_open_clip_rectangular():
    reference = _open_clip_model(image_size=(64, 32))
    gadms = convert_openai_state_dict(reference.state_dict(), image_size=(64, 32), vision_heads=2, text_heads=2).eval()
    ids, pixels = _token_ids(3, 600), torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        assert (reference.encode_text(ids) - gadms.get_text_features(ids)).abs().max() <= 1e-5
        assert (reference.encode_image(pixels) - gadms.get_image_features(pixels)).abs().max() <= 1e-5


def test_openai_round_trip_reproduces_every_tensor():
    state = _open_clip_model().state_dict()
    config = gadms_config_from_openai(state, image_size=(64, 32), vision_heads=2, text_heads=2)
    back = gadms_to_openai_state_dict(openai_to_gadms_state_dict(state, config))
    assert set(back) == set(state) - {"logit_scale"}
    for key, value in back.items():
        assert torch.equal(value, state[key]), key


def test_square_openai_grid_is_resized_to_the_target():
    state = _open_clip_model(image_size=(32, 32)).state_dict()
    gadms = convert_openai_state_dict(state, image_size=(64, 32), vision_heads=2, text_heads=2)
    assert gadms.vision_model.embeddings.position_embedding.weight.shape == (1 + 4 * 2, 64)


def test_unknown_and_missing_keys_are_listed():
    state = _open_clip_model().state_dict()
    config = gadms_config_from_openai(state, image_size=(64, 32), vision_heads=2, text_heads=2)
    extra = {**state, "visual.extra_head.weight": torch.zeros(1), "cls_token": torch.zeros(1)}
    with pytest.raises(ConversionError, match=r"unknown keys .*\['cls_token', 'visual.extra_head.weight'\]"):
        openai_to_gadms_state_dict(extra, config)
    partial = {k: v for k, v in state.items() if k != "ln_final.bias"}
    with pytest.raises(ConversionError, match=r"missing keys \['text_model.final_layer_norm.bias'\]"):
        convert_openai_state_dict(partial, image_size=(64, 32), vision_heads=2, text_heads=2)


def test_load_state_dict_formats(tmp_path):
    state = {"a.weight": torch.randn(2, 2), "b": torch.arange(3)}
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "ddp.pth")
    torch.save({"model": state, "epoch": 3}, tmp_path / "wrapped.pth")
    save_file(state, str(tmp_path / "w.safetensors"))
    for name in ("ddp.pth", "wrapped.pth", "w.safetensors"):
        loaded = load_state_dict(tmp_path / name)
        assert set(loaded) == set(state) and all(torch.equal(loaded[k], state[k]) for k in state), name
    torch.save({"optimizer": [1, 2]}, tmp_path / "bad.pth")
    with pytest.raises(ConversionError, match="bad.pth does not hold a state dict"):
        load_state_dict(tmp_path / "bad.pth")
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_state_dict(tmp_path / "missing.pth")


def _clip_vocab_and_merges():
    merges = read_merges(default_bpe(), limit=CLIP_NUM_MERGES)
    tokens = base_vocabulary() + ["".join(m) for m in merges] + [BOS_TOKEN, EOS_TOKEN]
    return {t: i for i, t in enumerate(tokens)}, merges


def test_cli_openai_checkpoint_end_to_end(tmp_path, capsys):
    """OpenAI-format .pth -> CLI -> AutoModel/AutoProcessor; text through the processor equals open_clip."""
    reference = _open_clip_model(image_size=(64, 32), vocab=49408)
    torch.save(reference.state_dict(), tmp_path / "clip.pth")
    out = tmp_path / "gadms"
    code = main(["openai", str(tmp_path / "clip.pth"), str(out), "--image-size", "64", "32",
                 "--vision-heads", "2", "--text-heads", "2", "--preset", "released"])
    assert code == 0
    assert "--preset released has no effect" in capsys.readouterr().err  # objective settings are not the model's
    model, processor = AutoModel.from_pretrained(out).eval(), AutoProcessor.from_pretrained(out)
    assert not hasattr(model.config, "gass_variant") and model.config.mask_token_id == 49405
    assert processor.tokenizer.mask_token_id == 49405
    batch = processor(text=CAPTIONS, images=[torch.rand(3, 64, 32)], do_rescale=False)
    with torch.no_grad():
        expected_text = reference.encode_text(open_clip.get_tokenizer("ViT-B-16")(CAPTIONS))
        assert (model.get_text_features(batch["input_ids"], batch["attention_mask"]) - expected_text).abs().max() <= 1e-5
        expected_image = reference.encode_image(batch["pixel_values"])
        assert (model.get_image_features(batch["pixel_values"]) - expected_image).abs().max() <= 1e-5


def test_cli_transformers_clip_directory(tmp_path):
    vocab, merges = _clip_vocab_and_merges()
    config = CLIPConfig(
        text_config=dict(vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=16),
        projection_dim=16,
    )
    clip_dir = tmp_path / "clip"
    CLIPModel(config).save_pretrained(clip_dir)
    (clip_dir / "vocab.json").write_text(json.dumps(vocab))
    (clip_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges))
    out = tmp_path / "gadms"
    assert main(["clip", str(clip_dir), str(out), "--image-size", "64", "32"]) == 0
    model, processor = AutoModel.from_pretrained(out), AutoProcessor.from_pretrained(out)
    assert model.config.image_size == (64, 32) and processor.image_processor.size.height == 64
    reference = open_clip.get_tokenizer("ViT-B-16")(CAPTIONS)
    torch.testing.assert_close(processor(text=CAPTIONS)["input_ids"], reference)


def test_tokenizer_json_directory_and_bad_layout(tmp_path):
    vocab, merges = _clip_vocab_and_merges()
    CLIPTokenizer(vocab=vocab, merges=merges).save_pretrained(tmp_path / "fast")
    tokenizer = tokenizer_from_directory(tmp_path / "fast")
    assert tokenizer.mask_token_id == 49405 and len(tokenizer) == 49408
    bad = tmp_path / "bad"
    bad.mkdir()
    shuffled = dict(vocab)
    shuffled["a"], shuffled["b"] = vocab["b"], vocab["a"]
    (bad / "vocab.json").write_text(json.dumps(shuffled))
    (bad / "merges.txt").write_text("\n".join(" ".join(m) for m in merges))
    with pytest.raises(ValueError, match="vocab.json does not follow CLIP's vocabulary layout"):
        tokenizer_from_directory(bad)


def test_cli_reports_errors(tmp_path, capsys):
    assert main(["openai", str(tmp_path / "nothing.pth"), str(tmp_path / "out")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err



def _feature_diffs(reference, model, vocab=49408):
    """Max abs differences of text and image features between an open_clip model and a GA-DMS model."""
    ids, pixels = _token_ids(3, vocab), torch.randn(2, 3, 64, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        text = (reference.encode_text(ids) - model.get_text_features(ids)).abs().max().item()
        image = (reference.encode_image(pixels) - model.get_image_features(pixels)).abs().max().item()
    return text, image


@pytest.fixture(scope="module")
def open_clip_checkpoints(tmp_path_factory):
    """Small open_clip models (CLIP's vocabulary), GELU and QuickGELU, and their state dicts as .pth files."""
    folder = tmp_path_factory.mktemp("open_clip")
    models = {}
    for activation, quick_gelu in (("gelu", False), ("quick_gelu", True)):
        models[activation] = _open_clip_model(vocab=49408, quick_gelu=quick_gelu)
        torch.save(models[activation].state_dict(), folder / f"{activation}.pth")
    return folder, models


def _cli_openai(checkpoint, out, *flags):
    return main(["openai", str(checkpoint), str(out), "--image-size", "64", "32", "--vision-heads", "2",
                 "--text-heads", "2", *flags])


@pytest.mark.parametrize(
    ("reference", "flags", "expected", "origin"),
    [
        ("gelu", ["--activation", "gelu"], "gelu", "(from --activation)"),
        ("gelu", ["--open-clip-model", "ViT-B-16"], "gelu", "(from open_clip model config ViT-B-16)"),
        ("quick_gelu", [], "quick_gelu", "(default for OpenAI weights; pass --activation gelu for LAION"),
        ("quick_gelu", ["--activation", "quick_gelu"], "quick_gelu", "(from --activation)"),
        ("quick_gelu", ["--open-clip-model", "ViT-B-16-quickgelu"], "quick_gelu",
         "(from open_clip model name ViT-B-16-quickgelu)"),
    ],
)
def test_cli_activation_parity_with_open_clip(open_clip_checkpoints, tmp_path, capsys, reference, flags,
                                              expected, origin):
    """The chosen activation reaches both towers and the features equal open_clip's for that activation; the
    other activation is off by far more than the tolerance (so these checks do catch a wrong activation)."""
    folder, models = open_clip_checkpoints
    assert _cli_openai(folder / f"{reference}.pth", tmp_path / "right", *flags) == 0
    assert f"activation: {expected} {origin}" in capsys.readouterr().out
    right = AutoModel.from_pretrained(tmp_path / "right").eval()
    assert right.config.text_config.hidden_act == right.config.vision_config.hidden_act == expected
    text, image = _feature_diffs(models[reference], right)
    assert text <= 1e-5 and image <= 1e-5

    other = "gelu" if expected == "quick_gelu" else "quick_gelu"
    assert _cli_openai(folder / f"{reference}.pth", tmp_path / "wrong", "--activation", other) == 0
    wrong = AutoModel.from_pretrained(tmp_path / "wrong").eval()
    assert wrong.config.text_config.hidden_act == wrong.config.vision_config.hidden_act == other
    text, image = _feature_diffs(models[reference], wrong)
    assert text > 1e-3 and image > 1e-3


def test_gelu_checkpoint_without_the_flag_is_off_and_says_so(open_clip_checkpoints, tmp_path, capsys):
    """The issue's case: a GELU checkpoint converted with the default gets QuickGELU, and the output says
    which activation was assumed and how to choose the other."""
    folder, models = open_clip_checkpoints
    assert _cli_openai(folder / "gelu.pth", tmp_path / "out") == 0
    assert "pass --activation gelu for LAION / open_clip ViT-B-16 weights" in capsys.readouterr().out
    model = AutoModel.from_pretrained(tmp_path / "out").eval()
    assert model.config.vision_config.hidden_act == "quick_gelu"
    assert min(_feature_diffs(models["gelu"], model)) > 1e-3


def test_activation_from_open_clip_names_and_tags(monkeypatch):
    """Configs only (nothing is downloaded): a -quickgelu name, a config's quick_gelu key, a pretrained tag"""
    assert activation_from_open_clip("ViT-B-16") == ("gelu", "open_clip model config ViT-B-16")
    assert open_clip.get_model_config("ViT-B-16-quickgelu")["quick_gelu"] is True
    assert activation_from_open_clip("ViT-B-16-quickgelu")[0] == "quick_gelu"
    assert activation_from_open_clip("ViT-B-16", "openai")[0] == "quick_gelu"  # OpenAI's weights in open_clip
    assert activation_from_open_clip("ViT-B-16", "laion2b_s34b_b88k")[0] == "gelu"
    with pytest.raises(ConversionError, match="open_clip has no model named 'ViT-X-99'"):
        activation_from_open_clip("ViT-X-99")
    with pytest.raises(ConversionError, match="no pretrained tag 'nope'"):
        activation_from_open_clip("ViT-B-16", "nope")
    monkeypatch.setitem(sys.modules, "open_clip", None)  # without open_clip only the name suffix tells
    assert activation_from_open_clip("ViT-L-14-quickgelu")[0] == "quick_gelu"
    with pytest.raises(ConversionError, match="without open_clip installed; pass --activation"):
        activation_from_open_clip("ViT-B-16")


def test_cli_activation_conflicts_and_hints(open_clip_checkpoints, tmp_path, capsys):
    folder, _ = open_clip_checkpoints
    checkpoint = folder / "gelu.pth"
    flags = ["--activation", "quick_gelu", "--open-clip-model", "ViT-B-16"]
    assert _cli_openai(checkpoint, tmp_path / "a", *flags) == 2
    error = capsys.readouterr().err
    assert "--activation quick_gelu disagrees with open_clip model config ViT-B-16 (gelu)" in error
    assert _cli_openai(checkpoint, tmp_path / "b", "--open-clip-pretrained", "openai") == 2
    assert "--open-clip-pretrained needs --open-clip-model" in capsys.readouterr().err
    assert _cli_openai(checkpoint, tmp_path / "c", *flags[:1], "gelu", *flags[2:]) == 0
    out = capsys.readouterr().out
    assert "activation: gelu (from --activation; agrees with open_clip model config ViT-B-16)" in out
    assert re.search(r"note: open_clip's ViT-B-16 weights tagged (.+, )?openai(, .+)? use quick_gelu", out)
    assert _cli_openai(checkpoint, tmp_path / "d", "--open-clip-model", "ViT-B-16", "--open-clip-pretrained",
                       "openai") == 0
    out = capsys.readouterr().out
    assert "activation: quick_gelu (from open_clip pretrained tag ViT-B-16 / openai)" in out
    with pytest.raises(SystemExit):
        _cli_openai(checkpoint, tmp_path / "e", "--activation", "relu")
    assert "invalid choice: 'relu'" in capsys.readouterr().err


def test_unknown_activation_is_refused():
    state = _open_clip_model().state_dict()
    with pytest.raises(ConversionError, match="activation 'gelu_new': choose one of quick_gelu, gelu"):
        gadms_config_from_openai(state, activation="gelu_new")
    config = gadms_config_from_openai(state, activation="gelu")
    assert config.text_config.hidden_act == config.vision_config.hidden_act == "gelu"
    assert gadms_config_from_openai(state).vision_config.hidden_act == "quick_gelu"


def test_transformers_gelu_clip_keeps_its_activation(tmp_path, capsys):
    """A transformers CLIP with hidden_act="gelu" converts (function and CLI) to GELU towers, equal output."""
    vocab, merges = _clip_vocab_and_merges()
    config = CLIPConfig(
        text_config=dict(vocab_size=49408, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=2, hidden_act="gelu"),
        vision_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=16, hidden_act="gelu"),
        projection_dim=32,
    )
    torch.manual_seed(0)
    clip = _perturb(CLIPModel(config)).eval()
    clip_dir = tmp_path / "clip"
    clip.save_pretrained(clip_dir)
    (clip_dir / "vocab.json").write_text(json.dumps(vocab))
    (clip_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges))
    assert main(["clip", str(clip_dir), str(tmp_path / "gadms"), "--image-size", "32", "32"]) == 0
    assert "activation: gelu (from the transformers config's hidden_act)" in capsys.readouterr().out
    converted = AutoModel.from_pretrained(tmp_path / "gadms").eval()
    for gadms in (convert_clip_model(clip, image_size=None).eval(), converted):
        assert gadms.config.text_config.hidden_act == gadms.config.vision_config.hidden_act == "gelu"
        ids, pixels = _token_ids(3, 49408), torch.randn(2, 3, 32, 32)
        with torch.no_grad():
            text = clip.get_text_features(input_ids=ids).pooler_output - gadms.get_text_features(ids)
            image = clip.get_image_features(pixel_values=pixels).pooler_output
            image = image - gadms.get_image_features(pixels)
        assert text.abs().max() <= 1e-6 and image.abs().max() <= 1e-6
    # the same weights with QuickGELU (what dropping hidden_act would give) are far off: the check is sharp
    quick_config = CLIPConfig.from_dict({**config.to_dict(), "text_config": {**config.text_config.to_dict(),
                                                                             "hidden_act": "quick_gelu"}})
    quick = CLIPModel(quick_config).eval()
    quick.load_state_dict(clip.state_dict())
    with torch.no_grad():
        off = clip.get_text_features(input_ids=ids).pooler_output
        off = off - quick.get_text_features(input_ids=ids).pooler_output
    assert off.abs().max() > 1e-3
