"""Batched embedding of person images and captions with any dual encoder and its processor.

Works with a GA-DMS model (``import modeling_gadms`` registers it with transformers' Auto classes) and
with any model that has ``get_image_features(pixel_values=...)`` and
``get_text_features(input_ids=..., attention_mask=...)`` (a plain transformers ``CLIPModel`` too, for
zero-shot evaluation). Embeddings come back as float32 CPU tensors, *not* normalised (the metrics
normalise). Training calls the same functions for its validation step.
"""

from __future__ import annotations

import contextlib
import io
import os
from functools import partial
from typing import Any, Sequence

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

__all__ = [
    "PRECISIONS",
    "embed_images",
    "embed_texts",
    "eval_mode",
    "load_model_and_processor",
    "model_device",
    "open_image",
]

#: ``--precision`` choices and the autocast dtype they stand for (``fp32``: no autocast).
PRECISIONS: dict[str, torch.dtype | None] = {
    "fp32": None,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
}
_PRECISION_ALIASES = {"float32": "fp32", "float16": "fp16", "half": "fp16", "bfloat16": "bf16"}

ImageLike = Any  # PIL image, a path, or a ``datasets`` undecoded image ``{"path": ..., "bytes": ...}``


def _precision(precision: str) -> torch.dtype | None:
    key = _PRECISION_ALIASES.get(precision, precision)
    if key not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    return PRECISIONS[key]


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    dtype = _precision(precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module):
    """Eval mode (no dropout) for the duration, then the model's previous mode (so training can call in)."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a model without parameters)."""
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def _features(output: Any, kind: str) -> torch.Tensor:
    """The ``[B, D]`` tensor out of a ``get_*_features`` result (a tensor, or an output object)."""
    if isinstance(output, torch.Tensor):
        return output
    for name in (f"{kind}_embeds", "pooler_output"):
        value = getattr(output, name, None)
        if isinstance(value, torch.Tensor):
            return value
    raise TypeError(f"get_{kind}_features returned {type(output).__name__}, not a tensor of features")


def open_image(item: ImageLike) -> Image.Image:
    """Open (and fully read) an image given as PIL image, path, or ``{"path", "bytes"}`` dict."""
    if isinstance(item, Image.Image):
        return item
    if isinstance(item, dict):
        if item.get("bytes") is not None:
            source: Any = io.BytesIO(item["bytes"])
        elif item.get("path"):
            source = item["path"]
        else:
            raise ValueError(f"image entry has neither bytes nor path: {item!r}")
    elif isinstance(item, (str, os.PathLike)):
        source = item
    else:
        raise TypeError(f"cannot read an image from {type(item).__name__}")
    try:
        image = Image.open(source)
        image.load()
    except (OSError, ValueError) as err:
        name = source if not isinstance(source, io.BytesIO) else "<bytes>"
        raise OSError(f"cannot read image {name}: {err}") from err
    return image


class _Images(Dataset):
    def __init__(self, items: Sequence[ImageLike]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Image.Image:
        return open_image(self.items[index])


def _pixel_batch(processor: Any, images: list[Image.Image]) -> torch.Tensor:
    return processor(images=images, return_tensors="pt")["pixel_values"]


@torch.inference_mode()
def embed_images(
    model: torch.nn.Module,
    processor: Any,
    images: Sequence[ImageLike],
    *,
    batch_size: int = 64,
    precision: str = "fp32",
    num_workers: int = 0,
    progress: bool = True,
    desc: str = "images",
) -> torch.Tensor:
    """Embed images with ``model.get_image_features``, batched.

    Args:
        model: the model, on its device (switched to eval mode for the call, then restored).
        processor: its processor; called as ``processor(images=[PIL images], return_tensors="pt")``.
        images: PIL images, paths, or ``datasets`` undecoded image dicts (read lazily, in order).
        batch_size: images per forward pass.
        precision: ``fp32``, ``fp16`` or ``bf16`` (autocast on the model's device).
        num_workers: ``DataLoader`` workers that read and preprocess images in parallel.
        progress: show a tqdm progress bar.
        desc: the progress bar's label.

    Returns:
        ``[N, D]`` float32 CPU tensor (not normalised).
    """
    device = model_device(model)
    loader = DataLoader(
        _Images(images),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=partial(_pixel_batch, processor),
    )
    out = []
    with eval_mode(model), tqdm(total=len(images), desc=desc, unit="img", disable=not progress) as bar:
        for pixel_values in loader:
            with _autocast(device, precision):
                features = model.get_image_features(pixel_values=pixel_values.to(device))
            out.append(_features(features, "image").float().cpu())
            bar.update(len(pixel_values))
    return torch.cat(out) if out else torch.empty(0, 0)


def _tokenize(processor: Any, texts: list[str]) -> dict[str, torch.Tensor]:
    try:  # the processor's own padding (GA-DMS pads to 77 like the released code)
        return dict(processor(text=texts, return_tensors="pt", truncation=True))
    except ValueError:  # a tokenizer that does not pad by default cannot make a rectangular batch
        return dict(processor(text=texts, return_tensors="pt", padding=True, truncation=True))


@torch.inference_mode()
def embed_texts(
    model: torch.nn.Module,
    processor: Any,
    texts: Sequence[str],
    *,
    batch_size: int = 256,
    precision: str = "fp32",
    progress: bool = True,
    desc: str = "captions",
) -> torch.Tensor:
    """Embed captions with ``model.get_text_features``, batched.

    The processor is called as ``processor(text=[...], return_tensors="pt", truncation=True)``
    (adding ``padding=True`` for tokenizers that do not pad by default); captions longer than the
    model's context are truncated by it.

    Returns:
        ``[N, D]`` float32 CPU tensor (not normalised).
    """
    device = model_device(model)
    out = []
    with eval_mode(model), tqdm(total=len(texts), desc=desc, unit="cap", disable=not progress) as bar:
        for start in range(0, len(texts), batch_size):
            batch = [str(t) for t in texts[start : start + batch_size]]
            encoded = _tokenize(processor, batch)
            inputs = {"input_ids": encoded["input_ids"].to(device)}
            if "attention_mask" in encoded:
                inputs["attention_mask"] = encoded["attention_mask"].to(device)
            with _autocast(device, precision):
                features = model.get_text_features(**inputs)
            out.append(_features(features, "text").float().cpu())
            bar.update(len(batch))
    return torch.cat(out) if out else torch.empty(0, 0)


def load_model_and_processor(
    name_or_path: str | os.PathLike,
    *,
    device: str | torch.device = "cpu",
    trust_remote_code: bool = False,
) -> tuple[torch.nn.Module, Any]:
    """``AutoModel`` + ``AutoProcessor`` from a folder or hub id, in eval mode on ``device``.

    ``modeling_gadms`` is imported first (when installed) so that GA-DMS checkpoints resolve.
    """
    with contextlib.suppress(ImportError):
        import modeling_gadms  # noqa: F401  (registers the GA-DMS classes with the Auto classes)
    from transformers import AutoModel, AutoProcessor

    model = AutoModel.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    processor = AutoProcessor.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    return model.to(device).eval(), processor
