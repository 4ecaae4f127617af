"""The Hugging Face data set folder that both builders write: ``data/{split}-NNNNN-of-NNNNN.parquet``
shards and a ``README.md`` card whose YAML front matter has ``configs`` and ``dataset_info``, so
``datasets.load_dataset(folder)`` reads it offline and the Hub shows it.

Here: the guard of the output folder, the shard file names, and the card's ``size_categories``,
``configs`` and ``dataset_info`` blocks. The cards' texts stay with their builders.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

import datasets

__all__ = ["check_output_folder", "configs_yaml", "dataset_info_yaml", "shard_file_name", "size_category"]

_SIZES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"))


def check_output_folder(out: Path, marker: str, *, overwrite: bool, overwrite_hint: str, writer: str) -> bool:
    """Check that ``out`` may be written; return whether it holds an earlier output to replace.

    ``out`` may be absent or an empty folder; a non-empty folder only with ``overwrite`` and only if it
    holds ``marker`` (the file that ``writer`` leaves in every folder it writes).

    Raises:
        FileExistsError: ``out`` is not a folder; or it is not empty and ``overwrite`` is off (the
            message ends with ``overwrite_hint``); or it is not empty and holds no ``marker``.
    """
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder")
    if not (out.exists() and any(out.iterdir())):
        return False
    if not overwrite:
        raise FileExistsError(f"{out} is not empty; {overwrite_hint}")
    if not (out / marker).is_file():
        raise FileExistsError(
            f"{out} is not empty and holds no {marker}: refusing to overwrite a folder that {writer} "
            "did not write"
        )
    return True


def shard_file_name(split: str, index: int, count: int) -> str:
    """``{split}-{index:05d}-of-{count:05d}.parquet``, as :func:`configs_yaml` globs them."""
    return f"{split}-{index:05d}-of-{count:05d}.parquet"


def size_category(n: int) -> str:
    """The Hub's ``size_categories`` value for ``n`` rows."""
    return next((name for limit, name in _SIZES if n < limit), "1M<n<10M")


def configs_yaml(splits: Iterable[str]) -> list[dict[str, Any]]:
    """The card's ``configs`` block: one ``default`` config with the parquet shards of each split."""
    return [
        {
            "config_name": "default",
            "data_files": [{"split": split, "path": f"data/{split}-*.parquet"} for split in splits],
        }
    ]


def dataset_info_yaml(
    features: datasets.Features, rows: Mapping[str, int], stored: Mapping[str, int]
) -> dict[str, Any]:
    """The card's ``dataset_info`` block: ``features``, and the splits with their ``rows`` and parquet
    bytes (``stored``; a split missing there counts 0 bytes).

    Besides documenting the schema, it matters for caching: ``datasets`` keys the cache of a local
    folder on its name and on this block, so without content-dependent sizes here a regenerated
    folder of the same name would load the previous data from the cache.
    """
    splits = datasets.SplitDict()
    for split, n in rows.items():
        splits.add(datasets.SplitInfo(split, num_bytes=int(stored.get(split, 0)), num_examples=int(n)))
    total = int(sum(stored.values()))
    info = datasets.DatasetInfo(
        features=features, config_name="default", splits=splits, download_size=total, dataset_size=total
    )
    return info._to_yaml_dict()
