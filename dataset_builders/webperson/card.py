"""The data set card (README.md) of an exported WebPerson folder: YAML front matter (a
``huggingface_hub.DatasetCardData`` with the licence, ``configs`` and ``dataset_info``), then statistics,
rejection counts and figures, rendered from a Jinja template with ``huggingface_hub.DatasetCard``."""

from __future__ import annotations

from typing import Any, Mapping

import datasets

from ..hub_folder import card_data, render_card
from .shards import STAGES

__all__ = ["TEMPLATE", "webperson_card"]

#: The rows of the card's stage table, in order.
STAGE_ORDER = (*STAGES, "export")

#: The card: front matter, then the body. Counts are written with thousands separators.
TEMPLATE = """---
{{ card_data }}
---

# {{ pretty_name }}

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
| images (person crops) | {{ "{:,}".format(images) }} |
| captions | {{ "{:,}".format(captions) }} |
| vocabulary (distinct lower-cased words) | {{ "{:,}".format(vocabulary) }} |
| caption length in words (min / mean / max) | \
{{ words.min }} / {{ "%.1f" | format(words.mean) }} / {{ words.max }} |
| source images with a kept crop | {{ "{:,}".format(source_images) }} |

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

| stage | in | kept | rejected (reason: count) |
|---|---|---|---|
{% for stage in stages %}| {{ stage.name }} | \
{{ "{:,}".format(stage["in"]) }} | {{ "{:,}".format(stage.kept) }} | \
{% for reason, n in stage.rejected %}{{ reason }}: {{ "{:,}".format(n) }}{{ ", " if not loop.last }}\
{% else %}-{% endfor %} |
{% endfor %}
## Settings

{% for stage, value in settings %}- `{{ stage }}`: `{{ value }}`
{% endfor %}
## Licence and provenance

The licence field above covers the captions and this card. The crops come from web images whose rights
stay with their owners; `source_url` records where each came from. Remove an item on request by its
`source_id`.
"""


def _stage_rows(stages: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The stage table's rows in :data:`STAGE_ORDER`; rejection reasons most frequent first."""
    return [
        {
            "name": name,
            "in": int(stages[name].get("in", 0)),
            "kept": int(stages[name].get("kept", 0)),
            "rejected": sorted(stages[name].get("rejected", {}).items(), key=lambda x: -x[1]),
        }
        for name in STAGE_ORDER
        if name in stages
    ]


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
    ``caption_words`` (min / mean / max) and ``source_images``; ``stages`` the manifest of each stage;
    ``settings`` the settings of each stage; ``num_bytes`` the parquet bytes of the one split, ``train``."""
    rows = int(stats["images"])
    data = card_data(
        features, {"train": rows}, {"train": num_bytes},
        license=license,
        pretty_name=name,
        language=["en"],
        task_categories=["text-to-image", "image-to-text"],
        tags=["text-based-person-retrieval", "person-re-identification", "synthetic-captions", "webperson"],
    )
    return render_card(
        data, TEMPLATE,
        images=rows,
        captions=int(stats["captions"]),
        vocabulary=int(stats["vocabulary"]),
        words=stats["caption_words"],
        source_images=int(stats["source_images"]),
        stages=_stage_rows(stages),
        settings=list(settings.items()),
    )
