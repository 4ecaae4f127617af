"""The synthetic data set as in-process ``datasets`` objects (``Dataset.from_generator``), no files needed."""
from __future__ import annotations

from typing import Any, Iterator

import datasets

from .config import SyntheticPersonConfig
from .generator import generate_records
from .schema import HF_SPLIT_NAMES, encode_jpeg, features, record_to_row


def _rows(config: SyntheticPersonConfig, split: str) -> Iterator[dict[str, Any]]:
    for record in generate_records(config, splits=[split]):
        yield record_to_row(record, encode_jpeg(record["image"], config.jpeg_quality))


def to_dataset_dict(config: SyntheticPersonConfig, *, cache_dir: str | None = None,
                    keep_in_memory: bool = False) -> datasets.DatasetDict:
    """Build the data set with ``datasets.Dataset.from_generator``: splits ``train``, ``validation``,
    ``test`` (empty ones left out), columns as in the WebPerson format (see ``schema.features``).

    The result is cached by ``datasets`` (keyed on the config), so a second call is quick.
    """
    out = {}
    for split, ids in config.split_ids().items():
        if len(ids) == 0:
            continue
        out[HF_SPLIT_NAMES[split]] = datasets.Dataset.from_generator(
            _rows, features=features(), gen_kwargs={"config": config, "split": split},
            cache_dir=cache_dir, keep_in_memory=keep_in_memory, split=datasets.Split(HF_SPLIT_NAMES[split]))
    return datasets.DatasetDict(out)
