"""Records of the synthetic data set: one dict per image, drawn deterministically from the config."""
from __future__ import annotations

import random
from typing import Any, Iterable, Iterator

from .attributes import PersonAttributes, sample_identities
from .captions import make_caption, draw_noise_kinds
from .config import SPLITS, SyntheticPersonConfig
from .render import render_person, sample_scene


def image_path(person_id: int, image_index: int) -> str:
    """The relative path of an image (``image_path`` column, CUHK-PEDES ``file_path`` under ``imgs/``)."""
    return f"synthetic/p{person_id:05d}_{image_index:02d}.jpg"


def _rng(config: SyntheticPersonConfig, person_id: int, image_index: int, stream: str) -> random.Random:
    # independent streams: the pictures do not change with the noise settings, and the clean
    # captions do not change with the noise rate
    return random.Random(f"gadms-synthetic/{config.seed}/{person_id}/{image_index}/{stream}")


def make_record(config: SyntheticPersonConfig, person: PersonAttributes, person_id: int,
                image_index: int, split: str) -> dict[str, Any]:
    """Draw picture ``image_index`` of person ``person_id`` and its two captions.

    The record layout is documented in :func:`generate_records`.
    """
    image_rng = _rng(config, person_id, image_index, "image")
    scene = sample_scene(image_rng)
    image = render_person(person, scene, config.image_size, image_rng)
    noise_rng = _rng(config, person_id, image_index, "noise")
    captions = []
    for j in range(2):
        kinds = draw_noise_kinds(noise_rng, config.noise_rate, config.noise_kinds)
        caption_rng = _rng(config, person_id, image_index, f"caption{j}")
        captions.append(make_caption(person, scene.view, caption_rng, kinds))
    return {
        "image": image,
        "image_path": image_path(person_id, image_index),
        "person_id": person_id,
        "image_index": image_index,
        "split": split,
        "view": scene.view,
        "captions": [c.text for c in captions],
        "clean_captions": [c.clean for c in captions],
        "noise": [[{"kind": e.kind, "detail": e.detail} for e in c.noise] for c in captions],
        "attributes": person.to_dict(),
    }


def generate_records(config: SyntheticPersonConfig,
                     splits: Iterable[str] | None = None) -> Iterator[dict[str, Any]]:
    """Yield one record per image, in person-id order (train ids first, then val, then test).

    Each record is a dict with:

    - ``image``: ``PIL.Image.Image`` (RGB, ``config.image_size`` = height x width)
    - ``image_path``: relative path, e.g. ``"synthetic/p00001_00.jpg"``
    - ``person_id``: 1-based identity; ``image_index``: 0 .. images_per_identity - 1
    - ``split``: ``"train"``, ``"val"`` or ``"test"`` (identity-disjoint)
    - ``view``: ``"front"``, ``"back"`` or ``"side"``
    - ``captions``: two captions (with noise where drawn); ``clean_captions``: the same before noise
    - ``noise``: per caption, a list of ``{"kind", "detail"}`` dicts (empty list: a clean caption)
    - ``attributes``: the identity's attributes (see ``attributes.PersonAttributes``)

    The output is a pure function of ``config`` (and records do not depend on one another, so
    asking for some ``splits`` yields exactly those records of the full set).
    """
    wanted = set(SPLITS if splits is None else splits)
    unknown = wanted - set(SPLITS)
    if unknown:
        raise ValueError(f"unknown split(s) {sorted(unknown)}; splits are {list(SPLITS)}")
    identities = sample_identities(config.num_identities, config.seed)
    for split, ids in config.split_ids().items():
        if split not in wanted:
            continue
        for person_id in ids:
            person = identities[person_id - 1]
            for image_index in range(config.images_per_identity):
                yield make_record(config, person, person_id, image_index, split)
