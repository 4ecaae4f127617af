"""The WebPerson-style row schema of the synthetic data set (``datasets.Features``) and record -> row."""
from __future__ import annotations

import io
from typing import Any

import datasets
from PIL import Image

from .attributes import ATTRIBUTE_NAMES

#: Split names in the WebPerson (Hugging Face) format, keyed by the CUHK-PEDES-style names.
HF_SPLIT_NAMES: dict[str, str] = {"train": "train", "val": "validation", "test": "test"}

_ATTRIBUTE_TYPES = {"glasses": datasets.Value("bool"), "skin_tone": datasets.Value("int32")}


def features() -> datasets.Features:
    """Columns: the WebPerson ones (``image``, ``image_path``, ``caption1``, ``caption2``), then
    ``person_id``, ``image_index``, ``view``, one column per attribute, and per caption its clean
    text, its noise kinds and their details (aligned lists)."""
    columns: dict[str, Any] = {
        "image": datasets.Image(),
        "image_path": datasets.Value("string"),
        "caption1": datasets.Value("string"),
        "caption2": datasets.Value("string"),
        "person_id": datasets.Value("int32"),
        "image_index": datasets.Value("int32"),
        "view": datasets.Value("string"),
    }
    for name in ATTRIBUTE_NAMES:
        columns[name] = _ATTRIBUTE_TYPES.get(name, datasets.Value("string"))
    for j in (1, 2):
        columns[f"caption{j}_clean"] = datasets.Value("string")
        columns[f"caption{j}_noise"] = datasets.List(datasets.Value("string"))
        columns[f"caption{j}_noise_detail"] = datasets.List(datasets.Value("string"))
    return datasets.Features(columns)


def encode_jpeg(image: Image.Image, quality: int) -> bytes:
    """JPEG bytes of ``image``."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality, subsampling=0)  # 4:4:4: thin coloured parts survive
    return buffer.getvalue()


def record_to_row(record: dict[str, Any], jpeg: bytes) -> dict[str, Any]:
    """A :func:`generate_records` record as a row of :func:`features` (image given as JPEG bytes)."""
    row: dict[str, Any] = {
        "image": {"bytes": jpeg, "path": record["image_path"]},
        "image_path": record["image_path"],
        "caption1": record["captions"][0],
        "caption2": record["captions"][1],
        "person_id": record["person_id"],
        "image_index": record["image_index"],
        "view": record["view"],
    }
    row.update(record["attributes"])
    for j in (1, 2):
        noise = record["noise"][j - 1]
        row[f"caption{j}_clean"] = record["clean_captions"][j - 1]
        row[f"caption{j}_noise"] = [event["kind"] for event in noise]
        row[f"caption{j}_noise_detail"] = [event["detail"] for event in noise]
    return row
