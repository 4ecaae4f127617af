"""The Hugging Face data set folder that both builders write: ``data/{split}-NNNNN-of-NNNNN.parquet``
shards and a ``README.md`` card whose YAML front matter has ``configs`` and ``dataset_info``, so
``datasets.load_dataset(folder)`` reads it offline and the Hub shows it.

Here: the guard of the output folder, the shard file names, and the card machinery: the metadata as a
``huggingface_hub.DatasetCardData`` (with ``size_categories``, ``configs`` and ``dataset_info``) and the
rendering of a Jinja body template into a ``huggingface_hub.DatasetCard``. The cards' texts stay with their
builders.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

import datasets
import jinja2
from datasets.info import DatasetInfosDict
from datasets.utils.metadata import MetadataConfigs
from huggingface_hub import DatasetCard, DatasetCardData

__all__ = [
    "card_data",
    "check_output_folder",
    "data_files",
    "render_card",
    "shard_file_name",
    "size_category",
]

#: The Hub's ``size_categories`` values by upper bound (``DatasetCardData``'s documented list);
#: huggingface_hub and datasets have no helper that picks one for a row count, hence ours.
_SIZES = (
    (1_000, "n<1K"),
    (10_000, "1K<n<10K"),
    (100_000, "10K<n<100K"),
    (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"),
    (100_000_000, "10M<n<100M"),
    (1_000_000_000, "100M<n<1B"),
    (10_000_000_000, "1B<n<10B"),
    (100_000_000_000, "10B<n<100B"),
    (1_000_000_000_000, "100B<n<1T"),
)


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
    """``{split}-{index:05d}-of-{count:05d}.parquet``, as :func:`data_files` globs them."""
    return f"{split}-{index:05d}-of-{count:05d}.parquet"


def size_category(n: int) -> str:
    """The Hub's ``size_categories`` value for ``n`` rows."""
    return next((name for limit, name in _SIZES if n < limit), "n>1T")


def data_files(splits: Iterable[str]) -> list[dict[str, str]]:
    """The ``data_files`` of the ``default`` config: the parquet shards of each split, in order."""
    return [{"split": split, "path": f"data/{split}-*.parquet"} for split in splits]


def card_data(
    features: datasets.Features, rows: Mapping[str, int], stored: Mapping[str, int], **metadata: Any
) -> DatasetCardData:
    """The card's metadata: ``metadata`` (``license``, ``pretty_name``, ``tags``, ... as
    ``DatasetCardData`` takes them), ``size_categories`` for the total of ``rows``, and the ``configs``
    and ``dataset_info`` blocks as ``datasets`` itself writes them (``push_to_hub``).

    ``configs`` has one ``default`` config with the parquet shards of each split of ``rows``;
    ``dataset_info`` the ``features`` and the splits with their ``rows`` and parquet bytes (``stored``;
    a split missing there counts 0 bytes). Besides documenting the schema, ``dataset_info`` matters for
    caching: ``datasets`` keys the cache of a local folder on its name and on this block, so without
    content-dependent sizes here a regenerated folder of the same name would load the previous data
    from the cache.
    """
    data = DatasetCardData(size_categories=[size_category(sum(rows.values()))], **metadata)
    MetadataConfigs({"default": {"data_files": data_files(rows)}}).to_dataset_card_data(data)
    splits = datasets.SplitDict()
    for split, n in rows.items():
        splits.add(datasets.SplitInfo(split, num_bytes=int(stored.get(split, 0)), num_examples=int(n)))
    total = int(sum(stored.values()))
    info = datasets.DatasetInfo(features=features, splits=splits, download_size=total, dataset_size=total)
    DatasetInfosDict({"default": info}).to_dataset_card_data(data)
    return data


def render_card(data: DatasetCardData | None, template: str, **values: Any) -> str:
    """The README.md text of ``DatasetCard.from_template(data, template_str=template, **values)``.

    ``template`` is a Jinja template of the whole file; a card with metadata starts with
    ``---\\n{{ card_data }}\\n---``. ``values`` and the fields of ``data`` are its variables. Without
    ``data`` (a card with no YAML front matter) the template is rendered alone. The text ends with a
    newline (Jinja drops the template's last one).
    """
    if data is None:
        text = jinja2.Template(template).render(**values)
    else:
        text = str(DatasetCard.from_template(data, template_str=template, **values))
    return text if text.endswith("\n") else text + "\n"
