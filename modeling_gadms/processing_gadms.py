"""GA-DMS processor: person-crop image preprocessing plus the CLIP BPE tokenizer with `<|mask|>`."""

from __future__ import annotations

import torch
from PIL import Image
from transformers import CLIPImageProcessor, ProcessorMixin
from transformers.feature_extraction_utils import BatchFeature

OPENAI_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def person_image_processor(height: int = 384, width: int = 128) -> CLIPImageProcessor:
    """CLIP image preprocessing for person crops: bicubic resize to `height x width` (no centre crop),
    CLIP mean/std normalisation, conversion of any PIL mode to RGB."""
    return CLIPImageProcessor(
        size={"height": height, "width": width},
        do_resize=True,
        do_center_crop=False,
        do_convert_rgb=True,
        image_mean=OPENAI_CLIP_MEAN,
        image_std=OPENAI_CLIP_STD,
    )


def _to_rgb(image):
    """PIL images of any mode (L, P, RGBA, CMYK, I;16, ...) become RGB; other inputs pass through.

    The same conversion as `gadms_utils.image_io.to_rgb` (tests/test_processor.py checks them equal on every
    mode), kept here on purpose: this file is saved with every model as its remote code, which must import
    nothing from this project outside `modeling_gadms`.
    """
    if isinstance(image, Image.Image) and image.mode != "RGB":
        if image.mode in ("RGBA", "LA", "P", "PA"):
            rgba = image.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(background, rgba).convert("RGB")
        if image.mode.startswith("I"):
            return image.point(lambda v: v * (1 / 256)).convert("L").convert("RGB")
        return image.convert("RGB")
    return image


class GADMSProcessor(ProcessorMixin):
    r"""
    Wraps a [`CLIPImageProcessor`] (resize to the model's `height x width`, default 384x128, CLIP mean/std, RGB
    conversion) and a [`CLIPTokenizer`] whose vocabulary holds `<|mask|>` (id 49405 with the full CLIP vocabulary).

    Text is padded and truncated to 77 tokens by default; truncation keeps `<|endoftext|>`, and padding
    positions get id `pad_token_id` = 0, as in the released GA-DMS code (the `attention_mask` marks them).

    Example:

    ```python
    >>> processor = AutoProcessor.from_pretrained("org/gadms-vitb16")
    >>> batch = processor(text=["a woman in a red coat"], images=[image], return_tensors="pt")
    >>> batch["input_ids"].shape, batch["pixel_values"].shape
    (torch.Size([1, 77]), torch.Size([1, 3, 384, 128]))
    ```
    """

    pad_token_id = 0

    def __init__(self, image_processor=None, tokenizer=None, **kwargs):
        super().__init__(image_processor, tokenizer, **kwargs)

    @property
    def mask_token_id(self) -> int:
        """Id of `<|mask|>` in the tokenizer."""
        return self.tokenizer.mask_token_id

    def __call__(
        self,
        images=None,
        text: str | list[str] | None = None,
        return_tensors: str | None = "pt",
        padding: bool | str = "max_length",
        truncation: bool = True,
        max_length: int | None = None,
        **kwargs,
    ) -> BatchFeature:
        """Tokenize `text` and/or preprocess `images` (a PIL image, array, or a list of them).

        Returns a `BatchFeature` with `input_ids` and `attention_mask` (text) and `pixel_values` (images).
        """
        if images is None and text is None:
            raise ValueError("GADMSProcessor needs `images`, `text`, or both")
        data = {}
        if text is not None:
            encoded = self.tokenizer(
                text,
                padding=padding,
                truncation=truncation,
                max_length=max_length or self.tokenizer.model_max_length,
                return_tensors=return_tensors,
                **kwargs,
            )
            data.update(self._pad_with_zero(encoded))
        if images is not None:
            batch = images if isinstance(images, (list, tuple)) else [images]
            pixel_values = self.image_processor([_to_rgb(im) for im in batch], return_tensors=return_tensors)
            data["pixel_values"] = pixel_values["pixel_values"]
        return BatchFeature(data, tensor_type=return_tensors)

    def _pad_with_zero(self, encoded) -> dict:
        """Rewrite the padding positions (attention mask 0) of a tokenizer output to `pad_token_id`."""
        ids, mask = encoded["input_ids"], encoded["attention_mask"]
        if isinstance(ids, torch.Tensor):
            ids = ids.masked_fill(mask == 0, self.pad_token_id)
        elif ids and isinstance(ids[0], list):
            ids = [[t if m else self.pad_token_id for t, m in zip(row, row_mask)] for row, row_mask in zip(ids, mask)]
        else:
            ids = [t if m else self.pad_token_id for t, m in zip(ids, mask)]
        return {**encoded, "input_ids": ids}

    def _until_eos(self, ids) -> list[int]:
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        eos = self.tokenizer.eos_token_id
        return ids[: ids.index(eos) + 1] if eos in ids else ids

    def decode(self, token_ids, **kwargs) -> str:
        """Decode one sequence up to its `<|endoftext|>` (the zero padding after it is not text)."""
        return self.tokenizer.decode(self._until_eos(token_ids), **kwargs)

    def batch_decode(self, sequences, **kwargs) -> list[str]:
        """[`decode`] for each sequence of a batch."""
        return [self.decode(ids, **kwargs) for ids in sequences]

    @property
    def model_input_names(self):
        return ["input_ids", "attention_mask", "pixel_values"]


__all__ = ["GADMSProcessor", "person_image_processor"]
