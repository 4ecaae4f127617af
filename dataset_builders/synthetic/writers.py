"""Writing the synthetic data set to disk, in the WebPerson format or the CUHK-PEDES format.

- WebPerson: ``README.md`` (data set card with YAML ``configs``) and ``data/{split}-NNNNN-of-NNNNN.parquet``
  shards with embedded JPEG images; ``datasets.load_dataset(folder)`` reads it offline.
- CUHK-PEDES: ``reid_raw.json`` (list of ``{split, captions, file_path, processed_tokens, id}``),
  the images under ``imgs/``, and ``synthetic_attributes.json`` beside it (attributes, view, clean
  captions and noise of each record, aligned with ``reid_raw.json``; the benchmark file itself keeps
  the benchmark's keys only).

Both write ``synthetic_config.json`` (the generation settings) and refuse to write into a non-empty
folder unless ``overwrite=True`` and the folder holds an earlier synthetic data set.
"""
from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from ..hub_folder import check_output_folder, shard_file_name
from .captions import tokenize
from .card import cuhk_card, webperson_card
from .config import SyntheticPersonConfig
from .generator import generate_records
from .schema import HF_SPLIT_NAMES, encode_jpeg, features, record_to_row

CONFIG_FILE = "synthetic_config.json"
#: Rows of one parquet shard by default (about 8 MB of 384 x 128 JPEGs per 1,000 rows).
DEFAULT_SHARD_SIZE = 2000
_ROW_GROUP_SIZE = 100


def _prepare(out_dir: str | Path, config: SyntheticPersonConfig, overwrite: bool) -> Path:
    out = Path(out_dir)
    if check_output_folder(out, CONFIG_FILE, overwrite=overwrite,
                           overwrite_hint="pass overwrite=True (--overwrite) to replace it",
                           writer="this generator"):
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    return out


def _records(config: SyntheticPersonConfig, progress: bool, desc: str) -> Iterator[dict[str, Any]]:
    bar = tqdm(total=config.num_images, desc=desc, unit="img", disable=not progress)
    try:
        for record in generate_records(config):
            yield record
            bar.update(1)
    finally:
        bar.close()


def _noise_counter(counter: Counter, record: dict[str, Any]) -> None:
    for events in record["noise"]:
        counter["captions"] += 1
        counter["noisy"] += bool(events)
        for event in events:
            counter[event["kind"]] += 1


def write_webperson(config: SyntheticPersonConfig, out_dir: str | Path, *,
                    shard_size: int = DEFAULT_SHARD_SIZE, overwrite: bool = False,
                    progress: bool = False) -> Path:
    """Write the data set in the WebPerson (Hugging Face parquet) format and return the folder.

    Splits ``train``, ``validation``, ``test`` (identity-disjoint; empty ones are left out). Load it
    with ``datasets.load_dataset(str(folder))``.
    """
    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
        raise ValueError(f"shard_size must be a positive integer, got {shard_size!r}")
    out = _prepare(out_dir, config, overwrite)
    (out / "data").mkdir()
    schema = features().arrow_schema
    rows_per_split = {s: len(ids) * config.images_per_identity for s, ids in config.split_ids().items()}
    shards = {s: -(-n // shard_size) for s, n in rows_per_split.items()}
    noise: Counter = Counter()
    buffer: list[dict[str, Any]] = []
    written: dict[str, int] = Counter()
    stored: dict[str, int] = Counter()  # parquet bytes per split

    def flush(split: str) -> None:
        index = written[split] // shard_size
        name = shard_file_name(HF_SPLIT_NAMES[split], index, shards[split])
        table = pa.Table.from_pylist(buffer, schema=schema)
        pq.write_table(table, out / "data" / name, row_group_size=_ROW_GROUP_SIZE)
        stored[HF_SPLIT_NAMES[split]] += (out / "data" / name).stat().st_size
        written[split] += len(buffer)
        buffer.clear()

    current = None
    for record in _records(config, progress, "webperson"):
        if current is not None and (record["split"] != current or len(buffer) == shard_size):
            flush(current)
        current = record["split"]
        _noise_counter(noise, record)
        buffer.append(record_to_row(record, encode_jpeg(record["image"], config.jpeg_quality)))
    if buffer:
        flush(current)
    counts = {HF_SPLIT_NAMES[s]: n for s, n in rows_per_split.items() if n}
    (out / "README.md").write_text(webperson_card(config, counts, stored, noise))
    return out


def webperson_folder(config: SyntheticPersonConfig, out_dir: str | Path, *, progress: bool = False) -> Path:
    """The data set of ``config`` in the WebPerson format at ``out_dir``, written only when needed.

    A folder that already holds exactly this data set (its ``synthetic_config.json`` equals ``config`` and its
    card, written last, is there) is reused as it is; an earlier synthetic data set with other settings, or one
    whose writing was interrupted, is replaced. What ``make demo`` and ``benchmarks/bench_method.py`` call.
    """
    out = Path(out_dir)
    try:
        existing = json.loads((out / CONFIG_FILE).read_text())
    except (OSError, ValueError):
        existing = None
    if existing == config.to_dict() and (out / "README.md").is_file():
        return out
    return write_webperson(config, out, overwrite=True, progress=progress)


def write_cuhk_pedes(config: SyntheticPersonConfig, out_dir: str | Path, *, overwrite: bool = False,
                     progress: bool = False) -> Path:
    """Write the data set in the CUHK-PEDES format (``reid_raw.json`` + ``imgs/``) and return the folder.

    Records: ``{"split": "train"|"val"|"test", "captions": [c1, c2], "file_path": "synthetic/...jpg",
    "processed_tokens": [[...], [...]], "id": person_id}`` (ids 1-based).
    """
    out = _prepare(out_dir, config, overwrite)
    images = out / "imgs"
    annotations, extras = [], []
    noise: Counter = Counter()
    made_dirs: set[Path] = set()
    for record in _records(config, progress, "cuhk-pedes"):
        path = images / record["image_path"]
        if path.parent not in made_dirs:
            path.parent.mkdir(parents=True, exist_ok=True)
            made_dirs.add(path.parent)
        path.write_bytes(encode_jpeg(record["image"], config.jpeg_quality))
        annotations.append({
            "split": record["split"],
            "captions": record["captions"],
            "file_path": record["image_path"],
            "processed_tokens": [tokenize(c) for c in record["captions"]],
            "id": record["person_id"],
        })
        extras.append({
            "file_path": record["image_path"],
            "id": record["person_id"],
            "view": record["view"],
            "attributes": record["attributes"],
            "clean_captions": record["clean_captions"],
            "noise": record["noise"],
        })
        _noise_counter(noise, record)
    _write_json(out / "reid_raw.json", annotations)
    _write_json(out / "synthetic_attributes.json", extras)
    counts = Counter(a["split"] for a in annotations)
    (out / "README.md").write_text(cuhk_card(config, dict(counts), noise))
    return out


def _write_json(path: Path, data: Any) -> None:
    with open(path, "w") as handle:
        json.dump(data, handle)


#: Writers by the names the CLI uses.
WRITERS: dict[str, Callable[..., Path]] = {"webperson": write_webperson, "cuhk-pedes": write_cuhk_pedes}
