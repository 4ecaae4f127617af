"""Stage 7, export: the filtered crops as a Hugging Face data set folder.

``OUT/data/train-NNNNN-of-NNNNN.parquet`` (crops embedded as JPEG bytes), ``OUT/README.md`` (card with
YAML ``configs``), ``OUT/assets/samples.png`` and ``OUT/assets/caption_lengths.png``;
``datasets.load_dataset(OUT)`` reads it offline and :mod:`publish` uploads it. The export is written
to a temporary folder and renamed into place, so a killed export leaves no half data set; crops met
twice (workers that ingested the same picture) are written once.
"""

from __future__ import annotations

import json
import random
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.parquet as pq

from ..hub_folder import check_output_folder, shard_file_name
from ..synthetic.captions import tokenize
from .card import webperson_card
from .figures import caption_length_histogram, sample_grid
from .shards import STAGES, StageStore

__all__ = ["EXPORT_MARKER", "export", "export_features"]

EXPORT_MARKER = "webperson_export.json"
_ROW_GROUP = 100
#: Columns worth dictionary encoding (few distinct values); image bytes and captions are not.
_DICTIONARY = ["template1_id", "template2_id", "captioner1", "captioner2", "source_key"]


def export_features() -> datasets.Features:
    """The published columns: ``image``, ``image_path``, ``caption1``, ``caption2``, then provenance."""
    string = datasets.Value("string")
    return datasets.Features(
        {
            "image": datasets.Image(),
            "image_path": string,
            "caption1": string,
            "caption2": string,
            "crop_id": string,
            "source_id": string,
            "source_key": string,
            "source_url": string,
            "box": datasets.List(datasets.Value("int32"), length=4),
            "det_score": datasets.Value("float32"),
            "num_keypoints": datasets.Value("int32"),
            "template1_id": string,
            "template2_id": string,
            "captioner1": string,
            "captioner2": string,
        }
    )


def _rows(table: pa.Table, keep: list[int]) -> dict[str, list[Any]]:
    data = table.take(keep).to_pydict() if keep else {name: [] for name in table.column_names}
    n = len(keep)
    crop_ids = data["crop_id"]
    return {
        "image": [{"bytes": b, "path": f"{c}.jpg"} for b, c in zip(data["crop"], crop_ids)],
        "image_path": [f"crops/{s[:2]}/{c}.jpg" for s, c in zip(data["source_id"], crop_ids)],
        "caption1": data["caption1"],
        "caption2": data["caption2"],
        "crop_id": crop_ids,
        "source_id": data["source_id"],
        "source_key": data["source_key"],
        "source_url": data["source_url"],
        "box": data["box"],
        "det_score": data["det_score"],
        "num_keypoints": data.get("num_keypoints", [-1] * n),
        "template1_id": data["template1_id"],
        "template2_id": data["template2_id"],
        "captioner1": data["captioner1"],
        "captioner2": data["captioner2"],
    }


def _prepare(out: Path, overwrite: bool) -> Path:
    check_output_folder(
        out,
        EXPORT_MARKER,
        overwrite=overwrite,
        overwrite_hint="pass --overwrite to replace an earlier export",
        writer="the export",
    )
    tmp = out.with_name(f".{out.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "data").mkdir(parents=True)
    (tmp / "assets").mkdir()
    return tmp


def export(
    work: str | Path,
    out_dir: str | Path,
    *,
    from_stage: str = "filter",
    name: str = "WebPerson",
    license: str = "other",
    shard_size: int = 5000,
    samples: int = 8,
    seed: int = 0,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Export the done shards of ``from_stage`` to ``out_dir``; return the statistics written to the card.

    Raises:
        FileNotFoundError: when ``from_stage`` has no done shard; ``FileExistsError``: see ``overwrite``.
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    source = StageStore(work, from_stage)
    names = source.done_names()
    if not names:
        raise FileNotFoundError(f"{source.root}: stage {from_stage!r} has no done shard to export")
    out = Path(out_dir)
    tmp = _prepare(out, overwrite)
    # pass 1: which rows (first occurrence of each crop id, in shard order)
    seen: set[str] = set()
    plan: list[tuple[str, list[int]]] = []
    duplicates = 0
    for shard in names:
        keep = []
        for i, crop_id in enumerate(source.read(shard, columns=["crop_id"]).column("crop_id").to_pylist()):
            if crop_id in seen:
                duplicates += 1
            else:
                seen.add(crop_id)
                keep.append(i)
        plan.append((shard, keep))
    total = sum(len(keep) for _, keep in plan)
    if total == 0:
        shutil.rmtree(tmp)
        raise ValueError(
            f"{source.root}: no crops left to export (every item was rejected; see the manifests)"
        )
    features = export_features()
    schema = features.arrow_schema
    count = -(-total // shard_size)
    vocabulary: set[str] = set()
    lengths: Counter = Counter()
    sources: set[str] = set()
    rng = random.Random(seed)
    reservoir: list[tuple[bytes, tuple[str, str]]] = []
    buffer: dict[str, list[Any]] = {n: [] for n in schema.names}
    written = num_bytes = seen_rows = 0

    def flush() -> None:
        nonlocal written, num_bytes
        path = tmp / "data" / shard_file_name("train", written, count)
        pq.write_table(
            pa.table(buffer, schema=schema), path, row_group_size=_ROW_GROUP, use_dictionary=_DICTIONARY
        )
        num_bytes += path.stat().st_size
        written += 1
        for values in buffer.values():
            values.clear()

    for shard, keep in plan:
        rows = _rows(source.read(shard), keep)
        for k in range(len(keep)):
            for column in schema.names:
                buffer[column].append(rows[column][k])
            pair = (rows["caption1"][k], rows["caption2"][k])
            for caption in pair:
                tokens = tokenize(caption)
                vocabulary.update(tokens)
                lengths[len(tokens)] += 1
            sources.add(rows["source_id"][k])
            seen_rows += 1
            if len(reservoir) < samples:
                reservoir.append((rows["image"][k]["bytes"], pair))
            else:
                slot = rng.randrange(seen_rows)
                if slot < samples:
                    reservoir[slot] = (rows["image"][k]["bytes"], pair)
            if len(buffer["crop_id"]) == shard_size:
                flush()
    if buffer["crop_id"]:
        flush()
    if reservoir:
        sample_grid([r[0] for r in reservoir], [r[1] for r in reservoir]).save(tmp / "assets" / "samples.png")
    caption_length_histogram(lengths).save(tmp / "assets" / "caption_lengths.png")
    stages = {}
    for stage in STAGES:
        store = StageStore(work, stage)
        if store.done_names():
            stages[stage] = store.totals()
    stages["export"] = {
        "in": total + duplicates,
        "kept": total,
        "rejected": {"duplicate_crop": duplicates} if duplicates else {},
    }
    stats = {
        "images": total,
        "captions": 2 * total,
        "vocabulary": len(vocabulary),
        "caption_words": {
            "min": min(lengths),
            "max": max(lengths),
            "mean": sum(k * v for k, v in lengths.items()) / sum(lengths.values()),
        },
        "source_images": len(sources),
        "shards": written,
        "parquet_bytes": num_bytes,
        "duplicates_dropped": duplicates,
    }
    settings = {
        stage: StageStore(work, stage).settings()
        for stage in STAGES
        if stage in stages
    }
    (tmp / "README.md").write_text(
        webperson_card(
            name=name,
            license=license,
            features=features,
            stats=stats,
            stages=stages,
            settings=settings,
            num_bytes=num_bytes,
        )
    )
    (tmp / EXPORT_MARKER).write_text(
        json.dumps({"stats": stats, "stages": stages, "from_stage": from_stage}, indent=2) + "\n"
    )
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return {**stats, "stages": stages}
