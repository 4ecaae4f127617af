"""GA-DMS configurations: the model ([`GADMSConfig`]) and the training objective ([`GADMSObjectiveConfig`])."""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from transformers import CLIPTextConfig, CLIPVisionConfig, PreTrainedConfig
from transformers.utils import logging

logger = logging.get_logger(__name__)

GASS_VARIANTS = ("paper", "released")

# ViT-B/16 at the person-crop resolution (384 high x 128 wide): 24 x 8 patches + CLS.
DEFAULT_VISION_CONFIG: dict[str, Any] = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "image_size": [384, 128],
    "patch_size": 16,
    "projection_dim": 512,
    "hidden_act": "quick_gelu",
}

# CLIP text tower; the released GA-DMS code pads with id 0 and uses 49405 as `<|mask|>`.
DEFAULT_TEXT_CONFIG: dict[str, Any] = {
    "vocab_size": 49408,
    "hidden_size": 512,
    "intermediate_size": 2048,
    "num_hidden_layers": 12,
    "num_attention_heads": 8,
    "max_position_embeddings": 77,
    "projection_dim": 512,
    "hidden_act": "quick_gelu",
    "pad_token_id": 0,
    "bos_token_id": 49406,
    "eos_token_id": 49407,
}

# Objective settings that differ between the paper and the released code (docs/method.md sections 3, 5).
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"gass_variant": "paper", "mtp_loss_weight": 0.4},
    "released": {"gass_variant": "released", "mtp_loss_weight": 0.3},
}
RECIPES = ("gadms", "irra")
MASK_SCORES = ("gass", "shuffled")
#: GASS uses the last 8 text layers of 12 (the paper); a shallower tower uses all of its layers.
DEFAULT_GASS_LAYERS = 8


def gass_layer_count(layers: int | None, text_layers: int, name: str = "gass_layers") -> int:
    """The number of last text layers GASS uses in a tower of `text_layers` layers: `layers`, or for `None`
    [`DEFAULT_GASS_LAYERS`] (all layers of a shallower tower); a `ValueError` naming `name` when out of range."""
    count = min(DEFAULT_GASS_LAYERS, text_layers) if layers is None else int(layers)
    if not 1 <= count <= text_layers:
        raise ValueError(f"{name} must lie in [1, {text_layers}] (the text layers), got {count}")
    return count


def image_size_hw(image_size: int | list[int] | tuple[int, int]) -> tuple[int, int]:
    """Return `(height, width)` for an `image_size` given as an int (square) or a `[height, width]` pair."""
    if isinstance(image_size, int):
        return image_size, image_size
    if isinstance(image_size, (list, tuple)) and len(image_size) == 2:
        return int(image_size[0]), int(image_size[1])
    raise ValueError(f"image_size must be an int or a [height, width] pair, got {image_size!r}")


def _with_defaults(given: Any, defaults: dict[str, Any]) -> Any:
    """Fill a sub-config given as a dict (or `None`) with the GA-DMS defaults; config objects pass through."""
    if given is None:
        return copy.deepcopy(defaults)
    if isinstance(given, dict):
        return {**copy.deepcopy(defaults), **given}
    return given


class GADMSConfig(PreTrainedConfig):
    r"""
    Configuration of a [`GADMSModel`] (the CLIP dual encoder for text-to-person retrieval) and of the heads that
    [`GADMSForPreTraining`] adds for training (the masked-token-prediction decoder and the identity classifier).

    The defaults are the CLIP ViT-B/16 architecture at 384x128 input. The settings of the training objective
    (GASS, dual masking, loss weights) are not part of the model: they live in [`GADMSObjectiveConfig`].

    Args:
        text_config (`dict` or `CLIPTextConfig`, *optional*):
            The CLIP text tower. Missing keys take the CLIP ViT-B/16 text defaults with `pad_token_id=0`.
        vision_config (`dict` or `CLIPVisionConfig`, *optional*):
            The CLIP vision tower. `image_size` may be rectangular, `[height, width]` (default `[384, 128]`,
            patch 16).
        projection_dim (`int`, defaults to 512):
            Dimension of the joint embedding space (and the width of the MTP decoder).
        temperature (`float`, defaults to 0.02):
            Fixed softmax temperature of the similarity (logit scale `1 / temperature`); not learned.
        initializer_factor (`float`, defaults to 1.0):
            Scale of every initialisation standard deviation.
        decoder_layers (`int`, defaults to 4) and decoder_heads (`int`, defaults to 8):
            The masked-token-prediction decoder of [`GADMSForPreTraining`]: one cross-attention block then
            `decoder_layers` transformer layers of width `projection_dim`.
        num_identities (`int`, defaults to 0):
            Number of training identities of the identity classifier used in fine-tuning (0: no classifier).
        mask_token_id (`int`, defaults to 49405):
            Id of `<|mask|>` in the text vocabulary.

    A `config.json` of an earlier version that still holds objective settings (`gass_variant`,
    `mtp_loss_weight`, ...) loads; the settings are dropped with a warning that says where they live now.

    Example:

    ```python
    >>> from modeling_gadms import GADMSConfig, GADMSModel
    >>> config = GADMSConfig()
    >>> model = GADMSModel(config)  # randomly initialised ViT-B/16 GA-DMS dual encoder
    ```
    """

    model_type = "gadms"
    sub_configs_defaults = {"text_config": CLIPTextConfig, "vision_config": CLIPVisionConfig}

    text_config: dict | CLIPTextConfig | None = None
    vision_config: dict | CLIPVisionConfig | None = None
    projection_dim: int = 512
    temperature: float = 0.02
    initializer_factor: float = 1.0

    decoder_layers: int = 4
    decoder_heads: int = 8
    num_identities: int = 0

    mask_token_id: int = 49405

    def __post_init__(self, **kwargs):
        moved = {key: kwargs.pop(key) for key in list(kwargs) if key in OBJECTIVE_FIELDS}
        if moved:
            logger.warning(
                "this GA-DMS config holds training-objective settings %s, which are no longer part of the model "
                "config: they are ignored here. Set them in training with `objective_preset` / "
                "`objective_overrides` (GADMSObjectiveConfig); see docs/method.md section 6",
                ", ".join(f"{key}={value!r}" for key, value in moved.items()),
            )
        self.text_config = _with_defaults(self.text_config, DEFAULT_TEXT_CONFIG)
        self.vision_config = _with_defaults(self.vision_config, DEFAULT_VISION_CONFIG)
        super().__post_init__(**kwargs)
        self.check()

    @classmethod
    def tiny(cls, vocab_size: int = 49408, image_size: tuple[int, int] = (64, 32), **kwargs) -> "GADMSConfig":
        """A very small GA-DMS (2-layer towers of width 64, 16-pixel patches) for tests and CPU demos.

        `vocab_size` is the tokenizer's length; the special ids follow the GA-DMS layout
        (`<|mask|>`, `<|startoftext|>`, `<|endoftext|>` are the last three ids). `text_config` / `vision_config`
        given as dicts are merged into the tiny towers (e.g. `text_config={"hidden_size": 128}`).
        """
        tower = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2}
        text = {**tower, "vocab_size": vocab_size, "bos_token_id": vocab_size - 2, "eos_token_id": vocab_size - 1}
        vision = {**tower, "image_size": list(image_size), "patch_size": 16}
        if isinstance(kwargs.get("text_config"), dict):
            text.update(kwargs.pop("text_config"))
        if isinstance(kwargs.get("vision_config"), dict):
            vision.update(kwargs.pop("vision_config"))
        defaults = {
            "text_config": text,
            "vision_config": vision,
            "projection_dim": 32,
            "decoder_layers": 1,
            "decoder_heads": 4,
            "mask_token_id": vocab_size - 3,
        }
        return cls(**{**defaults, **kwargs})

    @property
    def image_size(self) -> tuple[int, int]:
        """Input resolution `(height, width)` of the vision tower."""
        return image_size_hw(self.vision_config.image_size)

    @property
    def logit_scale(self) -> float:
        """Multiplier of the cosine similarity: `1 / temperature`."""
        return 1.0 / self.temperature

    def check(self) -> None:
        """Raise a `ValueError` naming the first invalid field (run on construction; call it again after
        changing fields in place)."""
        height, width = self.image_size
        patch = self.vision_config.patch_size
        if not isinstance(patch, int):
            raise ValueError(f"vision_config.patch_size must be an int, got {patch!r}")
        if height % patch or width % patch:
            raise ValueError(
                f"vision_config.image_size {height}x{width} (height x width) is not divisible by the patch size {patch}"
            )
        if not self.temperature > 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")
        if self.decoder_layers < 0 or self.decoder_heads < 1 or self.projection_dim % self.decoder_heads:
            raise ValueError(
                f"projection_dim ({self.projection_dim}) must be divisible by decoder_heads ({self.decoder_heads}) "
                f"and decoder_layers ({self.decoder_layers}) must be >= 0"
            )
        if self.num_identities < 0:
            raise ValueError(f"num_identities must be >= 0, got {self.num_identities}")
        if not 0 <= self.mask_token_id < self.text_config.vocab_size:
            raise ValueError(
                f"mask_token_id {self.mask_token_id} is outside the text vocabulary "
                f"(vocab_size {self.text_config.vocab_size})"
            )


@dataclass
class GADMSObjectiveConfig:
    r"""
    Settings of the training objective: which recipe, GASS, the dual-masking curves, the MLM of fine-tuning and
    the loss weights (docs/method.md sections 3-6). Not part of the model: the training configuration carries
    them (`objective`, `objective_preset`, `objective_overrides`), and the model's `config.json` never does.

    The defaults are the paper's (`from_preset("paper")`); `from_preset("released")` gives the values of the
    authors' code.

    Args:
        recipe (`str`, defaults to `"gadms"`): `"gadms"` (pretraining: dual masking, SDM on the noise view, MTP
            on the informative view, new GASS scores) or `"irra"` (fine-tuning and baseline: SDM on the clean
            caption, identity loss, random MLM).
        gass_variant (`str`, `"paper"`): `"paper"` (the paper's formulation) or `"released"` (the authors' code).
        gass_layers (`int`, *optional*): GASS uses the last `gass_layers` text layers; `None` is 8 (the paper's
            choice for a 12-layer tower), or every layer of a shallower tower.
        gass_scales (`tuple[int]`, `(1, 2)`): window sizes of the multi-scale pooling of GASS.
        mask_scores (`str`, `"gass"`): what drives the dual masking: `"gass"` (each sample's scores of its previous
            visit, the method) or `"shuffled"` (the same scores shuffled among each caption's ordinary tokens at
            every visit: the same masking rates with no information on which token is which; the ablation that
            isolates what GASS adds, docs/method.md section 13).
        mask_alpha_noise (0.2), mask_alpha_informative (0.3): maximum masking probability of the noise view and
            of the informative (MTP) view.
        mask_lambda (20), mask_gamma_noise (0.9), mask_gamma_informative (0.1): steepness and centres of the two
            sigmoid masking curves.
        initial_token_score (0.85): the score of every token before its sample is first visited.
        mask_replace_prob (0.8), mask_random_prob (0.1): BERT-style replacement of a chosen token: mask token,
            random token, otherwise unchanged.
        mlm_probability (0.15): masking rate of the random MLM of the `irra` recipe.
        sdm_loss_weight, mtp_loss_weight, id_loss_weight, mlm_loss_weight: loss weights; `mtp_loss_weight` is
            the paper's beta (0.4 paper, 0.3 released).
    """

    recipe: str = "gadms"
    gass_variant: str = "paper"
    gass_layers: int | None = None
    gass_scales: tuple[int, ...] = (1, 2)
    mask_scores: str = "gass"
    mask_alpha_noise: float = 0.2
    mask_alpha_informative: float = 0.3
    mask_lambda: float = 20.0
    mask_gamma_noise: float = 0.9
    mask_gamma_informative: float = 0.1
    initial_token_score: float = 0.85
    mask_replace_prob: float = 0.8
    mask_random_prob: float = 0.1
    mlm_probability: float = 0.15
    sdm_loss_weight: float = 1.0
    mtp_loss_weight: float = 0.4
    id_loss_weight: float = 1.0
    mlm_loss_weight: float = 1.0

    def __post_init__(self):
        for f in fields(self):  # numbers: a number, or a string that reads as one (YAML reads `1e-4` as a string)
            value = getattr(self, f.name)
            if f.type == "float" or f.type == "int | None" and value is not None:
                setattr(self, f.name, as_number(f.name, value, float if f.type == "float" else int))
        if isinstance(self.gass_scales, (str, bytes)) or not hasattr(self.gass_scales, "__iter__"):
            raise ValueError(f"gass_scales must be a list of window sizes, got {self.gass_scales!r}")
        self.gass_scales = tuple(as_number("gass_scales", s, int) for s in self.gass_scales)
        if self.recipe not in RECIPES:
            raise ValueError(f"recipe must be one of {RECIPES}, got {self.recipe!r}")
        if self.gass_variant not in GASS_VARIANTS:
            raise ValueError(f"gass_variant must be one of {GASS_VARIANTS}, got {self.gass_variant!r}")
        if self.mask_scores not in MASK_SCORES:
            raise ValueError(f"mask_scores must be one of {MASK_SCORES}, got {self.mask_scores!r}")
        if self.gass_layers is not None and int(self.gass_layers) < 1:
            raise ValueError(f"gass_layers must be >= 1 (or None for the default), got {self.gass_layers}")
        if not self.gass_scales or any(s < 1 for s in self.gass_scales):
            raise ValueError(f"gass_scales must be a non-empty list of positive window sizes, got {self.gass_scales}")
        for name in ("mask_alpha_noise", "mask_alpha_informative", "mask_gamma_noise", "mask_gamma_informative",
                     "initial_token_score", "mask_replace_prob", "mask_random_prob", "mlm_probability"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} is a probability and must lie in [0, 1], got {value}")
        if self.mask_replace_prob + self.mask_random_prob > 1.0:
            raise ValueError(
                f"mask_replace_prob + mask_random_prob must not exceed 1, got "
                f"{self.mask_replace_prob} + {self.mask_random_prob}"
            )
        for name in ("sdm_loss_weight", "mtp_loss_weight", "id_loss_weight", "mlm_loss_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.mask_lambda >= 0:  # 0: flat curves (every token at half the view's alpha)
            raise ValueError(f"mask_lambda (the masking curves' steepness) must be >= 0, got {self.mask_lambda}")

    @classmethod
    def from_preset(cls, name: str = "paper", **overrides) -> "GADMSObjectiveConfig":
        """The settings of a named preset (`"paper"` or `"released"`); keyword arguments override them."""
        if name not in PRESETS:
            raise ValueError(f"unknown GA-DMS preset {name!r}; choose one of {sorted(PRESETS)}")
        unknown = sorted(set(overrides) - set(OBJECTIVE_FIELDS))
        if unknown:
            raise ValueError(f"unknown objective settings {unknown}; valid: {sorted(OBJECTIVE_FIELDS)}")
        return cls(**{**PRESETS[name], **overrides})

    def num_gass_layers(self, text_layers: int) -> int:
        """The number of text layers GASS uses in a tower of `text_layers` layers (checked)."""
        return gass_layer_count(self.gass_layers, text_layers)

    def to_dict(self) -> dict[str, Any]:
        """The settings as a plain dict (YAML / JSON friendly)."""
        values = asdict(self)
        values["gass_scales"] = list(self.gass_scales)
        return values


def as_number(name: str, value: Any, kind: type) -> int | float:
    """`value` as a `kind` (int or float): a number (not a bool) or a string that reads as one; an int must be
    whole. Anything else raises `ValueError` naming the setting."""
    expected = "a whole number" if kind is int else "a number"
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ValueError(f"{name} must be {expected}, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    if kind is int:
        if value != int(value):
            raise ValueError(f"{name} must be {expected}, got {value!r}")
        return int(value)
    return float(value)


#: The names of the objective settings (the fields of [`GADMSObjectiveConfig`]).
OBJECTIVE_FIELDS = tuple(f.name for f in fields(GADMSObjectiveConfig))


__all__ = ["GADMSConfig", "GADMSObjectiveConfig", "OBJECTIVE_FIELDS", "PRESETS", "RECIPES", "image_size_hw"]
