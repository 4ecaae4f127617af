"""The synthetic retrieval task is learnable but not trivial: a linear probe shows it.

The probe: images -> colour histograms of 8 horizontal bands (fixed, generic features); captions ->
bag of words and word pairs; a ridge regression, fitted on the training identities, maps a caption
to the mean image features of its identity; test captions rank the test images by cosine.
"""
from __future__ import annotations

import re

import numpy as np
import pytest

from dataset_builders.synthetic import SyntheticPersonConfig, generate_records

IMAGES_PER_IDENTITY = 4


def image_features(image) -> np.ndarray:
    pixels = np.asarray(image, dtype=np.uint8)
    bins = (pixels[..., 0] // 64) * 16 + (pixels[..., 1] // 64) * 4 + pixels[..., 2] // 64
    bands = np.array_split(bins, 8, axis=0)
    hist = np.stack([np.bincount(b.ravel(), minlength=64) / b.size for b in bands])
    return np.sqrt(hist.ravel())


def words(caption: str) -> list[str]:
    tokens = re.findall(r"[a-z-]+", caption.lower())
    return tokens + [f"{a}_{b}" for a, b in zip(tokens, tokens[1:])]


class RidgeProbe:
    def __init__(self, captions: list[str], caption_ids: np.ndarray, images: np.ndarray,
                 image_ids: np.ndarray, alpha: float = 3.0) -> None:
        self.vocab = {w: i for i, w in enumerate(sorted({w for c in captions for w in words(c)}))}
        self.mean = images.mean(0)
        centred = images - self.mean
        targets = np.stack([centred[image_ids == pid].mean(0) for pid in caption_ids])
        x = self.encode(captions)
        self.weights = np.linalg.solve(x.T @ x + alpha * np.eye(x.shape[1]), x.T @ targets)

    def encode(self, captions: list[str]) -> np.ndarray:
        x = np.zeros((len(captions), len(self.vocab)))
        for row, caption in enumerate(captions):
            for w in words(caption):
                if w in self.vocab:
                    x[row, self.vocab[w]] = 1.0
        return x

    def rank(self, captions: list[str], images: np.ndarray) -> np.ndarray:
        queries = self.encode(captions) @ self.weights
        gallery = images - self.mean
        queries /= np.linalg.norm(queries, axis=1, keepdims=True) + 1e-9
        gallery /= np.linalg.norm(gallery, axis=1, keepdims=True) + 1e-9
        return np.argsort(-(queries @ gallery.T), axis=1, kind="stable")


def mean_average_precision(order: np.ndarray, query_ids: np.ndarray, gallery_ids: np.ndarray) -> float:
    hits = gallery_ids[order] == query_ids[:, None]
    precision = np.cumsum(hits, axis=1) / np.arange(1, hits.shape[1] + 1)
    return float(((precision * hits).sum(axis=1) / hits.sum(axis=1)).mean())


def recall_at(order: np.ndarray, query_ids: np.ndarray, gallery_ids: np.ndarray, k: int) -> float:
    return float((gallery_ids[order[:, :k]] == query_ids[:, None]).any(axis=1).mean())


@pytest.fixture(scope="module")
def task():
    config = SyntheticPersonConfig(num_identities=120, images_per_identity=IMAGES_PER_IDENTITY,
                                   image_size=(96, 32), noise_rate=0.3, split_fractions=(0.5, 0.0, 0.5),
                                   seed=0)
    records = list(generate_records(config))
    train = [r for r in records if r["split"] == "train"]
    test = [r for r in records if r["split"] == "test"]
    return {
        "train_images": np.stack([image_features(r["image"]) for r in train]),
        "train_image_ids": np.array([r["person_id"] for r in train]),
        "train_captions": [c for r in train for c in r["captions"]],
        "train_caption_ids": np.array([r["person_id"] for r in train for _ in r["captions"]]),
        "test_images": np.stack([image_features(r["image"]) for r in test]),
        "test_image_ids": np.array([r["person_id"] for r in test]),
        "test_captions": [c for r in test for c in r["captions"]],
        "test_clean_captions": [c for r in test for c in r["clean_captions"]],
        "test_noisy": np.array([bool(n) for r in test for n in r["noise"]]),
        "test_caption_ids": np.array([r["person_id"] for r in test for _ in r["captions"]]),
    }


def test_a_linear_probe_retrieves_far_above_chance(task):
    probe = RidgeProbe(task["train_captions"], task["train_caption_ids"], task["train_images"],
                       task["train_image_ids"])
    order = probe.rank(task["test_captions"], task["test_images"])
    gallery = len(task["test_image_ids"])
    chance_r1 = IMAGES_PER_IDENTITY / gallery  # 60 test identities x 4 images: 1.7 %
    r1 = recall_at(order, task["test_caption_ids"], task["test_image_ids"], 1)
    r5 = recall_at(order, task["test_caption_ids"], task["test_image_ids"], 5)
    assert r1 > 5 * chance_r1, (r1, chance_r1)
    assert r5 > 3 * (1 - np.prod([(gallery - IMAGES_PER_IDENTITY - i) / (gallery - i) for i in range(5)]))
    # ... and the task is not trivial for it
    assert r1 < 0.9


def test_the_probe_learns_from_the_person_not_from_chance(task):
    # the same probe fitted on captions paired with the wrong identities retrieves at chance level
    rng = np.random.default_rng(0)
    ids = np.unique(task["train_caption_ids"])
    shuffle = dict(zip(ids, rng.permutation(ids)))
    wrong_ids = np.array([shuffle[i] for i in task["train_caption_ids"]])
    probe = RidgeProbe(task["train_captions"], wrong_ids, task["train_images"], task["train_image_ids"])
    order = probe.rank(task["test_captions"], task["test_images"])
    r1 = recall_at(order, task["test_caption_ids"], task["test_image_ids"], 1)
    assert r1 < 3 * IMAGES_PER_IDENTITY / len(task["test_image_ids"])


def test_caption_noise_makes_retrieval_harder(task):
    probe = RidgeProbe(task["train_captions"], task["train_caption_ids"], task["train_images"],
                       task["train_image_ids"])
    noisy = task["test_noisy"]
    ids = task["test_caption_ids"][noisy]
    clean = [c for c, n in zip(task["test_clean_captions"], noisy) if n]
    published = [c for c, n in zip(task["test_captions"], noisy) if n]
    rank_clean = probe.rank(clean, task["test_images"])
    rank_noisy = probe.rank(published, task["test_images"])
    gallery_ids = task["test_image_ids"]
    noisy_map = mean_average_precision(rank_noisy, ids, gallery_ids)
    assert noisy_map < mean_average_precision(rank_clean, ids, gallery_ids)
