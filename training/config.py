"""Training configuration: one dataclass, loaded from a YAML preset in `configs/` with `--set key=value` overrides.

The effective configuration is written next to the checkpoints (`<output_dir>/training_config.yaml`).
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

PRECISIONS = ("no", "bf16", "fp16")


@dataclass
class TrainingConfig:
    """Everything a pretraining or fine-tuning run needs. Field names are the YAML keys.

    Model: `model` is a GA-DMS directory or hub id (for example a converted CLIP), or `"tiny"` for a small model
    built from scratch with a vocabulary of the training captions (CPU demos); `model_overrides` apply to its
    `GADMSConfig` (architecture keys only).
    Objective: `objective` is the recipe (`gadms` pretraining, `irra` fine-tuning / baseline); `objective_preset`
    (`paper` or `released`) and `objective_overrides` give its settings, a `GADMSObjectiveConfig` (GASS, masking
    curves, loss weights; docs/method.md sections 3-6), see `objective_settings()`.
    Data: `data` is a WebPerson-schema data set (hub id, local folder or parquet files) for pretraining; for
    fine-tuning, `benchmark` and `data_root` name a benchmark loaded by `evaluation.benchmarks`.
    Schedule: `warmup_epochs` / `warmup_start_factor` / `schedule_unit` shape the learning rate (docs/method.md
    section 6); `final_temperature` (default `null`: the model's fixed `temperature` throughout, as in the paper)
    anneals the similarity temperature geometrically from the model's `temperature` to this value over the run's
    `epochs` (docs/method.md section 6): a from-scratch model leaves the initial contrastive plateau at a high
    temperature, then a low one weighs the hard negatives.
    Data loading: `num_workers` data-loader processes; `image_cache_mb` (default 0: off) keeps decoded, resized
    training images in memory up to that many MiB per process and worker (a worker's for one epoch), for data
    sets small enough to fit (the CPU demo's 19,200 images at 64x32 take 113 MiB); the pixels are the same with
    or without it.
    """

    objective: str = "gadms"
    objective_preset: str = "paper"
    objective_overrides: dict = field(default_factory=dict)
    model: str = "tiny"
    model_overrides: dict = field(default_factory=dict)
    image_size: list | None = field(default_factory=lambda: [384, 128])

    data: str | None = None
    data_split: str = "train"
    eval_split: str | None = "validation"
    test_split: str | None = "test"
    benchmark: str | None = None
    data_root: str | None = None
    max_train_samples: int | None = None

    epochs: int = 30
    batch_size: int = 128
    learning_rate: float = 1e-5
    weight_decay: float = 4e-5
    adam_betas: list = field(default_factory=lambda: [0.9, 0.999])
    adam_eps: float = 1e-3
    warmup_epochs: float = 5.0
    warmup_start_factor: float = 0.1
    schedule_unit: str = "step"
    final_temperature: float | None = None
    max_steps: int | None = None
    gradient_accumulation_steps: int = 1
    max_grad_norm: float | None = None
    mixed_precision: str = "no"
    activation_checkpointing: bool = False
    text_padding: str = "max_length"
    augment: bool = True
    augment_pad: int = 10
    random_erasing: float = 0.5
    num_workers: int = 0
    image_cache_mb: float = 0
    seed: int = 42

    output_dir: str = "outputs/run"
    save_every_steps: int | None = None
    keep_last: int = 2
    log_every_steps: int = 10
    eval_every_epochs: int = 1
    eval_batch_size: int = 256

    lora: bool = False
    lora_rank: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: str = r".*(text_model|vision_model)\.encoder\.layers\.\d+\.self_attn\.(q_proj|v_proj)"
    lora_modules_to_save: list = field(default_factory=lambda: ["classifier"])
    merge_lora: bool = False

    push_to_hub: str | None = None
    hub_private: bool = True

    def __post_init__(self):
        self._check_types()
        from modeling_gadms.configuration_gadms import RECIPES, as_number

        if self.objective not in RECIPES:
            raise ValueError(f"objective must be one of {RECIPES}, got {self.objective!r}")
        if self.mixed_precision not in PRECISIONS:
            raise ValueError(f"mixed_precision must be one of {PRECISIONS}, got {self.mixed_precision!r}")
        if self.text_padding not in ("max_length", "longest"):
            raise ValueError(f"text_padding must be 'max_length' or 'longest', got {self.text_padding!r}")
        if self.schedule_unit not in ("step", "epoch"):
            raise ValueError(f"schedule_unit must be 'step' or 'epoch', got {self.schedule_unit!r}")
        for name in ("epochs", "batch_size", "gradient_accumulation_steps", "keep_last", "eval_batch_size",
                     "log_every_steps", "eval_every_epochs", "lora_rank", "max_steps", "max_train_samples"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("weight_decay", "warmup_epochs", "augment_pad", "num_workers", "image_cache_mb", "seed",
                     "save_every_steps"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0 < self.warmup_start_factor <= 1:
            raise ValueError(f"warmup_start_factor (the warm-up's first rate as a fraction of learning_rate) must "
                             f"lie in (0, 1], got {self.warmup_start_factor}")
        if not 0 <= self.random_erasing <= 1:
            raise ValueError(f"random_erasing is a probability and must lie in [0, 1], got {self.random_erasing}")
        if not 0 <= self.lora_dropout < 1:
            raise ValueError(f"lora_dropout must lie in [0, 1), got {self.lora_dropout}")
        if not self.adam_eps > 0:
            raise ValueError(f"adam_eps must be positive, got {self.adam_eps}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be positive (or null: no clipping), got {self.max_grad_norm}")
        betas = self.adam_betas
        if isinstance(betas, (str, bytes)) or not isinstance(betas, (list, tuple)) or len(betas) != 2:
            raise ValueError(f"adam_betas must be a pair of numbers such as [0.9, 0.999], got {betas!r}")
        self.adam_betas = [as_number("adam_betas", b, float) for b in betas]
        if not all(0 <= b < 1 for b in self.adam_betas):
            raise ValueError(f"adam_betas must lie in [0, 1), got {self.adam_betas}")
        if self.final_temperature is not None and not self.final_temperature > 0:
            raise ValueError(f"final_temperature must be positive (or null: the model's fixed temperature), "
                             f"got {self.final_temperature}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")
        if self.image_size is not None and len(self.image_size) != 2:
            raise ValueError(f"image_size must be [height, width] or null (the model's), got {self.image_size}")
        self.model_overrides = check_model_overrides(self.model_overrides)
        self.objective_settings()  # refuses an unknown preset, an unknown setting or an invalid value now

    def _check_types(self) -> None:
        """Numbers, booleans: each field of those types holds one (YAML reads `1e-4` without a dot as a string:
        a string that reads as a number is converted); anything else raises `ValueError` naming the key."""
        from modeling_gadms.configuration_gadms import as_number

        kinds = {"int": int, "float": float, "int | None": int, "float | None": float}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type == "bool":
                if not isinstance(value, bool):
                    raise ValueError(f"{f.name} must be true or false, got {value!r}")
            elif f.type in kinds and not (value is None and f.type.endswith("None")):
                setattr(self, f.name, as_number(f.name, value, kinds[f.type]))

    def objective_settings(self):
        """The objective's settings: a `GADMSObjectiveConfig` of `objective_preset` with `objective_overrides`,
        for the recipe `objective`."""
        from modeling_gadms.configuration_gadms import GADMSObjectiveConfig

        overrides = dict(self.objective_overrides or {})
        if "recipe" in overrides:
            raise ValueError("objective_overrides: set the recipe with `objective`, not `recipe`")
        valid = set(_objective_fields()) - {"recipe"}
        for key in overrides:
            if key not in valid:
                raise ValueError(f"objective_overrides: unknown objective setting {key!r}{_nearest(str(key), valid)}")
        try:
            return GADMSObjectiveConfig.from_preset(self.objective_preset, recipe=self.objective, **overrides)
        except ValueError as error:
            raise ValueError(f"objective_preset / objective_overrides: {error}") from None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False), encoding="utf-8")


#: Sub-configurations of the GA-DMS config that `model_overrides` may reach into with dotted keys.
SUB_CONFIGS = ("text_config", "vision_config")


def _nearest(key: str, valid) -> str:
    close = difflib.get_close_matches(key, sorted(valid), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _objective_fields() -> tuple[str, ...]:
    from modeling_gadms.configuration_gadms import OBJECTIVE_FIELDS

    return OBJECTIVE_FIELDS


def model_config_keys() -> dict[str, set[str]]:
    """The keys `model_overrides` accepts: the GA-DMS config's fields (`""`) and those of its text and vision
    towers (`"text_config"`, `"vision_config"`), minus the bookkeeping fields transformers fills in itself."""
    from transformers import CLIPTextConfig, CLIPVisionConfig

    from modeling_gadms.configuration_gadms import GADMSConfig

    internal = {"transformers_version", "architectures"}
    names = {
        "": GADMSConfig,
        "text_config": CLIPTextConfig,
        "vision_config": CLIPVisionConfig,
    }
    return {key: {f.name for f in fields(cls)} - internal for key, cls in names.items()}


def check_model_overrides(overrides: dict | None) -> dict:
    """Validate `model_overrides` and turn dotted keys into nested ones.

    `{"vision_config.patch_size": 8}` becomes `{"vision_config": {"patch_size": 8}}` (merged with any
    `vision_config` dict given); every key must be a field of the GA-DMS config or of its text / vision tower.

    Raises:
        ValueError: naming the unknown key and the nearest valid one.
    """
    if not overrides:
        return {}
    if not isinstance(overrides, dict):
        raise ValueError(f"model_overrides must be a mapping of model config keys to values, got {overrides!r}")
    valid = model_config_keys()
    checked: dict[str, Any] = {}
    for key, value in overrides.items():
        key = str(key)
        head, _, rest = key.partition(".")
        if rest:
            if head not in SUB_CONFIGS:
                raise ValueError(f"model_overrides: {key!r} is not a key of the model config: only "
                                 f"{' and '.join(SUB_CONFIGS)} take dotted keys{_nearest(head, SUB_CONFIGS)}")
            value = {rest: value}
        elif head in SUB_CONFIGS and not isinstance(value, dict):
            raise ValueError(f"model_overrides: {head} takes a mapping of its keys (or dotted keys such as "
                             f"{head}.hidden_size), got {value!r}")
        if head in SUB_CONFIGS:
            for sub_key in value:
                if sub_key not in valid[head]:
                    hint = _nearest(sub_key, valid[head]).replace("'", f"'{head}.", 1)
                    raise ValueError(f"model_overrides: unknown {head} key {f'{head}.{sub_key}'!r}{hint}")
            checked[head] = {**checked.get(head, {}), **value}
        elif head in _objective_fields():
            raise ValueError(f"model_overrides: {head!r} is a setting of the training objective, not of the model: "
                             f"set it under objective_overrides (--set objective_overrides.{head}=...)")
        elif head not in valid[""]:
            hint = _nearest(head, valid[""] | set(SUB_CONFIGS) | set(_objective_fields()))
            if any(f"'{name}'" in hint for name in _objective_fields()):
                hint += " (a setting of the training objective: objective_overrides)"
            raise ValueError(f"model_overrides: unknown model config key {head!r}{hint}")
        else:
            checked[head] = value
    return checked


def parse_override(text: str) -> tuple[str, Any]:
    """`key=value` with the value parsed as YAML (`lr=1e-4`, `lora=true`, `image_size=[96,32]`)."""
    if "=" not in text:
        raise ValueError(f"--set expects key=value, got {text!r}")
    key, raw = text.split("=", 1)
    return key.strip(), yaml.safe_load(raw) if raw.strip() else None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, **values) -> TrainingConfig:
    """Build a [`TrainingConfig`] from a YAML file, then `--set` overrides, then keyword values (CLI flags).

    Unknown keys raise a `ValueError` that names them and the file.
    """
    data: dict[str, Any] = {}
    sources: dict[str, str] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"training config not found: {path}")
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: a training config must be a YAML mapping")
        data.update(loaded)
        sources.update({str(key): f"in {path}" for key in loaded})
    for item in overrides or []:
        key, value = parse_override(item)
        if key.startswith(("model_overrides.", "objective_overrides.")):
            group, name = key.split(".", 1)
            data[group] = {**(data.get(group) or {}), name: value}
        else:
            data[key] = value
            sources[key] = "given with --set"
    data.update({k: v for k, v in values.items() if v is not None})
    known = {f.name for f in fields(TrainingConfig)}
    unknown = sorted(set(data) - known, key=str)
    if unknown:
        clauses = []
        for source in dict.fromkeys(sources.get(str(key), "given") for key in unknown):
            keys = [key for key in unknown if sources.get(str(key), "given") == source]
            hints = "".join(_nearest(str(key), known) for key in keys)
            clauses.append(f"unknown training config keys {source}: {keys}{hints}")
        raise ValueError("; ".join(clauses))
    return TrainingConfig(**data)


__all__ = ["TrainingConfig", "check_model_overrides", "load_config", "model_config_keys", "parse_override"]
