"""The training data path: one sample per caption, torchvision v2 augmentation, skipping of unreadable images.

Augmentation is a pure function of (seed, epoch, sample index), so a run resumed mid-epoch, or one with more
data-loader workers, sees exactly the same pixels as an uninterrupted one.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler
from torchvision.transforms import v2

from gadms_utils.image_io import open_image
from modeling_gadms.processing_gadms import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

logger = logging.getLogger(__name__)


class TrainingTransform:
    """The training image transform (docs/method.md section 6) in the three parts the data path runs apart.

    - `prepare`: deterministic, PIL image -> uint8 tensor at the training size (what `CaptionSamples` may cache);
    - `augment`: random, per sample (flip, pad + crop; with random erasing also the float conversion and the
      erasing, whose fill value is the one that normalises to the CLIP mean, as the released code fills);
    - `batch`: float conversion and CLIP mean/std normalisation, on a stacked batch (`Collator`): one tensor
      operation instead of two small ones per sample, a quarter of the demo's data-loading time.

    Called on one image it runs all three, giving the pixels a batch would hold.
    """

    def __init__(self, prepare: v2.Compose, augment: v2.Compose, batch: v2.Compose):
        self.prepare, self.augment, self.batch = prepare, augment, batch

    def __call__(self, image) -> torch.Tensor:
        return self.batch(self.augment(self.prepare(image)))

    def __repr__(self) -> str:
        return f"TrainingTransform(prepare={self.prepare}, augment={self.augment}, batch={self.batch})"


def training_transform(height: int, width: int, augment: bool = True, pad: int = 10,
                       erasing: float = 0.5) -> TrainingTransform:
    """docs/method.md section 6: resize to `height x width` (bicubic), horizontal flip 0.5, pad `pad` (10) + random crop,
    CLIP mean/std, random erasing with probability `erasing` (scale 0.02-0.4, filled with the CLIP mean as the
    released code does). Without `augment`: resize and normalise only (the test transform). Small images (the
    CPU demo) want a smaller `pad`."""
    prepare = v2.Compose([v2.ToImage(), v2.Resize((height, width), interpolation=v2.InterpolationMode.BICUBIC,
                                                  antialias=True)])
    steps = []
    if augment:
        steps.append(v2.RandomHorizontalFlip(0.5))
        if pad:
            steps += [v2.Pad(pad), v2.RandomCrop((height, width))]
        if erasing:
            # erased before normalisation with the value that normalises to the CLIP mean (the released code's fill)
            fill = [m + s * m for m, s in zip(OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)]
            steps += [v2.ToDtype(torch.float32, scale=True),
                      v2.RandomErasing(p=erasing, scale=(0.02, 0.4), value=fill)]
    batch = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)])
    return TrainingTransform(prepare, v2.Compose(steps or [v2.Identity()]), batch)


def transform_for(config) -> TrainingTransform:
    """The training transform a [`TrainingConfig`] describes."""
    height, width = config.image_size
    return training_transform(height, width, config.augment, config.augment_pad, config.random_erasing)


def load_image(value) -> Image.Image:
    """An upright RGB PIL image from a data set cell (a PIL image, a path, or datasets' undecoded
    `{"bytes", "path"}`), read by the project's one image reader (`gadms_utils.image_io.open_image`: EXIF
    orientation, the decoded-pixel limit); unreadable data raises `OSError` / `ValueError` / `TypeError`."""
    return open_image(value)


class CaptionSamples(Dataset):
    """Training samples, one per caption, over a `datasets.Dataset` of images with one or more caption columns.

    Sample `i` is row `i // C`, caption column `i % C` (C caption columns); its person id is the row's
    `id_column` value, or the row index when the column is absent (every image its own identity, as in
    WebPerson). Items are dicts with `pixel_values`, `caption`, `person_id` and `sample_index` (the score-bank
    index); an unreadable image gives `{"skipped": description}` instead, which the collator drops and counts.

    With a [`TrainingTransform`] the items' pixels are its `prepare` and `augment` parts (uint8 unless random
    erasing is on) and `batch_transform` is its `batch` part, for the collator to apply to the stacked batch; any
    other callable is applied whole to each image. `image_cache_mb` keeps each row's prepared image (decoded and
    resized: the same for every caption and epoch) in memory, up to that many MiB (rows past it are decoded
    every time); each data-loader worker holds its own cache, for one epoch (the trainer's workers are not
    persistent), so the cache pays most with `num_workers: 0`. Values never depend on the cache.
    """

    def __init__(
        self,
        dataset,
        transform,
        caption_columns: Sequence[str] = ("caption1", "caption2"),
        id_column: str | None = "person_id",
        image_column: str = "image",
        seed: int = 0,
        image_cache_mb: float = 0,
    ):
        missing = [c for c in [*caption_columns, image_column] if c not in dataset.column_names]
        if missing:
            raise ValueError(f"the training data has no column(s) {missing}; it has {dataset.column_names}")
        from datasets import Image as ImageFeature

        # the captions before noise, where the data records them (`caption1_clean`, ...: the synthetic person set)
        clean = [f"{c}_clean" for c in caption_columns]
        self._clean_table = dataset.select_columns([*caption_columns, *clean]) \
            if all(c in dataset.column_names for c in clean) else None
        # only the columns a sample is made of: a row access decodes every column it holds
        keep = [image_column, *caption_columns] + ([id_column] if id_column in dataset.column_names else [])
        dataset = dataset.select_columns(keep)
        if isinstance(dataset.features.get(image_column), ImageFeature):
            dataset = dataset.cast_column(image_column, ImageFeature(decode=False))  # decode (and fail) here
        self.dataset = dataset
        self.transform = transform
        self.image_cache_bytes = int(image_cache_mb * 2**20)
        self._image_cache: dict[int, torch.Tensor] = {}
        self._image_cache_used = 0
        self.caption_columns = tuple(caption_columns)
        self.image_column = image_column
        self.id_column = id_column if id_column in dataset.column_names else None
        self.seed = seed
        self.epoch = 0
        if self.id_column is not None:
            ids = dataset[self.id_column]
            self.identities = sorted(set(ids))
        else:
            self.identities = None

    def __len__(self) -> int:
        return len(self.dataset) * len(self.caption_columns)

    def set_epoch(self, epoch: int) -> None:
        """Augmentations depend on the epoch (and seed and index) only."""
        self.epoch = epoch

    @property
    def num_identities(self) -> int:
        return len(self.identities) if self.identities is not None else len(self.dataset)

    def captions_with_clean(self) -> tuple[list[str], list[str]] | None:
        """Every sample's caption and that caption before noise, in sample order, when the data records clean
        captions (a `<caption column>_clean` column for each caption column, as the synthetic person set has);
        `None` otherwise."""
        if self._clean_table is None:
            return None
        columns = self._clean_table.to_dict()  # whole columns at once: indexing a column row by row is slow
        rows = range(len(self._clean_table))
        texts = [columns[c][row] for row in rows for c in self.caption_columns]
        clean = [columns[f"{c}_clean"][row] for row in rows for c in self.caption_columns]
        return texts, clean

    @property
    def batch_transform(self):
        """What the collator applies to the stacked pixels (the transform's `batch` part), or `None`."""
        return self.transform.batch if isinstance(self.transform, TrainingTransform) else None

    def _prepared_image(self, row_index: int, cell):
        """The row's image, decoded (and with a [`TrainingTransform`], prepared; cached within the budget)."""
        if not isinstance(self.transform, TrainingTransform):
            return load_image(cell)
        cached = self._image_cache.get(row_index)
        if cached is not None:
            return cached
        prepared = self.transform.prepare(load_image(cell))
        size = prepared.numel() * prepared.element_size()
        if self._image_cache_used + size <= self.image_cache_bytes:
            self._image_cache[row_index] = prepared
            self._image_cache_used += size
        return prepared

    def __getitem__(self, index: int) -> dict:
        row_index, column = divmod(index, len(self.caption_columns))
        row = self.dataset[row_index]
        try:
            image = self._prepared_image(row_index, row[self.image_column])
        except (OSError, ValueError, TypeError, SyntaxError) as error:
            cell = row[self.image_column]
            where = cell.get("path") if isinstance(cell, dict) else None
            return {"skipped": f"row {row_index}{f' ({where})' if where else ''}: {error}"}
        with torch.random.fork_rng(devices=[]):
            # the CPU generator alone (what the transforms draw from): `torch.manual_seed` would also queue seeds
            # for every accelerator backend, recording a stack trace each time (a third of a sample's load time)
            torch.default_generator.manual_seed((self.seed * 1_000_003 + self.epoch) * 10_000_019 + index)
            if isinstance(self.transform, TrainingTransform):
                pixels = self.transform.augment(image)
            else:
                pixels = self.transform(image)
        person = row[self.id_column] if self.id_column is not None else row_index
        return {
            "pixel_values": pixels,
            "caption": row[self.caption_columns[column]],
            "person_id": person,
            "sample_index": index,
        }


class Collator:
    """Stack images, tokenize captions with the GA-DMS processor, map person ids to contiguous labels,
    and drop (and count) unreadable samples. `pixel_transform` (the samples' `batch_transform`: float conversion
    and normalisation) is applied to the stacked pixels."""

    def __init__(self, processor, identity_labels: dict | None = None, padding: str = "max_length",
                 pixel_transform=None):
        self.processor = processor
        self.identity_labels = identity_labels
        self.padding = padding  # "max_length" (77, as the released code) or "longest" in the batch (faster)
        self.pixel_transform = pixel_transform

    def __call__(self, items: list[dict]) -> dict:
        kept = [item for item in items if "skipped" not in item]
        skipped = [item["skipped"] for item in items if "skipped" in item]
        batch = {"skipped": skipped}
        if not kept:
            return batch
        text = self.processor(text=[item["caption"] for item in kept], return_tensors="pt", padding=self.padding)
        persons = [item["person_id"] for item in kept]
        if self.identity_labels is not None:
            persons = [self.identity_labels[p] for p in persons]
        pixels = torch.stack([item["pixel_values"] for item in kept])
        if self.pixel_transform is not None:
            pixels = self.pixel_transform(pixels)
        elif not pixels.is_floating_point():
            raise ValueError(f"the samples' pixels are {pixels.dtype}, not normalised: give the collator "
                             "pixel_transform=samples.batch_transform (the training transform's `batch` part)")
        batch.update(
            pixel_values=pixels,
            input_ids=text["input_ids"],
            attention_mask=text["attention_mask"],
            person_ids=torch.as_tensor(persons, dtype=torch.long),
            sample_index=torch.as_tensor([item["sample_index"] for item in kept], dtype=torch.long),
        )
        return batch


class EpochSampler(Sampler):
    """A random permutation that depends only on (seed, epoch): resumable and identical on every process.

    `num_samples` (default: all) yields only the permutation's first `num_samples` indices, a different subset
    each epoch: the trainer uses it so that an epoch is a whole number of optimizer steps."""

    def __init__(self, length: int, seed: int = 0, shuffle: bool = True, num_samples: int | None = None):
        self.length, self.seed, self.shuffle, self.epoch = length, seed, shuffle, 0
        self.num_samples = length if num_samples is None else min(int(num_samples), length)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self):
        if not self.shuffle:
            return iter(range(self.num_samples))
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.length, generator=generator)[: self.num_samples].tolist())


def _is_parquet_files(source: str) -> bool:
    """Whether `source` names parquet file(s) / a glob (one split) rather than a hub id or local folder; a
    local file that is not a .parquet file raises `ValueError`."""
    if source.endswith(".parquet") or "*" in source:
        return True
    path = Path(source)
    if path.exists() and not path.is_dir():
        raise ValueError(f"training data {source!r} is a file but not a .parquet file")
    return False


def available_splits(source: str) -> list[str]:
    """The names of the splits `source` holds: `["train"]` for parquet file(s) / a glob (there is only the one
    split), else the data set's own (`datasets.get_dataset_split_names`: a local folder's data files or
    README `configs`, a hub data set's). A source that cannot be read raises its own error."""
    if _is_parquet_files(source):
        return ["train"]
    from datasets import get_dataset_split_names

    return list(get_dataset_split_names(source))


def has_split(source: str, split: str) -> bool:
    """Whether `source` holds every split that the split spec `split` names (`"validation"`, or with
    `datasets`' slicing and concatenation, e.g. `"validation[:10%]+test"`); see `available_splits`."""
    wanted = {part.split("[", 1)[0].strip() for part in split.split("+")}
    return wanted <= set(available_splits(source))


def load_training_table(source: str, split: str = "train"):
    """A WebPerson-schema split: a hub id or local folder (`load_dataset`), or parquet file(s) / a glob (their
    one split, whatever `split` says)."""
    from datasets import load_dataset

    if _is_parquet_files(source):
        return load_dataset("parquet", data_files=source, split="train")
    return load_dataset(source, split=split)


__all__ = [
    "CaptionSamples",
    "Collator",
    "EpochSampler",
    "available_splits",
    "has_split",
    "load_image",
    "load_training_table",
    "TrainingTransform",
    "training_transform",
    "transform_for",
]
