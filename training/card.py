"""Model cards for trained GA-DMS models: usage, training settings and results as `model-index` metadata."""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

TEMPLATE = """---
{{ card_data }}
---

# {{ model_name }}

A GA-DMS text-to-person retrieval model (CLIP dual encoder trained with gradient-attention guided dual masking),
trained with this project's `training/{{ script }}.py` ({{ objective }} objective).

## Use

```python
import modeling_gadms  # or pass trust_remote_code=True
from transformers import AutoModel, AutoProcessor

model = AutoModel.from_pretrained("{{ repo }}")
processor = AutoProcessor.from_pretrained("{{ repo }}")
batch = processor(text=["a woman in a red coat with a black backpack"], images=[person_crop])
text = model.get_text_features(batch["input_ids"], batch["attention_mask"])
image = model.get_image_features(batch["pixel_values"])
```

## Training

| setting | value |
|---|---|
{% for key, value in settings %}| {{ key }} | {{ value }} |
{% endfor %}
## Results (text-to-image, {{ dataset_name }} {{ split }})

{% if metrics %}| R1 | R5 | R10 | mAP | mINP |
|---|---|---|---|---|
| {{ "%.2f"|format(metrics.R1) }} | {{ "%.2f"|format(metrics.R5) }} | {{ "%.2f"|format(metrics.R10) }} | {{ "%.2f"|format(metrics.mAP) }} | {{ "%.2f"|format(metrics.mINP) }} |

R@K and mAP / mINP follow the field's protocol (every caption a query, every image in the gallery, ties broken by
gallery index).{% else %}Not evaluated.{% endif %}
"""


def write_model_card(directory: str | Path, config, metrics: dict | None = None, repo_id: str | None = None) -> Path:
    """Write `README.md` with `model-index` results (when `metrics` are given) into a model directory."""
    directory = Path(directory)
    dataset_name = config.benchmark or config.data or "unknown"
    split = config.test_split or "test"
    eval_results = None
    if metrics:
        eval_results = [
            EvalResult(task_type="text-to-image-retrieval", task_name="Text-based person retrieval",
                       dataset_type=str(dataset_name), dataset_name=str(dataset_name), dataset_split=split,
                       metric_type=key.lower(), metric_name=key, metric_value=round(float(metrics[key]), 4))
            for key in ("R1", "R5", "R10", "mAP", "mINP") if key in metrics
        ]
    name = repo_id or config.push_to_hub or directory.name
    data = ModelCardData(library_name="transformers", license="apache-2.0", tags=["person-retrieval", "ga-dms", "clip"],
                         model_name=name, eval_results=eval_results)
    settings = [(k, config.to_dict()[k]) for k in ("objective", "objective_preset", "objective_overrides", "model",
                                                   "data", "benchmark", "epochs", "batch_size", "learning_rate",
                                                   "mixed_precision", "lora")]
    card = ModelCard.from_template(
        data, template_str=TEMPLATE, model_name=name, repo=repo_id or config.push_to_hub or str(directory),
        script="pretrain" if config.objective == "gadms" else "finetune", objective=config.objective,
        settings=settings, metrics=metrics, dataset_name=dataset_name, split=split,
    )
    card.save(directory / "README.md")
    return directory / "README.md"


__all__ = ["write_model_card"]
