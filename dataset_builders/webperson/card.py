"""The data set card (README.md) of an exported WebPerson folder: YAML front matter with the licence,
``configs`` and ``dataset_info``, then statistics, rejection counts and figures."""

from __future__ import annotations

from typing import Any, Mapping

import datasets
import yaml

from ..hub_folder import configs_yaml, dataset_info_yaml, size_category
from .shards import STAGES

__all__ = ["webperson_card"]

#: The rows of the card's stage table, in order.
STAGE_ORDER = (*STAGES, "export")


def _stage_table(stages: Mapping[str, Mapping[str, Any]]) -> str:
    lines = ["| stage | in | kept | rejected (reason: count) |", "|---|---|---|---|"]
    for name in STAGE_ORDER:
        if name not in stages:
            continue
        stage = stages[name]
        reasons = ", ".join(
            f"{r}: {n:,}" for r, n in sorted(stage.get("rejected", {}).items(), key=lambda x: -x[1])
        )
        lines.append(f"| {name} | {stage.get('in', 0):,} | {stage.get('kept', 0):,} | {reasons or '-'} |")
    return "\n".join(lines)


def webperson_card(
    *,
    name: str,
    license: str,
    features: datasets.Features,
    stats: Mapping[str, Any],
    stages: Mapping[str, Mapping[str, Any]],
    settings: Mapping[str, Any],
    num_bytes: int,
) -> str:
    """README.md of the export: ``stats`` has ``images``, ``captions``, ``vocabulary``,
    ``caption_words`` (min / mean / max); ``stages`` the manifest of each stage."""
    rows = int(stats["images"])
    meta = {
        "license": license,
        "pretty_name": name,
        "language": ["en"],
        "task_categories": ["text-to-image", "image-to-text"],
        "tags": [
            "text-based-person-retrieval",
            "person-re-identification",
            "synthetic-captions",
            "webperson",
        ],
        "size_categories": [size_category(rows)],
        "configs": configs_yaml(["train"]),
        "dataset_info": dataset_info_yaml(features, {"train": rows}, {"train": num_bytes}),
    }
    words = stats["caption_words"]
    settings_lines = "\n".join(f"- `{stage}`: `{value}`" for stage, value in settings.items())
    return f"""---
{yaml.safe_dump(meta, sort_keys=False)}---

# {name}

Person crops from web images with two machine-written captions each, curated with the WebPerson
pipeline of the GA-DMS project (`python -m dataset_builders.webperson`): person detection, a pose
integrity check, and captioning by vision-language models that follow randomly drawn templates.

## Usage

```python
from datasets import load_dataset
ds = load_dataset("path/or/org/name", split="train")
ds[0]["image"], ds[0]["caption1"], ds[0]["caption2"]
```

## Statistics

| | |
|---|---|
| images (person crops) | {rows:,} |
| captions | {int(stats["captions"]):,} |
| vocabulary (distinct lower-cased words) | {int(stats["vocabulary"]):,} |
| caption length in words (min / mean / max) | {words["min"]} / {words["mean"]:.1f} / {words["max"]} |
| source images with a kept crop | {int(stats["source_images"]):,} |

![caption lengths](assets/caption_lengths.png)

## Samples

![sample crops with their captions](assets/samples.png)

## Columns

| column | type | meaning |
|---|---|---|
| `image` | Image (JPEG) | the person crop |
| `image_path` | string | a stable relative path for the crop (`crops/<source_id[:2]>/<crop_id>.jpg`) |
| `caption1`, `caption2` | string | the two captions (captioner 1 and captioner 2) |
| `crop_id` | string | `<source_id>-<k>`: the k-th kept box of the source image |
| `source_id` | string | SHA-256 prefix of the source image's bytes |
| `source_key`, `source_url` | string | where the source image came from (file / row / URL) |
| `box` | list of 4 int32 | the crop in the source image: x0, y0, x1, y1 (pixels) |
| `det_score` | float32 | detector confidence |
| `num_keypoints` | int32 | visible COCO-17 keypoints (-1: pose check skipped) |
| `template1_id`, `template2_id` | string | the template each caption followed |
| `captioner1`, `captioner2` | string | the model behind each caption |

## Curation: items in, kept and rejected per stage

{_stage_table(stages)}

## Settings

{settings_lines}

## Licence and provenance

The licence field above covers the captions and this card. The crops come from web images whose rights
stay with their owners; `source_url` records where each came from. Remove an item on request by its
`source_id`.
"""
