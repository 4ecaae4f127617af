"""The synthetic data set as in-process ``datasets`` objects (``Dataset.from_generator``), no files needed."""
from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

import datasets

from .config import SyntheticPersonConfig
from .generator import generate_records
from .schema import HF_SPLIT_NAMES, encode_jpeg, features, record_to_row


def _rows(config: SyntheticPersonConfig, split: str) -> Iterator[dict[str, Any]]:
    for record in generate_records(config, splits=[split]):
        yield record_to_row(record, encode_jpeg(record["image"], config.jpeg_quality))


@lru_cache(maxsize=1)
def _source_digest() -> str:
    """A digest of this package's code: the cache must not outlive a change to the generator."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def fingerprint(config: SyntheticPersonConfig, split: str) -> str:
    """The ``datasets`` fingerprint of one split: a function of the settings and of the generator code."""
    key = json.dumps({"config": config.to_dict(), "split": split, "code": _source_digest()}, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def to_dataset_dict(config: SyntheticPersonConfig, *, cache_dir: str | None = None,
                    keep_in_memory: bool = False) -> datasets.DatasetDict:
    """Build the data set with ``datasets.Dataset.from_generator``: splits ``train``, ``validation``,
    ``test`` (empty ones left out), columns as in the WebPerson format (see ``schema.features``).

    The result is cached by ``datasets`` under a fingerprint of the settings and of the generator
    code (:func:`fingerprint`), so a second call with the same settings is quick.
    """
    out = {}
    for split, ids in config.split_ids().items():
        if len(ids) == 0:
            continue
        name = HF_SPLIT_NAMES[split]
        out[name] = datasets.Dataset.from_generator(
            _rows, features=features(), gen_kwargs={"config": config, "split": split},
            cache_dir=cache_dir, keep_in_memory=keep_in_memory, split=datasets.Split(name),
            fingerprint=fingerprint(config, split))
    return datasets.DatasetDict(out)
