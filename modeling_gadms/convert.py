"""Convert CLIP checkpoints into GA-DMS model directories.

Sources:

- a transformers CLIP checkpoint directory (e.g. a local copy of `openai/clip-vit-base-patch16`);
- an OpenAI-format state dict (`visual.*`, `transformer.*`, `token_embedding.*`, ...: the format the paper's
  code loads; a `.pt`/`.pth` pickle, an OpenAI TorchScript archive, or `.safetensors`).

The vision position grid is resized bilinearly once, at conversion time, to the target resolution (384x128 by
default). The tokenizer is converted so that `<|mask|>` takes the id of CLIP's last BPE merge (49405).

The MLP activation is not stored in OpenAI-format weights: OpenAI's CLIP (and the released GA-DMS / IRRA code
built on it) uses QuickGELU, open_clip's LAION-trained models (e.g. `ViT-B-16` without `-quickgelu`) use exact
GELU. It is chosen with `activation=` / `--activation`, or read from an open_clip model name
(`--open-clip-model`, [`activation_from_open_clip`]); a transformers checkpoint carries it in `hidden_act`.

Command line: `python -m modeling_gadms.convert --help`.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import zipfile
from pathlib import Path

import torch
from transformers import CLIPModel

from .configuration_gadms import GADMSConfig, image_size_hw
from .modeling_gadms import GADMSForPreTraining, GADMSModel, resize_position_embedding
from .processing_gadms import GADMSProcessor, person_image_processor
from .tokenization import (
    CLIP_NUM_MERGES,
    build_tokenizer,
    clip_merges_for_gadms,
    read_merges,
    tokenizer_from_clip_files,
    tokenizer_from_clip_vocab,
)

# OpenAI-format residual block keys -> transformers CLIP encoder layer keys (besides the fused in_proj).
_BLOCK_RENAMES = {
    "attn.out_proj": "self_attn.out_proj",
    "ln_1": "layer_norm1",
    "ln_2": "layer_norm2",
    "mlp.c_fc": "mlp.fc1",
    "mlp.c_proj": "mlp.fc2",
}
# OpenAI-format top-level keys -> GA-DMS keys (projections are transposed separately).
_TOP_RENAMES = {
    "visual.class_embedding": "vision_model.embeddings.class_embedding",
    "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
    "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight",
    "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
    "visual.ln_post.weight": "vision_model.post_layernorm.weight",
    "visual.ln_post.bias": "vision_model.post_layernorm.bias",
    "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
    "positional_embedding": "text_model.embeddings.position_embedding.weight",
    "ln_final.weight": "text_model.final_layer_norm.weight",
    "ln_final.bias": "text_model.final_layer_norm.bias",
}
_TRANSPOSED = {"visual.proj": "visual_projection.weight", "text_projection": "text_projection.weight"}
_VISION_POSITIONS = ("visual.positional_embedding", "vision_model.embeddings.position_embedding.weight")
# Entries of OpenAI / open_clip state dicts that GA-DMS has no use for (it uses a fixed temperature).
_IGNORED_OPENAI_KEYS = {"logit_scale", "input_resolution", "context_length", "vocab_size", "attn_mask"}
_TOWERS = (
    ("visual.transformer.resblocks.", "vision_model.encoder.layers."),
    ("transformer.resblocks.", "text_model.encoder.layers."),
)
# Released GA-DMS / IRRA / NAM checkpoints: OpenAI-format CLIP under `base_model.` plus the MTP decoder
# (`cross_attn`, `cross_modal_transformer`, `ln_pre_t`, `ln_pre_i`, `ln_post`, `mlm_head`) and an optional
# identity `classifier`.
RELEASED_PREFIX = "base_model."
_DECODER_TOWER = (("cross_modal_transformer.resblocks.", "mtp_decoder.cross_modal_transformer.layers."),)
_DECODER_MODULES = ("cross_attn.", "ln_pre_t.", "ln_pre_i.", "ln_post.", "mlm_head.")


#: MLP activations of CLIP towers the converter can set (transformers `hidden_act` names).
ACTIVATIONS = ("quick_gelu", "gelu")
#: The activation of OpenAI's CLIP weights, assumed for OpenAI-format and released checkpoints by default.
DEFAULT_OPENAI_ACTIVATION = "quick_gelu"


class ConversionError(ValueError):
    """A checkpoint cannot be converted; the message lists the offending keys."""


def check_activation(activation: str) -> str:
    """Return `activation` if it is one of [`ACTIVATIONS`]; raise a [`ConversionError`] naming them if not."""
    if activation not in ACTIVATIONS:
        raise ConversionError(f"unknown activation {activation!r}: choose one of {', '.join(ACTIVATIONS)}")
    return activation


def activation_from_open_clip(model_name: str, pretrained: str | None = None) -> tuple[str, str]:
    """The MLP activation of an open_clip model, as `(activation, where it was read)`.

    With a pretrained tag, the tag's own `quick_gelu` flag decides (it describes the weights: open_clip's
    `ViT-B-16` config is GELU but its `openai` tag is QuickGELU). Otherwise a `-quickgelu` name suffix means
    QuickGELU, and any other name is looked up in open_clip's model configs (`quick_gelu` key, GELU when
    absent), which needs open_clip installed. Only configs are read; nothing is downloaded for built-in names.
    """
    try:
        import open_clip
    except ImportError:
        open_clip = None
    if pretrained is not None:
        if open_clip is None:
            raise ConversionError("an open_clip pretrained tag needs open_clip installed (open_clip_torch)")
        tag = open_clip.get_pretrained_cfg(model_name, pretrained)
        if not tag:
            raise ConversionError(f"open_clip has no pretrained tag {pretrained!r} for model {model_name!r}")
        activation = "quick_gelu" if tag.get("quick_gelu", False) else "gelu"
        return activation, f"open_clip pretrained tag {model_name} / {pretrained}"
    if model_name.endswith("-quickgelu"):
        return "quick_gelu", f"open_clip model name {model_name}"
    if open_clip is None:
        raise ConversionError(
            f"cannot tell the activation of open_clip model {model_name!r} without open_clip installed; "
            "pass --activation"
        )
    config = open_clip.get_model_config(model_name)
    if config is None:
        raise ConversionError(f"open_clip has no model named {model_name!r} (see open_clip.list_models())")
    activation = "quick_gelu" if config.get("quick_gelu", False) else "gelu"
    return activation, f"open_clip model config {model_name}"


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint's tensors without executing pickled code.

    `.safetensors` files are read with safetensors; pickles with `torch.load(weights_only=True)`; an OpenAI
    TorchScript archive (such as `ViT-B-16.pt`) with `torch.jit.load`, which runs no Python pickle. A dict
    holding `state_dict` or `model` is unwrapped and a DistributedDataParallel `module.` prefix is removed.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    elif _is_torchscript(path):
        state = torch.jit.load(str(path), map_location="cpu").state_dict()
    else:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConversionError(f"{path} does not hold a state dict of tensors (nor one under 'state_dict'/'model')")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("constants.pkl") or "/code/" in name for name in archive.namelist())


def _count_blocks(state_dict: dict[str, torch.Tensor], prefix: str) -> int:
    indices = {int(m.group(1)) for k in state_dict if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))}
    return max(indices) + 1 if indices else 0


def openai_architecture(state_dict: dict[str, torch.Tensor]) -> dict:
    """Infer the CLIP architecture (widths, depths, patch, vocabulary, source grid) of an OpenAI-format state dict."""
    if "visual.conv1.weight" not in state_dict:
        missing = "visual.conv1.weight" if "visual.layer1.0.conv1.weight" not in state_dict else "a ViT visual tower"
        raise ConversionError(f"not an OpenAI-format CLIP ViT state dict (no {missing}); ResNet CLIPs are not supported")
    conv = state_dict["visual.conv1.weight"]
    num_positions = state_dict["visual.positional_embedding"].shape[0]
    side = math.isqrt(num_positions - 1)
    return {
        "vision_width": conv.shape[0],
        "patch_size": conv.shape[-1],
        "vision_layers": _count_blocks(state_dict, "visual.transformer.resblocks."),
        "vision_intermediate": state_dict["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
        "num_positions": num_positions,
        "square_grid": (side, side) if side * side == num_positions - 1 else None,
        "text_width": state_dict["ln_final.weight"].shape[0],
        "text_layers": _count_blocks(state_dict, "transformer.resblocks."),
        "text_intermediate": state_dict["transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
        "context_length": state_dict["positional_embedding"].shape[0],
        "vocab_size": state_dict["token_embedding.weight"].shape[0],
        "embed_dim": state_dict["text_projection"].shape[1],
    }


def gadms_config_from_openai(
    state_dict: dict[str, torch.Tensor],
    image_size: tuple[int, int] = (384, 128),
    vision_heads: int | None = None,
    text_heads: int | None = None,
    activation: str = DEFAULT_OPENAI_ACTIVATION,
    **config_kwargs,
) -> GADMSConfig:
    """A [`GADMSConfig`] matching an OpenAI-format CLIP state dict, at `image_size` (height, width).

    Head counts default to width / 64, as in OpenAI CLIP. `activation` (`"quick_gelu"`, OpenAI's, or
    `"gelu"`, open_clip's LAION models') is both towers' `hidden_act`: the weights do not record it. Special
    token ids follow the GA-DMS vocabulary layout (the last three ids are `<|mask|>`, SOT, EOT). Extra keyword
    arguments are passed to the config.
    """
    check_activation(activation)
    arch = openai_architecture(state_dict)
    vocab = arch["vocab_size"]
    text = {
        "vocab_size": vocab,
        "hidden_size": arch["text_width"],
        "intermediate_size": arch["text_intermediate"],
        "num_hidden_layers": arch["text_layers"],
        "num_attention_heads": text_heads or max(arch["text_width"] // 64, 1),
        "max_position_embeddings": arch["context_length"],
        "projection_dim": arch["embed_dim"],
        "hidden_act": activation,
        "bos_token_id": vocab - 2,
        "eos_token_id": vocab - 1,
    }
    vision = {
        "hidden_size": arch["vision_width"],
        "intermediate_size": arch["vision_intermediate"],
        "num_hidden_layers": arch["vision_layers"],
        "num_attention_heads": vision_heads or max(arch["vision_width"] // 64, 1),
        "image_size": list(image_size_hw(image_size)),
        "patch_size": arch["patch_size"],
        "projection_dim": arch["embed_dim"],
        "hidden_act": activation,
    }
    defaults = {
        "text_config": text,
        "vision_config": vision,
        "projection_dim": arch["embed_dim"],
        "mask_token_id": vocab - 3,
    }
    return GADMSConfig(**{**defaults, **config_kwargs})


def _source_grid(num_positions: int, target_grid: tuple[int, int], source_image_size, patch_size: int):
    if source_image_size is not None:
        height, width = image_size_hw(source_image_size)
        return height // patch_size, width // patch_size
    if num_positions - 1 == target_grid[0] * target_grid[1]:
        return target_grid
    side = math.isqrt(num_positions - 1)
    if side * side == num_positions - 1:
        return side, side
    raise ConversionError(
        f"cannot tell the patch grid of a {num_positions - 1}-patch position table; pass the source image size"
    )


def openai_to_gadms_state_dict(
    state_dict: dict[str, torch.Tensor], config: GADMSConfig, source_image_size=None
) -> dict[str, torch.Tensor]:
    """Rename an OpenAI-format CLIP state dict to GA-DMS keys, splitting fused q/k/v and resizing positions.

    Keys that are neither CLIP weights nor known metadata raise a [`ConversionError`] listing all of them.
    """
    patch = config.vision_config.patch_size
    target_grid = (config.image_size[0] // patch, config.image_size[1] // patch)
    out, unknown = {}, []
    for key, value in state_dict.items():
        if key in _IGNORED_OPENAI_KEYS:
            continue
        if key in _TOP_RENAMES:
            out[_TOP_RENAMES[key]] = value
        elif key in _TRANSPOSED:
            out[_TRANSPOSED[key]] = value.t().contiguous()
        elif key == _VISION_POSITIONS[0]:
            grid = _source_grid(value.shape[0], target_grid, source_image_size, patch)
            out[_VISION_POSITIONS[1]] = resize_position_embedding(value, grid, target_grid)
        elif not _rename_block_key(key, value, out, _TOWERS):
            unknown.append(key)
    if unknown:
        raise ConversionError(f"unknown keys in the OpenAI-format state dict: {sorted(unknown)}")
    return out


def _rename_block_key(key: str, value: torch.Tensor, out: dict, towers) -> bool:
    for source_prefix, target_prefix in towers:
        match = re.fullmatch(re.escape(source_prefix) + r"(\d+)\.(.+)", key)
        if not match:
            continue
        layer, rest = target_prefix + match.group(1) + ".", match.group(2)
        if rest in ("attn.in_proj_weight", "attn.in_proj_bias"):
            kind = rest.rsplit("_", 1)[-1]
            for name, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0)):
                out[f"{layer}self_attn.{name}.{kind}"] = part.contiguous()
            return True
        module, _, param = rest.rpartition(".")
        if module in _BLOCK_RENAMES:
            out[f"{layer}{_BLOCK_RENAMES[module]}.{param}"] = value
            return True
    return False


def gadms_to_openai_state_dict(
    state_dict: dict[str, torch.Tensor], towers=_TOWERS, top_level: bool = True
) -> dict[str, torch.Tensor]:
    """The inverse of [`openai_to_gadms_state_dict`] for the encoder weights (at the model's own grid).

    Keys outside the two towers and their projections (e.g. an MTP decoder) are left out. `towers` and
    `top_level=False` select other transformer stacks (the decoder's) alone.
    """
    top = {v: k for k, v in _TOP_RENAMES.items()} if top_level else {}
    transposed = {v: k for k, v in _TRANSPOSED.items()} if top_level else {}
    blocks = {v: k for k, v in _BLOCK_RENAMES.items()}
    out, fused = {}, {}
    for key, value in state_dict.items():
        if key in top:
            out[top[key]] = value
        elif key in transposed:
            out[transposed[key]] = value.t().contiguous()
        elif top_level and key == _VISION_POSITIONS[1]:
            out[_VISION_POSITIONS[0]] = value
        else:
            for source_prefix, target_prefix in towers:
                match = re.fullmatch(re.escape(target_prefix) + r"(\d+)\.(.+)\.(weight|bias)", key)
                if not match:
                    continue
                layer, module, param = source_prefix + match.group(1) + ".", match.group(2), match.group(3)
                if module.startswith("self_attn.") and module[len("self_attn."):] in ("q_proj", "k_proj", "v_proj"):
                    fused.setdefault((layer, param), {})[module[len("self_attn."):]] = value
                elif module in blocks:
                    out[f"{layer}{blocks[module]}.{param}"] = value
    for (layer, param), parts in fused.items():
        out[f"{layer}attn.in_proj_{param}"] = torch.cat([parts["q_proj"], parts["k_proj"], parts["v_proj"]], dim=0)
    return out


def released_to_gadms_state_dict(
    state_dict: dict[str, torch.Tensor], config: GADMSConfig, source_image_size=None
) -> dict[str, torch.Tensor]:
    """Rename a released GA-DMS / IRRA / NAM state dict to GA-DMS keys (encoders, MTP decoder, classifier).

    Every key must be recognised: unknown keys raise a [`ConversionError`] listing all of them.
    """
    clip = {k[len(RELEASED_PREFIX):]: v for k, v in state_dict.items() if k.startswith(RELEASED_PREFIX)}
    out = openai_to_gadms_state_dict(clip, config, source_image_size=source_image_size)
    unknown = []
    for key, value in state_dict.items():
        if key.startswith(RELEASED_PREFIX):
            continue
        if key.startswith(_DECODER_MODULES):
            out["mtp_decoder." + key] = value
        elif key.startswith("classifier."):
            out[key] = value
        elif not _rename_block_key(key, value, out, _DECODER_TOWER):
            unknown.append(key)
    if unknown:
        raise ConversionError(f"unknown keys in the released checkpoint: {sorted(unknown)}")
    return out


def gadms_to_released_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of [`released_to_gadms_state_dict`] (at the model's own position grid); takes the state dict
    of a [`GADMSForPreTraining`] (or its flat form, encoder keys without the `gadms.` prefix)."""
    state_dict = {key.removeprefix("gadms."): value for key, value in state_dict.items()}
    out = {RELEASED_PREFIX + k: v for k, v in gadms_to_openai_state_dict(state_dict).items()}
    out.update(gadms_to_openai_state_dict(state_dict, towers=_DECODER_TOWER, top_level=False))
    for key, value in state_dict.items():
        if key.startswith("mtp_decoder.") and key[len("mtp_decoder."):].startswith(_DECODER_MODULES):
            out[key[len("mtp_decoder."):]] = value
        elif key.startswith("classifier."):
            out[key] = value
    return out


def gadms_config_from_released(
    state_dict: dict[str, torch.Tensor], image_size=(384, 128), **config_kwargs
) -> GADMSConfig:
    """A [`GADMSConfig`] for a released checkpoint: the CLIP architecture, decoder depth, classifier size.

    Keyword arguments (e.g. `activation`, QuickGELU by default as the released code uses OpenAI CLIP) go to
    [`gadms_config_from_openai`].
    """
    if "cross_attn.in_proj_weight" not in state_dict:
        raise ConversionError("not a released GA-DMS / IRRA checkpoint: no cross_attn.in_proj_weight")
    clip = {k[len(RELEASED_PREFIX):]: v for k, v in state_dict.items() if k.startswith(RELEASED_PREFIX)}
    width = state_dict["cross_attn.in_proj_weight"].shape[1]
    defaults = {
        "decoder_layers": _count_blocks(state_dict, "cross_modal_transformer.resblocks."),
        "decoder_heads": max(width // 64, 1),
        "num_identities": state_dict["classifier.weight"].shape[0] if "classifier.weight" in state_dict else 0,
    }
    return gadms_config_from_openai(clip, image_size=image_size, **{**defaults, **config_kwargs})


def convert_released_state_dict(
    state_dict: dict[str, torch.Tensor], image_size=(384, 128), source_image_size=None, **config_kwargs
) -> GADMSForPreTraining:
    """Build a [`GADMSForPreTraining`] (the dual encoder, the MTP decoder and the classifier) from a released
    GA-DMS / IRRA / NAM state dict."""
    config = gadms_config_from_released(state_dict, image_size=image_size, **config_kwargs)
    converted = released_to_gadms_state_dict(state_dict, config, source_image_size=source_image_size)
    return load_into(GADMSForPreTraining(config), converted, "released checkpoint")


#: The training heads of [`GADMSForPreTraining`]; every other converted key belongs to its dual encoder.
TRAINING_HEADS = ("mtp_decoder.", "classifier.")


def load_into(model, state_dict: dict[str, torch.Tensor], source: str):
    """Load converted weights (keys of the dual encoder, plus `mtp_decoder.` / `classifier.` keys for a
    [`GADMSForPreTraining`]), raising a [`ConversionError`] that lists every missing or unexpected key."""
    if isinstance(model, GADMSForPreTraining):
        prefix = f"{model.base_model_prefix}."
        state_dict = {(k if k.startswith(TRAINING_HEADS) else prefix + k): v for k, v in state_dict.items()}
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    if missing or unexpected:
        raise ConversionError(f"{source}: missing keys {missing}; unexpected keys {unexpected}")
    shapes = [f"{k}: {tuple(v.shape)} vs {tuple(expected[k].shape)}" for k, v in state_dict.items() if v.shape != expected[k].shape]
    if shapes:
        raise ConversionError(f"{source}: shape mismatches (checkpoint vs model): {shapes}")
    model.load_state_dict(state_dict, strict=False)
    return model


def convert_openai_state_dict(
    state_dict: dict[str, torch.Tensor], image_size=(384, 128), source_image_size=None, **config_kwargs
) -> GADMSModel:
    """Build a [`GADMSModel`] from an OpenAI-format CLIP state dict (see [`gadms_config_from_openai`]; pass
    `activation="gelu"` for open_clip LAION weights, the default `"quick_gelu"` is OpenAI's)."""
    config = gadms_config_from_openai(state_dict, image_size=image_size, **config_kwargs)
    converted = openai_to_gadms_state_dict(state_dict, config, source_image_size=source_image_size)
    return load_into(GADMSModel(config), converted, "OpenAI-format state dict")


def convert_clip_model(clip: CLIPModel, image_size=None, **config_kwargs) -> GADMSModel:
    """Build a [`GADMSModel`] from a transformers `CLIPModel` at `image_size` (height, width; `None`, the
    default, keeps CLIP's size; the command line's default is 384x128).

    Each tower keeps the CLIP config's own settings, its activation (`hidden_act`) included.
    """
    clip_text = clip.config.text_config.to_dict()
    clip_vision = clip.config.vision_config.to_dict()
    source_size = image_size_hw(clip_vision["image_size"])
    target_size = image_size_hw(image_size) if image_size is not None else source_size
    vocab = clip_text["vocab_size"]
    drop = ("model_type", "transformers_version", "architectures", "dtype", "torch_dtype")
    text = {k: v for k, v in clip_text.items() if k not in drop}
    text.update(pad_token_id=0, bos_token_id=vocab - 2, eos_token_id=vocab - 1)
    vision = {k: v for k, v in clip_vision.items() if k not in drop}
    vision["image_size"] = list(target_size)
    defaults = {
        "text_config": text,
        "vision_config": vision,
        "projection_dim": clip.config.projection_dim,
        "mask_token_id": vocab - 3,
    }
    config = GADMSConfig(**{**defaults, **config_kwargs})
    state = {k: v for k, v in clip.state_dict().items() if k != "logit_scale"}
    patch = config.vision_config.patch_size
    key = _VISION_POSITIONS[1]
    state[key] = resize_position_embedding(
        state[key], (source_size[0] // patch, source_size[1] // patch), (target_size[0] // patch, target_size[1] // patch)
    )
    return load_into(GADMSModel(config), state, "transformers CLIP checkpoint")


def tokenizer_from_directory(directory: str | Path):
    """GA-DMS tokenizer from a transformers CLIP tokenizer directory (`vocab.json` + `merges.txt`, or `tokenizer.json`)."""
    directory = Path(directory)
    if (directory / "vocab.json").is_file() and (directory / "merges.txt").is_file():
        return tokenizer_from_clip_files(directory / "vocab.json", directory / "merges.txt")
    if (directory / "tokenizer.json").is_file():
        model = json.loads((directory / "tokenizer.json").read_text(encoding="utf-8"))["model"]
        merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
        return tokenizer_from_clip_vocab(model["vocab"], merges, source=str(directory / "tokenizer.json"))
    raise FileNotFoundError(f"{directory} has no CLIP tokenizer (vocab.json + merges.txt, or tokenizer.json)")


def tokenizer_from_bpe_file(path: str | Path):
    """GA-DMS tokenizer from OpenAI's BPE merges file (`bpe_simple_vocab_16e6.txt.gz`)."""
    return build_tokenizer(clip_merges_for_gadms(read_merges(path, limit=CLIP_NUM_MERGES)))


def _default_bpe_file() -> str | None:
    try:
        from open_clip.tokenizer import default_bpe
    except ImportError:
        return None
    return default_bpe()


def save_converted(model: GADMSModel, tokenizer, output_dir: str | Path) -> Path:
    """Save model (safetensors), processor and code to `output_dir`; check the tokenizer matches the model."""
    if len(tokenizer) != model.config.text_config.vocab_size:
        raise ConversionError(
            f"the tokenizer has {len(tokenizer)} tokens but the text tower's vocabulary has "
            f"{model.config.text_config.vocab_size}"
        )
    if tokenizer.mask_token_id != model.config.mask_token_id:
        raise ConversionError(f"tokenizer <|mask|> id {tokenizer.mask_token_id} != config {model.config.mask_token_id}")
    height, width = model.config.image_size
    processor = GADMSProcessor(person_image_processor(height, width), tokenizer)
    output_dir = Path(output_dir)
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    return output_dir


def convert_pickled_directory(input_dir: str | Path, output_dir: str | Path) -> Path:
    """Rewrite a GA-DMS model folder saved with pickled weights (`pytorch_model.bin`) as safetensors.

    The weights are read with `torch.load(weights_only=True)` (tensors only: no code in the file runs); the
    config, processor and code are saved with them into `output_dir`.
    """
    from transformers import AutoProcessor

    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise FileNotFoundError(f"model folder not found: {input_dir}")
    if Path(output_dir).resolve() == input_dir.resolve():
        raise ConversionError("write the converted model to a new folder, not over the pickled one")
    weights = input_dir / "pytorch_model.bin"
    heads = weights.is_file() and any(
        key.startswith(TRAINING_HEADS) or ".mtp_decoder." in key
        for key in torch.load(weights, map_location="meta", weights_only=True, mmap=True)
    )
    model_class = GADMSForPreTraining if heads else GADMSModel  # keep the training heads when there are any
    model = model_class.from_pretrained(input_dir, use_safetensors=False)
    output_dir = Path(output_dir)
    model.save_pretrained(output_dir)
    try:
        AutoProcessor.from_pretrained(input_dir).save_pretrained(output_dir)
    except (OSError, ValueError) as error:
        raise ConversionError(f"{input_dir} has no loadable processor ({error}); the weights are in {output_dir}")
    return output_dir


def _parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m modeling_gadms.convert",
        description="Convert a CLIP checkpoint into a GA-DMS model directory (safetensors + processor + code).",
    )
    sub = parser.add_subparsers(dest="source", required=True)

    def common(p):
        p.add_argument("output_dir", help="where to save the GA-DMS model")
        p.add_argument("--image-size", type=int, nargs=2, default=[384, 128], metavar=("HEIGHT", "WIDTH"),
                       help="target input resolution (default: 384 128)")
        p.add_argument("--preset", choices=["paper", "released"], default=None,
                       help="no longer used: the objective's preset is chosen when training "
                            "(objective_preset in the training config); accepted and ignored")

    def state_dict_options(p):
        p.add_argument("--bpe", help="OpenAI BPE merges file bpe_simple_vocab_16e6.txt.gz "
                                     "(default: the copy inside open_clip, when installed)")
        p.add_argument("--tokenizer", help="a transformers CLIP tokenizer directory, instead of --bpe")
        p.add_argument("--source-image-size", type=int, nargs=2, metavar=("HEIGHT", "WIDTH"),
                       help="input size of the checkpoint when its position grid is not square")
        p.add_argument("--vision-heads", type=int, help="vision attention heads (default: width / 64)")
        p.add_argument("--text-heads", type=int, help="text attention heads (default: width / 64)")
        p.add_argument("--activation", choices=ACTIVATIONS, default=None,
                       help="MLP activation of both towers, not stored in the weights (default: quick_gelu, "
                            "OpenAI CLIP's; gelu for LAION / open_clip ViT-B-16 weights)")
        p.add_argument("--open-clip-model", metavar="NAME",
                       help="take the activation from this open_clip model (e.g. ViT-B-16 is gelu, "
                            "ViT-B-16-quickgelu quick_gelu); an error if --activation disagrees")
        p.add_argument("--open-clip-pretrained", metavar="TAG",
                       help="with --open-clip-model: the open_clip pretrained tag the weights come from "
                            "(e.g. openai, laion2b_s34b_b88k); its quick_gelu flag decides")

    clip = sub.add_parser("clip", help="a transformers CLIP checkpoint directory (e.g. openai/clip-vit-base-patch16)")
    clip.add_argument("clip_dir", help="directory with config.json, weights and tokenizer files")
    common(clip)

    openai = sub.add_parser("openai", help="an OpenAI-format CLIP state dict (.pt/.pth/.safetensors)")
    openai.add_argument("checkpoint", help="state dict file (e.g. OpenAI's ViT-B-16.pt)")
    common(openai)
    state_dict_options(openai)

    released = sub.add_parser("released", help="a released GA-DMS / IRRA / NAM checkpoint (e.g. best.pth)")
    released.add_argument("checkpoint", help="*.pth holding `model` or `state_dict` (keys with or without module.)")
    common(released)
    state_dict_options(released)
    released.add_argument("--decoder-heads", type=int, help="MTP decoder attention heads (default: width / 64)")

    pickled = sub.add_parser("bin", help="a GA-DMS model folder saved with pickled weights (pytorch_model.bin)")
    pickled.add_argument("model_dir", help="folder with config.json and pytorch_model.bin")
    pickled.add_argument("output_dir", help="new folder for the safetensors copy")
    return parser.parse_args(argv)


_DEFAULT_ACTIVATION_NOTES = {
    "openai": "default for OpenAI weights; pass --activation gelu for LAION / open_clip ViT-B-16 weights",
    "released": "default for released GA-DMS / IRRA checkpoints, which fine-tune OpenAI CLIP; "
                "pass --activation gelu if yours started from GELU weights",
}


def _resolve_activation(args: argparse.Namespace) -> tuple[str, str]:
    """The activation for an `openai` / `released` conversion and the line saying where it came from."""
    if args.open_clip_pretrained and not args.open_clip_model:
        raise ConversionError("--open-clip-pretrained needs --open-clip-model")
    if args.open_clip_model:
        activation, origin = activation_from_open_clip(args.open_clip_model, args.open_clip_pretrained)
        if args.activation and args.activation != activation:
            raise ConversionError(f"--activation {args.activation} disagrees with {origin} ({activation})")
        note = f"from --activation; agrees with {origin}" if args.activation else f"from {origin}"
        hint = "" if args.open_clip_pretrained else _open_clip_tag_hint(args.open_clip_model, activation)
        return activation, f"activation: {activation} ({note}){hint}"
    if args.activation:
        return args.activation, f"activation: {args.activation} (from --activation)"
    default = DEFAULT_OPENAI_ACTIVATION
    return default, f"activation: {default} ({_DEFAULT_ACTIVATION_NOTES[args.source]})"


def _open_clip_tag_hint(model_name: str, activation: str) -> str:
    """A hint naming the pretrained tags of `model_name` whose activation differs from its config's."""
    try:
        from open_clip import get_pretrained_cfg, list_pretrained_tags_by_model
    except ImportError:
        return ""
    quick = activation == "quick_gelu"
    other = [tag for tag in list_pretrained_tags_by_model(model_name)
             if bool(get_pretrained_cfg(model_name, tag).get("quick_gelu")) != quick]
    if not other:
        return ""
    return (f"\nnote: open_clip's {model_name} weights tagged {', '.join(other)} use "
            f"{'gelu' if quick else 'quick_gelu'}: pass --open-clip-pretrained TAG if the checkpoint is one")


def _clip_activation_line(clip: CLIPModel) -> str:
    """Which activation a transformers CLIP checkpoint's towers use (kept by [`convert_clip_model`])."""
    text, vision = clip.config.text_config.hidden_act, clip.config.vision_config.hidden_act
    used = text if text == vision else f"text {text}, vision {vision}"
    return f"activation: {used} (from the transformers config's hidden_act)"


def main(argv=None) -> int:
    """Command-line entry point."""
    args = _parse_args(argv)
    try:
        if args.source == "bin":
            print(f"saved GA-DMS model to {convert_pickled_directory(args.model_dir, args.output_dir)}")
            return 0
        if args.preset:
            print(f"note: --preset {args.preset} has no effect: objective settings are not part of the model; "
                  f"train with `objective_preset: {args.preset}`", file=sys.stderr)
        if args.source == "clip":
            clip = CLIPModel.from_pretrained(args.clip_dir)
            model = convert_clip_model(clip, image_size=tuple(args.image_size))
            tokenizer = tokenizer_from_directory(args.clip_dir)
            print(_clip_activation_line(clip))
        else:
            activation, activation_line = _resolve_activation(args)
            state_dict = load_state_dict(args.checkpoint)
            extra = {}
            if args.source == "released" and args.decoder_heads:
                extra["decoder_heads"] = args.decoder_heads
            convert = convert_released_state_dict if args.source == "released" else convert_openai_state_dict
            model = convert(
                state_dict,
                image_size=tuple(args.image_size),
                source_image_size=args.source_image_size,
                vision_heads=args.vision_heads,
                text_heads=args.text_heads,
                activation=activation,
                **extra,
            )
            if args.tokenizer:
                tokenizer = tokenizer_from_directory(args.tokenizer)
            else:
                bpe = args.bpe or _default_bpe_file()
                if bpe is None:
                    raise ConversionError("no tokenizer: pass --bpe FILE or --tokenizer DIR (or install open_clip_torch)")
                tokenizer = tokenizer_from_bpe_file(bpe)
            print(activation_line)
        out = save_converted(model, tokenizer, args.output_dir)
    except (ConversionError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"saved GA-DMS model to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
