"""Batched embedding of person images and captions with any dual encoder and its processor.

Works with a GA-DMS model (``import modeling_gadms`` registers it with transformers' Auto classes) and
with any model that has ``get_image_features(pixel_values=...)`` and
``get_text_features(input_ids=..., attention_mask=...)`` (a plain transformers ``CLIPModel`` too, for
zero-shot evaluation). Embeddings come back as float32 CPU tensors, *not* normalised (the metrics
normalise). Training calls the same functions for its validation step.

Images are read by :func:`gadms_utils.image_io.open_image` (re-exported here): upright by their EXIF
orientation, RGB, within the decoded-pixel limit (``GADMS_MAX_IMAGE_PIXELS``). :func:`embed_images` can
skip unreadable images and report them instead of raising (``skipped=[]``).
"""

from __future__ import annotations

import contextlib
import logging
import os
from functools import partial
from typing import Any, Sequence

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from gadms_utils.image_io import ImageTooLarge, UnreadableImage, open_image

logger = logging.getLogger(__name__)

#: What reading one image can raise (:func:`open_image` turns decoder errors into ``OSError``).
_READ_ERRORS = (OSError, ValueError, Image.DecompressionBombError)

__all__ = [
    "PRECISIONS",
    "ImageTooLarge",
    "UnreadableImage",
    "embed_images",
    "embed_texts",
    "eval_mode",
    "image_label",
    "load_model_and_processor",
    "model_device",
    "open_image",
    "readable_split",
    "undecoded_images",
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


class _Images(Dataset):
    """Reads ``items`` with :func:`open_image`; with ``skip``, an unreadable one gives ``(index, reason)``."""

    def __init__(self, items: Sequence[ImageLike], skip: bool = False):
        self.items = items
        self.skip = skip

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Image.Image | tuple[int, str]:
        if not self.skip:
            return open_image(self.items[index])
        try:
            return open_image(self.items[index])
        except _READ_ERRORS as err:
            return index, str(getattr(err, "reason", "") or err)


def _pixel_batch(processor: Any, items: list) -> tuple[torch.Tensor | None, list[tuple[int, str]], int]:
    """Preprocess the readable images of a batch; also returns the unreadable ones and the batch size."""
    images = [item for item in items if isinstance(item, Image.Image)]
    unreadable = [item for item in items if not isinstance(item, Image.Image)]
    pixels = processor(images=images, return_tensors="pt")["pixel_values"] if images else None
    return pixels, unreadable, len(items)


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
    skipped: list[tuple[int, str]] | None = None,
) -> torch.Tensor:
    """Embed images with ``model.get_image_features``, batched.

    Images are read with :func:`open_image` (EXIF orientation applied, RGB, the pixel limit of
    :mod:`gadms_utils.image_io` enforced). By default an unreadable image raises ``OSError``; pass a
    list as ``skipped`` to skip unreadable images instead: each is recorded there as ``(index, reason)``
    (``index`` into ``images``) and has no row in the result, whose rows follow the order of the readable
    images.

    Args:
        model: the model, on its device (switched to eval mode for the call, then restored).
        processor: its processor; called as ``processor(images=[PIL images], return_tensors="pt")``.
        images: PIL images, paths, or ``datasets`` undecoded image dicts (read lazily, in order).
        batch_size: images per forward pass.
        precision: ``fp32``, ``fp16`` or ``bf16`` (autocast on the model's device).
        num_workers: ``DataLoader`` workers that read and preprocess images in parallel.
        progress: show a tqdm progress bar.
        desc: the progress bar's label.
        skipped: a list to collect unreadable images in (``(index, reason)``, in index order), which are
            then left out instead of raising.

    Returns:
        ``[N, D]`` float32 CPU tensor (not normalised); ``N = len(images) - len(skipped)`` when skipping.
    """
    device = model_device(model)
    loader = DataLoader(
        _Images(images, skip=skipped is not None),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=partial(_pixel_batch, processor),
    )
    out = []
    with eval_mode(model), tqdm(total=len(images), desc=desc, unit="img", disable=not progress) as bar:
        for pixel_values, unreadable, count in loader:
            for index, reason in unreadable:
                logger.warning("skipped unreadable image %s: %s", image_label(images[index], index), reason)
                skipped.append((index, reason))  # type: ignore[union-attr]  (only with skipped given)
            if pixel_values is not None:
                with _autocast(device, precision):
                    features = model.get_image_features(pixel_values=pixel_values.to(device))
                out.append(_features(features, "image").float().cpu())
            bar.update(count)
    return torch.cat(out) if out else torch.empty(0, 0)


def undecoded_images(table: Any, column: str = "image") -> list:
    """A table's image column as :func:`embed_images` reads it lazily: a ``datasets`` image column undecoded
    (each image decoded in its batch, and an unreadable one skipped, not the whole column decoded up front);
    any other column or table (a list of paths, a dict of columns) as it is."""
    import datasets

    feature = getattr(table, "features", {}).get(column)
    if isinstance(feature, datasets.Image) and feature.decode:
        table = table.cast_column(column, datasets.Image(decode=False))
    return table[column]


def image_label(item: ImageLike, index: int) -> str:
    """How reports name image ``index`` of an :func:`embed_images` input: its path, else ``#index``."""
    if isinstance(item, (str, os.PathLike)):
        return os.fspath(item)
    if isinstance(item, dict) and item.get("path"):
        return str(item["path"])
    return f"#{index}"


def readable_split(
    gallery_ids: Sequence[Any], captions: Sequence[str], query_ids: Sequence[Any], unreadable: Sequence[tuple]
) -> tuple[list, list[str], list]:
    """What a split's metrics can cover once the `unreadable` gallery images (`(index, reason)`, as
    :func:`embed_images` reports them) are left out: the ids of the readable images, and the captions and ids of
    the queries whose person still has one (the protocol needs a positive for every query)."""
    skipped_rows = {index for index, _ in unreadable}
    kept_gallery = [pid for index, pid in enumerate(gallery_ids) if index not in skipped_rows]
    present = set(kept_gallery)
    kept = [(caption, pid) for caption, pid in zip(captions, query_ids) if pid in present]
    return kept_gallery, [caption for caption, _ in kept], [pid for _, pid in kept]


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
