"""The training data path in parts: per-sample augmentation on uint8 pixels, normalisation on the batch, and
the in-memory cache of prepared images.

Reference: the one-piece torchvision v2 pipeline of docs/method.md section 6 (resize, flip, pad + crop, float,
CLIP normalisation, random erasing filled with the CLIP mean after normalising), run per image under the
same seed as the data set draws its augmentations from.
"""
from __future__ import annotations

import io

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from modeling_gadms.processing_gadms import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from training.data import CaptionSamples, Collator, TrainingTransform, training_transform

HEIGHT, WIDTH = 16, 8


def _jpeg(seed: int, size=(12, 20)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def _table(rows: int = 5, broken: int | None = None) -> datasets.Dataset:
    images = [{"bytes": b"not an image" if i == broken else _jpeg(i), "path": f"img{i}.jpg"} for i in range(rows)]
    return datasets.Dataset.from_dict(
        {"image": images, "caption1": [f"a person {i}" for i in range(rows)],
         "caption2": [f"the person {i}" for i in range(rows)], "person_id": list(range(rows))},
        features=datasets.Features({"image": datasets.Image(), "caption1": datasets.Value("string"),
                                    "caption2": datasets.Value("string"), "person_id": datasets.Value("int64")}))


def _reference(pad: int, erasing: float) -> v2.Compose:
    steps = [v2.ToImage(), v2.Resize((HEIGHT, WIDTH), interpolation=v2.InterpolationMode.BICUBIC, antialias=True),
             v2.RandomHorizontalFlip(0.5)]
    if pad:
        steps += [v2.Pad(pad), v2.RandomCrop((HEIGHT, WIDTH))]
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)]
    if erasing:
        steps.append(v2.RandomErasing(p=erasing, scale=(0.02, 0.4), value=OPENAI_CLIP_MEAN))
    return v2.Compose(steps)


def _seeded(samples: CaptionSamples, index: int, transform, image):
    """What the reference gives sample `index` under the data set's own seeding of (seed, epoch, index)."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed((samples.seed * 1_000_003 + samples.epoch) * 10_000_019 + index)
        return transform(image)


@pytest.mark.parametrize("pad,erasing", [(0, 0.0), (2, 0.0), (2, 1.0)])
def test_split_transform_gives_the_one_piece_pipelines_pixels(pad, erasing):
    table = _table()
    samples = CaptionSamples(table, training_transform(HEIGHT, WIDTH, pad=pad, erasing=erasing), seed=3)
    samples.set_epoch(1)
    collate = Collator(_FakeProcessor(), pixel_transform=samples.batch_transform)
    batch = collate([samples[i] for i in range(len(samples))])
    reference = _reference(pad, erasing)
    for index in range(len(samples)):
        image = Image.open(io.BytesIO(table.cast_column("image", datasets.Image(decode=False))[index // 2]["image"]
                                      ["bytes"])).convert("RGB")
        expected = _seeded(samples, index, reference, image)
        assert torch.allclose(batch["pixel_values"][index], expected, atol=1e-5), index
    if erasing:  # the erased region holds the CLIP mean after normalisation, as the released code fills it
        mean = torch.tensor(OPENAI_CLIP_MEAN).view(3, 1, 1)
        assert any(((batch["pixel_values"][i] - mean).abs() < 1e-5).all(0).any() for i in range(len(samples)))
    # with no augmentation the uint8 pixels go unconverted to the collator
    plain = CaptionSamples(table, training_transform(HEIGHT, WIDTH, augment=False))
    assert plain[0]["pixel_values"].dtype == torch.uint8
    with pytest.raises(ValueError, match="pixel_transform=samples.batch_transform"):
        Collator(_FakeProcessor())([plain[0]])
    whole = training_transform(HEIGHT, WIDTH, augment=False)(Image.open(io.BytesIO(_jpeg(0))))
    assert torch.allclose(Collator(_FakeProcessor(), pixel_transform=plain.batch_transform)(
        [plain[0]])["pixel_values"][0], whole)


class _FakeProcessor:
    """Tokenization is not under test: a fixed-length id per caption."""

    def __call__(self, text, return_tensors="pt", padding="max_length"):
        ids = torch.tensor([[len(t), 1] for t in text])
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def test_image_cache_changes_nothing_but_the_work_done(monkeypatch):
    table = _table(rows=6, broken=4)
    transform = training_transform(HEIGHT, WIDTH, pad=2, erasing=0.5)
    one_image = HEIGHT * WIDTH * 3 / 2**20  # MiB
    uncached = CaptionSamples(table, transform, seed=1)
    cached = CaptionSamples(table, transform, seed=1, image_cache_mb=100)
    small = CaptionSamples(table, transform, seed=1, image_cache_mb=2.5 * one_image)
    decodes = []
    original = transform.prepare
    monkeypatch.setattr(transform, "prepare", lambda image: decodes.append(1) or original(image))
    for epoch in (0, 1):
        for samples in (uncached, cached, small):
            samples.set_epoch(epoch)
        for index in range(len(uncached)):
            a, b, c = uncached[index], cached[index], small[index]
            if index // 2 == 4:  # the unreadable row is skipped, cached or not, naming the row and its path
                assert all(item["skipped"].startswith("row 4 (img4.jpg): cannot read image") for item in (a, b, c))
                continue
            assert torch.equal(a["pixel_values"], b["pixel_values"]) and torch.equal(a["pixel_values"],
                                                                                     c["pixel_values"])
    # 5 readable rows x 2 captions x 2 epochs: every visit prepares without the cache, once per row with it,
    # and with room for two images, the first two rows are kept and the three others prepared every time
    assert len(decodes) == 20 + 5 + (2 + 3 * 4)
    assert len(cached._image_cache) == 5 and sorted(small._image_cache) == [0, 1]
    assert small._image_cache_used <= small.image_cache_bytes
    # augmentation never writes into a cached image
    kept = cached._image_cache[0].clone()
    for epoch in range(4):
        cached.set_epoch(epoch)
        cached[0], cached[1]
    assert torch.equal(kept, cached._image_cache[0])


def test_a_plain_callable_transform_is_applied_whole():
    table = _table(rows=2)
    samples = CaptionSamples(table, lambda image: torch.full((3, 2, 2), float(image.size[0])))
    assert samples.batch_transform is None and samples[0]["pixel_values"][0, 0, 0] == 12.0
    assert isinstance(training_transform(HEIGHT, WIDTH), TrainingTransform)


def test_cache_in_data_loader_workers_gives_the_same_batches():
    """Two workers, two epochs (a new set of workers each, with the cache they start from): the same batches with
    the cache as without it, and the same as in the main process."""
    from torch.utils.data import DataLoader

    from training.data import EpochSampler

    table = _table(rows=8)
    transform = training_transform(HEIGHT, WIDTH, pad=2, erasing=0.5)

    def batches(workers: int, cache_mb: float) -> list[torch.Tensor]:
        samples = CaptionSamples(table, transform, seed=5, image_cache_mb=cache_mb)
        sampler = EpochSampler(len(samples), seed=5)
        loader = DataLoader(samples, batch_size=4, sampler=sampler, num_workers=workers, drop_last=True,
                            collate_fn=Collator(_FakeProcessor(), pixel_transform=samples.batch_transform))
        out = []
        for epoch in (0, 1):
            sampler.set_epoch(epoch)
            samples.set_epoch(epoch)
            out += [batch["pixel_values"] for batch in loader]
        return out

    reference = batches(0, 0)
    assert len(reference) == 8
    for workers, cache_mb in ((0, 100), (2, 100), (2, 0)):
        got = batches(workers, cache_mb)
        assert all(torch.equal(a, b) for a, b in zip(reference, got)) and len(got) == len(reference)
