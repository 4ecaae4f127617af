"""GA-DMS model configuration."""

from __future__ import annotations

import copy
from typing import Any

from transformers import CLIPTextConfig, CLIPVisionConfig, PreTrainedConfig

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

# Values that differ between the paper and the released code (SPEC sections 3, 5).
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"gass_variant": "paper", "mtp_loss_weight": 0.4},
    "released": {"gass_variant": "released", "mtp_loss_weight": 0.3},
}


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
    Configuration of a [`GADMSModel`]: a CLIP dual encoder for text-to-person retrieval plus the settings of the
    GA-DMS training objectives (gradient-attention similarity scores, dual masking, SDM / MTP / ID losses).

    The defaults are the CLIP ViT-B/16 architecture at 384x128 input with the `paper` preset. Use
    [`GADMSConfig.from_preset`] for the `released` values (those of the authors' code).

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
            The masked-token-prediction decoder: one cross-attention block then `decoder_layers` transformer
            layers of width `projection_dim`.
        num_identities (`int`, defaults to 0):
            Number of training identities of the identity classifier used in fine-tuning (0: no classifier).
        gass_layers (`int`, defaults to 8):
            GASS uses the last `gass_layers` text layers.
        gass_scales (`list[int]`, defaults to `[1, 2]`):
            Window sizes of the multi-scale pooling of GASS.
        gass_variant (`str`, defaults to `"paper"`):
            `"paper"` (the paper's formulation) or `"released"` (the authors' code, for reproduction).
        mask_alpha_noise (`float`, 0.2), mask_alpha_informative (`float`, 0.3):
            Maximum masking probability of the noise view and of the informative (MTP) view.
        mask_lambda (`float`, 20), mask_gamma_noise (`float`, 0.9), mask_gamma_informative (`float`, 0.1):
            Steepness and centres of the two sigmoid masking curves.
        initial_token_score (`float`, 0.85):
            The score every token has before its sample is first visited.
        mask_replace_prob (`float`, 0.8), mask_random_prob (`float`, 0.1):
            BERT-style replacement of a chosen token: mask token, random token, otherwise unchanged.
        mlm_probability (`float`, 0.15):
            Masking rate of the random MLM of the fine-tuning recipe.
        sdm_loss_weight, mtp_loss_weight, id_loss_weight, mlm_loss_weight (`float`):
            Loss weights; `mtp_loss_weight` is the paper's beta (0.4 paper, 0.3 released).
        mask_token_id (`int`, defaults to 49405):
            Id of `<|mask|>` in the text vocabulary.

    Example:

    ```python
    >>> from modeling_gadms import GADMSConfig, GADMSModel
    >>> config = GADMSConfig.from_preset("released")
    >>> model = GADMSModel(config)  # randomly initialised ViT-B/16 GA-DMS
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

    gass_layers: int = 8
    gass_scales: list[int] | tuple[int, ...] = (1, 2)
    gass_variant: str = "paper"

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

    mask_token_id: int = 49405

    def __post_init__(self, **kwargs):
        self.text_config = _with_defaults(self.text_config, DEFAULT_TEXT_CONFIG)
        self.vision_config = _with_defaults(self.vision_config, DEFAULT_VISION_CONFIG)
        super().__post_init__(**kwargs)
        self.gass_scales = [int(s) for s in self.gass_scales]
        self._check()

    @classmethod
    def from_preset(cls, name: str, **kwargs) -> "GADMSConfig":
        """Build a config from a named preset (`"paper"` or `"released"`); keyword arguments override it."""
        if name not in PRESETS:
            raise ValueError(f"Unknown GA-DMS preset {name!r}; choose one of {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **kwargs})

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
            "gass_layers": 2,
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

    def _check(self) -> None:
        """Raise a `ValueError` naming the first invalid field."""
        height, width = self.image_size
        patch = self.vision_config.patch_size
        if not isinstance(patch, int):
            raise ValueError(f"vision_config.patch_size must be an int, got {patch!r}")
        if height % patch or width % patch:
            raise ValueError(
                f"vision_config.image_size {height}x{width} (height x width) is not divisible by the patch size {patch}"
            )
        if self.gass_variant not in GASS_VARIANTS:
            raise ValueError(f"gass_variant must be one of {GASS_VARIANTS}, got {self.gass_variant!r}")
        for name in (
            "mask_alpha_noise",
            "mask_alpha_informative",
            "mask_gamma_noise",
            "mask_gamma_informative",
            "initial_token_score",
            "mask_replace_prob",
            "mask_random_prob",
            "mlm_probability",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} is a probability and must lie in [0, 1], got {value}")
        if self.mask_replace_prob + self.mask_random_prob > 1.0:
            raise ValueError(
                f"mask_replace_prob + mask_random_prob must not exceed 1, got "
                f"{self.mask_replace_prob} + {self.mask_random_prob}"
            )
        if not self.temperature > 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")
        if not 1 <= self.gass_layers <= self.text_config.num_hidden_layers:
            raise ValueError(
                f"gass_layers must lie in [1, {self.text_config.num_hidden_layers}] (the text layers), "
                f"got {self.gass_layers}"
            )
        if not self.gass_scales or any(s < 1 for s in self.gass_scales):
            raise ValueError(f"gass_scales must be a non-empty list of positive window sizes, got {self.gass_scales}")
        if self.decoder_layers < 0 or self.decoder_heads < 1 or self.projection_dim % self.decoder_heads:
            raise ValueError(
                f"projection_dim ({self.projection_dim}) must be divisible by decoder_heads ({self.decoder_heads}) "
                f"and decoder_layers ({self.decoder_layers}) must be >= 0"
            )
        if self.num_identities < 0:
            raise ValueError(f"num_identities must be >= 0, got {self.num_identities}")
        for name in ("sdm_loss_weight", "mtp_loss_weight", "id_loss_weight", "mlm_loss_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.mask_token_id < self.text_config.vocab_size:
            raise ValueError(
                f"mask_token_id {self.mask_token_id} is outside the text vocabulary "
                f"(vocab_size {self.text_config.vocab_size})"
            )


__all__ = ["GADMSConfig", "PRESETS", "image_size_hw"]
