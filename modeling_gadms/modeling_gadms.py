"""GA-DMS models, built from transformers' CLIP modules.

- [`GADMSModel`]: the dual encoder users load for retrieval (`AutoModel`): the two towers, their projections,
  the similarity, and the SDM loss with `return_loss=True`.
- [`GADMSForPreTraining`]: a [`GADMSModel`] plus the training heads (the masked-token-prediction decoder and the
  identity classifier) and the two training recipes (`AutoModelForPreTraining`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.clip.modeling_clip import (
    CLIPPreTrainedModel,
    CLIPTextModel,
    CLIPVisionEmbeddings,
    CLIPVisionModel,
)
from transformers.utils import ModelOutput

from .configuration_gadms import GADMSConfig, GADMSObjectiveConfig, image_size_hw
from .decoder import GADMSMTPDecoder
from .gass import gass_scores
from .losses import sdm_loss
from .objectives import gadms_objective, irra_objective
from .transformers_compat import LibraryInitMixin, build_clip_vision_modules


def resize_position_embedding(
    position_embedding: torch.Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int]
) -> torch.Tensor:
    """Resize a ViT position table `[1 + gh * gw, dim]` from one patch grid to another.

    The CLS position is kept; the patch positions are resized as a `(height, width)` image with bilinear
    interpolation (`align_corners=False`), the way CLIP checkpoints are adapted to 384x128 person crops.
    """
    old_grid, new_grid = tuple(old_grid), tuple(new_grid)
    if position_embedding.shape[0] != 1 + old_grid[0] * old_grid[1]:
        raise ValueError(
            f"position table has {position_embedding.shape[0]} rows, expected 1 + {old_grid[0]}x{old_grid[1]}"
        )
    if old_grid == new_grid:
        return position_embedding
    cls_pos, patch_pos = position_embedding[:1], position_embedding[1:]
    dim = patch_pos.shape[-1]
    grid = patch_pos.reshape(1, old_grid[0], old_grid[1], dim).permute(0, 3, 1, 2)
    compute_dtype = torch.promote_types(grid.dtype, torch.float32)  # half precision is resized in float32
    grid = F.interpolate(grid.to(compute_dtype), size=new_grid, mode="bilinear", align_corners=False)
    patch_pos = grid.permute(0, 2, 3, 1).reshape(new_grid[0] * new_grid[1], dim).to(position_embedding.dtype)
    return torch.cat([cls_pos, patch_pos], dim=0)


class GADMSVisionEmbeddings(CLIPVisionEmbeddings):
    """CLIP patch + position embeddings for a rectangular input (`image_size = [height, width]`).

    The position table is sized for the patch grid once, so no interpolation happens in the forward pass.
    """

    def __init__(self, config):
        nn.Module.__init__(self)
        self.config = config
        self.embed_dim = config.hidden_size
        self.image_size = image_size_hw(config.image_size)
        self.patch_size = config.patch_size
        self.grid_size = (self.image_size[0] // self.patch_size, self.image_size[1] // self.patch_size)

        self.class_embedding = nn.Parameter(torch.randn(self.embed_dim))
        self.patch_embedding = nn.Conv2d(
            in_channels=config.num_channels,
            out_channels=self.embed_dim,
            kernel_size=self.patch_size,
            stride=self.patch_size,
            bias=False,
        )
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.num_positions = self.num_patches + 1
        self.position_embedding = nn.Embedding(self.num_positions, self.embed_dim)
        self.position_ids = nn.Buffer(torch.arange(self.num_positions).expand((1, -1)), persistent=False)

    def interpolate_pos_encoding(self, embeddings: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Position table resized (bilinear) to the grid of a `height x width` input."""
        new_grid = (height // self.patch_size, width // self.patch_size)
        table = resize_position_embedding(self.position_embedding.weight, self.grid_size, new_grid)
        return table.unsqueeze(0)

    def forward(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        batch_size, _, height, width = pixel_values.shape
        if not interpolate_pos_encoding and (height, width) != self.image_size:
            raise ValueError(
                f"Input image size {height}x{width} (height x width) does not match the model's "
                f"{self.image_size[0]}x{self.image_size[1]}; resize with GADMSProcessor or pass "
                f"interpolate_pos_encoding=True"
            )
        target_dtype = self.patch_embedding.weight.dtype
        patch_embeds = self.patch_embedding(pixel_values.to(dtype=target_dtype)).flatten(2).transpose(1, 2)
        class_embeds = self.class_embedding.expand(batch_size, 1, -1).to(patch_embeds.dtype)
        embeddings = torch.cat([class_embeds, patch_embeds], dim=1)
        if interpolate_pos_encoding:
            return embeddings + self.interpolate_pos_encoding(embeddings, height, width)
        return embeddings + self.position_embedding(self.position_ids)


class GADMSVisionModel(LibraryInitMixin, CLIPVisionModel):
    """transformers' CLIP vision tower with [`GADMSVisionEmbeddings`] (rectangular inputs); forward unchanged.

    `CLIPVisionModel.__init__` cannot take a rectangular `image_size`, so its submodules are built by
    `transformers_compat.build_clip_vision_modules` (checked against transformers' own in the tests)."""

    def __init__(self, config):
        CLIPPreTrainedModel.__init__(self, config)
        build_clip_vision_modules(self, config, GADMSVisionEmbeddings(config))
        self.post_init()


@dataclass
class GADMSEncoderOutput(ModelOutput):
    """Output of [`GADMSModel.encode_text`] / [`GADMSModel.encode_image`].

    Args:
        embeds (`torch.FloatTensor` of shape `(batch_size, projection_dim)`):
            Global feature (EOS token for text, CLS token for images) after the final layer norm and projection;
            not L2-normalised.
        token_embeds (`torch.FloatTensor` of shape `(batch_size, sequence_length, projection_dim)`, *optional*):
            Every token after the final layer norm and the projection (the MTP decoder's input); only when
            `output_tokens=True`.
        model_output (`BaseModelOutputWithPooling`):
            The tower's own output (hidden states before the projection).
    """

    embeds: torch.FloatTensor | None = None
    token_embeds: torch.FloatTensor | None = None
    model_output: BaseModelOutputWithPooling | None = None


@dataclass
class GADMSOutput(ModelOutput):
    """Output of [`GADMSModel.forward`].

    Args:
        loss (`torch.FloatTensor`, *optional*): the SDM loss of the batch, with `return_loss=True`.
        logits_per_image (`torch.FloatTensor` of shape `(image_batch_size, text_batch_size)`):
            Cosine similarities of the L2-normalised embeddings divided by the fixed temperature.
        logits_per_text (`torch.FloatTensor` of shape `(text_batch_size, image_batch_size)`):
            The transpose of `logits_per_image`.
        text_embeds (`torch.FloatTensor` of shape `(text_batch_size, projection_dim)`): L2-normalised.
        image_embeds (`torch.FloatTensor` of shape `(image_batch_size, projection_dim)`): L2-normalised.
        text_model_output, vision_model_output (`BaseModelOutputWithPooling`): the towers' outputs.
    """

    loss: torch.FloatTensor | None = None
    logits_per_image: torch.FloatTensor | None = None
    logits_per_text: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    text_model_output: BaseModelOutputWithPooling | None = None
    vision_model_output: BaseModelOutputWithPooling | None = None

    def to_tuple(self):
        return tuple(
            self[k] if k not in ("text_model_output", "vision_model_output") else self[k].to_tuple()
            for k in self.keys()
        )


@dataclass
class GADMSForPreTrainingOutput(ModelOutput):
    """Output of [`GADMSForPreTraining.forward`]: the total loss, each term, and the new GASS scores.

    Args:
        loss (`torch.FloatTensor`): the recipe's weighted total.
        sdm_loss, mtp_loss, id_loss, mlm_loss (`torch.FloatTensor`, *optional*): the terms, unweighted;
            `mtp_loss` for the `gadms` recipe, `id_loss` (with a classifier) and `mlm_loss` for `irra`.
        token_scores (`torch.FloatTensor` of shape `(batch_size, sequence_length)`, *optional*):
            the new GASS scores of the unmasked captions (`gadms` recipe), for the samples' next visit.
        logits_per_text (`torch.FloatTensor` of shape `(text_batch_size, image_batch_size)`):
            Scaled cosine similarities of the captions the contrastive loss saw (the noise view for `gadms`).
        text_embeds, image_embeds (`torch.FloatTensor` of shape `(batch_size, projection_dim)`): L2-normalised.
    """

    loss: torch.FloatTensor | None = None
    sdm_loss: torch.FloatTensor | None = None
    mtp_loss: torch.FloatTensor | None = None
    id_loss: torch.FloatTensor | None = None
    mlm_loss: torch.FloatTensor | None = None
    token_scores: torch.FloatTensor | None = None
    logits_per_text: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None


def _check_pairs(input_ids: torch.Tensor, pixel_values: torch.Tensor, what: str) -> None:
    """`what` takes (caption, image) pairs: as many images as captions."""
    if input_ids.shape[0] != pixel_values.shape[0]:
        raise ValueError(
            f"{what} needs one image per caption: {input_ids.shape[0]} captions, {pixel_values.shape[0]} images"
        )


def _only_pickled_weights(name_or_path, kwargs) -> bool:
    """Whether a model folder, or a hub repository in the local cache, has `pytorch_model.bin` weights and no
    safetensors ones."""
    from transformers.utils import cached_file

    def has(filename: str) -> bool:
        try:
            return cached_file(name_or_path, filename, subfolder=kwargs.get("subfolder", ""),
                               local_files_only=True, revision=kwargs.get("revision"),
                               _raise_exceptions_for_missing_entries=False) is not None
        except OSError:
            return False

    pickles = has("pytorch_model.bin") or has("pytorch_model.bin.index.json")
    return pickles and not (has("model.safetensors") or has("model.safetensors.index.json"))


class GADMSPreTrainedModel(LibraryInitMixin, CLIPPreTrainedModel):
    """Weight initialisation and loading for GA-DMS models (CLIP's initialisation for the CLIP towers)."""

    config: GADMSConfig
    config_class = GADMSConfig
    base_model_prefix = "gadms"
    _no_split_modules = ["CLIPTextEmbeddings", "CLIPEncoderLayer", "GADMSVisionEmbeddings"]

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, use_safetensors: bool | None = True,
                        **kwargs):
        """`PreTrainedModel.from_pretrained` that reads safetensors weights only (`use_safetensors=True`).

        A folder or repository holding only pickled weights (`pytorch_model.bin`) is refused with the command
        that converts it (`python -m modeling_gadms.convert bin`); pass `use_safetensors=False` to accept
        pickles anyway (transformers then reads them with `torch.load(weights_only=True)`).
        """
        try:
            return super().from_pretrained(pretrained_model_name_or_path, *model_args,
                                           use_safetensors=use_safetensors, **kwargs)
        except OSError as error:
            if use_safetensors and _only_pickled_weights(pretrained_model_name_or_path, kwargs):
                raise OSError(
                    f"{pretrained_model_name_or_path} holds pickled weights (pytorch_model.bin) but no safetensors: "
                    "GA-DMS models load safetensors only. Convert it once with "
                    f"`python -m modeling_gadms.convert bin {pretrained_model_name_or_path} NEW_DIR`, "
                    "or pass use_safetensors=False if you trust the file"
                ) from error
            raise

    def save_pretrained(self, save_directory, *args, **kwargs):
        """`PreTrainedModel.save_pretrained`, with both Auto classes in the saved `auto_map`: a saved directory
        loads as the dual encoder (`AutoModel`) and as the pretraining model (`AutoModelForPreTraining`), also
        with `trust_remote_code=True` where this package is not installed."""
        self.config.auto_map = {
            **(getattr(self.config, "auto_map", None) or {}),
            "AutoModel": f"{GADMSModel.__module__.split('.')[-1]}.GADMSModel",
            "AutoModelForPreTraining": f"{GADMSForPreTraining.__module__.split('.')[-1]}.GADMSForPreTraining",
        }
        return super().save_pretrained(save_directory, *args, **kwargs)

    def _init_weights(self, module):
        super()._init_weights(module)
        factor = self.config.initializer_factor
        if isinstance(module, GADMSModel):
            init.normal_(module.text_projection.weight, std=self.config.text_config.hidden_size**-0.5 * factor)
            init.normal_(module.visual_projection.weight, std=self.config.vision_config.hidden_size**-0.5 * factor)
        elif isinstance(module, GADMSForPreTraining):
            if module.classifier is not None:  # IRRA: std 0.001, bias 0
                init.normal_(module.classifier.weight, std=0.001)
                init.zeros_(module.classifier.bias)
        elif isinstance(module, GADMSMTPDecoder):
            module.init_weights()


class GADMSModel(GADMSPreTrainedModel):
    r"""
    GA-DMS dual encoder: transformers' CLIP text tower, a CLIP vision tower with native rectangular position
    embeddings (384x128 person crops by default), and linear projections into a shared space. Similarity is the
    cosine of the L2-normalised global features divided by a fixed temperature (`config.temperature`).

    Example:

    ```python
    >>> import modeling_gadms  # registers the classes with transformers' Auto classes
    >>> from transformers import AutoModel, AutoProcessor
    >>> model = AutoModel.from_pretrained("org/gadms-vitb16")
    >>> processor = AutoProcessor.from_pretrained("org/gadms-vitb16")
    >>> inputs = processor(text=["a man in a black jacket"], images=[image], return_tensors="pt")
    >>> outputs = model(**inputs)
    >>> outputs.logits_per_text  # (texts, images)
    ```
    """

    main_input_name = "input_ids"
    # the training heads of a GADMSForPreTraining checkpoint (or of an earlier version's) are dropped quietly
    _keys_to_ignore_on_load_unexpected = [r"(^|\.)mtp_decoder\.", r"(^|\.)classifier\."]

    def __init__(self, config: GADMSConfig):
        super().__init__(config)
        text_config, vision_config = config.text_config, config.vision_config
        self.text_embed_dim = text_config.hidden_size
        self.vision_embed_dim = vision_config.hidden_size

        self.text_model = CLIPTextModel._from_config(text_config)
        self.vision_model = GADMSVisionModel._from_config(vision_config)
        self.visual_projection = nn.Linear(self.vision_embed_dim, config.projection_dim, bias=False)
        self.text_projection = nn.Linear(self.text_embed_dim, config.projection_dim, bias=False)
        self.post_init()

    def compute_token_scores(self, input_ids: torch.Tensor, pixel_values: torch.Tensor, variant: str = "paper",
                             num_layers: int | None = None, scales=(1, 2)) -> torch.Tensor:
        """GASS scores `(batch, sequence_length)` in [0, 1] of unmasked captions against their images
        (docs/method.md section 3; see [`gass_scores`] for the arguments)."""
        with torch.no_grad():
            image_embeds = self.get_image_features(pixel_values)
        return gass_scores(self, input_ids, image_embeds, variant=variant, num_layers=num_layers, scales=scales)

    @property
    def logit_scale(self) -> float:
        """The fixed multiplier of the cosine similarity, `1 / config.temperature`."""
        return self.config.logit_scale

    def encode_text(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_tokens: bool = False,
        **kwargs,
    ) -> GADMSEncoderOutput:
        """Run the text tower once; return the projected EOS feature and, optionally, all projected tokens."""
        output = self.text_model(input_ids=input_ids, attention_mask=attention_mask, return_dict=True, **kwargs)
        embeds = self.text_projection(output.pooler_output)
        tokens = self.text_projection(output.last_hidden_state) if output_tokens else None
        return GADMSEncoderOutput(embeds=embeds, token_embeds=tokens, model_output=output)

    def encode_image(
        self,
        pixel_values: torch.Tensor,
        output_tokens: bool = False,
        interpolate_pos_encoding: bool = False,
        **kwargs,
    ) -> GADMSEncoderOutput:
        """Run the vision tower once; return the projected CLS feature and, optionally, all projected tokens.

        Token features are every image token after the final vision layer norm and the projection (in
        transformers' CLIP, `last_hidden_state` comes before `post_layernorm`, so it is applied here).
        """
        output = self.vision_model(
            pixel_values=pixel_values, interpolate_pos_encoding=interpolate_pos_encoding, return_dict=True, **kwargs
        )
        if output_tokens:
            tokens = self.visual_projection(self.vision_model.post_layernorm(output.last_hidden_state))
            return GADMSEncoderOutput(embeds=tokens[:, 0], token_embeds=tokens, model_output=output)
        return GADMSEncoderOutput(embeds=self.visual_projection(output.pooler_output), model_output=output)

    def get_text_features(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, normalize: bool = False
    ) -> torch.Tensor:
        """Global text features `(batch, projection_dim)`: the EOS token, final layer norm, projection."""
        embeds = self.encode_text(input_ids, attention_mask).embeds
        return F.normalize(embeds, dim=-1) if normalize else embeds

    def get_image_features(self, pixel_values: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """Global image features `(batch, projection_dim)`: the CLS token, final layer norm, projection."""
        embeds = self.encode_image(pixel_values).embeds
        return F.normalize(embeds, dim=-1) if normalize else embeds

    def get_text_token_features(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """All text token features `(batch, sequence_length, projection_dim)` (after layer norm and projection)."""
        return self.encode_text(input_ids, attention_mask, output_tokens=True).token_embeds

    def get_image_token_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """All image token features `(batch, 1 + patches, projection_dim)` (after layer norm and projection)."""
        return self.encode_image(pixel_values, output_tokens=True).token_embeds

    def similarity(self, text_embeds: torch.Tensor, image_embeds: torch.Tensor) -> torch.Tensor:
        """Scaled cosine similarity `(texts, images)` of global features (normalised here)."""
        text_embeds = F.normalize(text_embeds, dim=-1)
        image_embeds = F.normalize(image_embeds, dim=-1)
        return text_embeds @ image_embeds.t() * self.logit_scale

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        person_ids: torch.Tensor | None = None,
        return_loss: bool | None = None,
        interpolate_pos_encoding: bool = False,
        return_dict: bool | None = None,
        **kwargs,
    ) -> GADMSOutput | tuple:
        """Embed captions and images and return their scaled cosine similarities (and the SDM loss).

        Args:
            input_ids, attention_mask: tokenized captions (from [`GADMSProcessor`]).
            pixel_values: images.
            person_ids: with `return_loss`, the identity of each pair (caption `i` with image `i`); captions
                and images of one person are positives of each other. Default: one identity per pair.
            return_loss: also return the SDM loss of the batch (docs/method.md section 5), as `CLIPModel`
                returns its contrastive loss.
        """
        if input_ids is None or pixel_values is None:
            raise ValueError("GADMSModel.forward needs both input_ids and pixel_values")
        text = self.encode_text(input_ids, attention_mask)
        image = self.encode_image(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding)
        logits_per_text = self.similarity(text.embeds, image.embeds)
        loss = None
        if return_loss:
            _check_pairs(input_ids, pixel_values, "the SDM loss")
            if person_ids is None:
                person_ids = torch.arange(input_ids.shape[0], device=input_ids.device)
            loss = sdm_loss(image.embeds, text.embeds, person_ids, self.logit_scale)
        result = GADMSOutput(
            loss=loss,
            logits_per_image=logits_per_text.t(),
            logits_per_text=logits_per_text,
            text_embeds=F.normalize(text.embeds, dim=-1),
            image_embeds=F.normalize(image.embeds, dim=-1),
            text_model_output=text.model_output,
            vision_model_output=image.model_output,
        )
        return result if return_dict is not False else result.to_tuple()


class GADMSForPreTraining(GADMSPreTrainedModel):
    r"""
    [`GADMSModel`] with the training heads: the masked-token-prediction decoder and, for fine-tuning, the identity
    classifier; its forward computes a training recipe (docs/method.md section 5).

    The recipe's settings are a [`GADMSObjectiveConfig`] (attribute `objective`, the paper's by default; set
    `model.objective = GADMSObjectiveConfig.from_preset("released")` or pass `objective=` to the constructor).
    They are not saved with the model. The GASS score bank is the caller's: `forward` takes each sample's
    previous scores and returns the new ones.

    `AutoModelForPreTraining.from_pretrained` of a saved directory restores the heads;
    `AutoModel.from_pretrained` of the same directory gives the [`GADMSModel`] dual encoder and drops them.

    Example:

    ```python
    >>> model = AutoModelForPreTraining.from_pretrained("org/gadms-vitb16")  # decoder freshly initialised if absent
    >>> scores = bank.get(batch["sample_index"])                               # the previous visit's GASS scores
    >>> out = model(**batch, token_scores=scores)
    >>> out.loss.backward(); bank.update(batch["sample_index"], out.token_scores)
    ```
    """

    main_input_name = "input_ids"

    def __init__(self, config: GADMSConfig, objective: GADMSObjectiveConfig | None = None):
        super().__init__(config)
        self.gadms = GADMSModel(config)
        self.mtp_decoder = GADMSMTPDecoder(config)
        self.classifier = nn.Linear(config.projection_dim, config.num_identities) if config.num_identities else None
        self.objective = objective or GADMSObjectiveConfig()
        self.post_init()

    def get_text_features(self, *args, **kwargs) -> torch.Tensor:
        """[`GADMSModel.get_text_features`] of the dual encoder (validation during training calls it)."""
        return self.gadms.get_text_features(*args, **kwargs)

    def get_image_features(self, *args, **kwargs) -> torch.Tensor:
        """[`GADMSModel.get_image_features`] of the dual encoder."""
        return self.gadms.get_image_features(*args, **kwargs)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        person_ids: torch.Tensor | None = None,
        token_scores: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        interpolate_pos_encoding: bool = False,
        return_dict: bool | None = None,
        **kwargs,
    ) -> GADMSForPreTrainingOutput | tuple:
        """The loss of `self.objective`'s recipe on a batch of (caption, image) pairs.

        Args:
            input_ids, attention_mask: tokenized captions; pixel_values: one image per caption.
            person_ids: identity of each sample (captions of one person are positives of each other); defaults to
                one identity per sample in a single process; required with several processes.
            token_scores: `(batch, sequence_length)` each sample's GASS scores of its previous visit (`gadms`
                recipe; default: `initial_token_score` everywhere).
            generator: random generator of the masks (reproducible masks).
        """
        if input_ids is None or pixel_values is None:
            raise ValueError("GADMSForPreTraining.forward needs both input_ids and pixel_values")
        _check_pairs(input_ids, pixel_values, "a training recipe")
        settings = self.objective
        common = dict(attention_mask=attention_mask, person_ids=person_ids, generator=generator,
                      interpolate_pos_encoding=interpolate_pos_encoding)
        if settings.recipe == "gadms":
            if token_scores is not None:
                token_scores = token_scores[:, : input_ids.shape[1]].to(input_ids.device)
            output = gadms_objective(self, settings, input_ids, pixel_values, token_scores=token_scores, **common)
        else:
            output = irra_objective(self, settings, input_ids, pixel_values, **common)
        text, image = output.pop("text"), output.pop("image")
        result = GADMSForPreTrainingOutput(
            **output,
            logits_per_text=self.gadms.similarity(text.embeds, image.embeds),
            text_embeds=F.normalize(text.embeds, dim=-1),
            image_embeds=F.normalize(image.embeds, dim=-1),
        )
        return result if return_dict is not False else result.to_tuple()


__all__ = [
    "GADMSEncoderOutput",
    "GADMSForPreTraining",
    "GADMSForPreTrainingOutput",
    "GADMSModel",
    "GADMSOutput",
    "GADMSPreTrainedModel",
    "GADMSVisionEmbeddings",
    "GADMSVisionModel",
    "resize_position_embedding",
]
