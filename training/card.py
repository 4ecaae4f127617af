"""Model cards for trained GA-DMS models: usage, training settings and results as `model-index` metadata.

Cards are written for the folder's final name (`last`, `best`, `merged`), name the data set the figures come
from truly (a hub id, a benchmark, or "synthetic persons (generated, seed S)" for the project's generated
data) with its split, and, for LoRA adapters, carry `base_model` and `library_name: peft`.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

#: The `pretty_name` / heading of the data set cards `dataset_builders.synthetic` writes.
SYNTHETIC_NAME = "GA-DMS synthetic persons"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

#: What each training objective is, for the card's first lines.
OBJECTIVES = {
    "gadms": "gradient-attention guided dual masking: SDM on the noise-masked caption and masked-token "
             "prediction",
    "irra": "the IRRA recipe: SDM on the clean caption, identity loss and random masked-language modelling",
}

USE_MODEL = """```python
import modeling_gadms  # or pass trust_remote_code=True
from transformers import AutoModel, AutoProcessor

model = AutoModel.from_pretrained("{{ repo }}"{{ subfolder }}{{ model_extra }})
processor = AutoProcessor.from_pretrained("{{ repo }}"{{ subfolder }})
batch = processor(text=["a woman in a red coat with a black backpack"], images=[person_crop])
text = model.get_text_features(batch["input_ids"], batch["attention_mask"])
image = model.get_image_features(batch["pixel_values"])
```"""

USE_ADAPTER = """This folder holds LoRA adapters (peft) trained on `GADMSForPreTraining`, the model with
the training heads, over the base model `{{ base_model }}`{% if base_is_path %} (a path relative to this
folder){% endif %}.
{% if num_identities %}The adapter also holds the trained identity classifier ({{ num_identities }}
identities, peft `modules_to_save`): load the base with `num_identities={{ num_identities }}` so that it has
a classifier of that shape for peft to restore (otherwise peft has no module to put the trained classifier
into).
{% endif %}
```python
import modeling_gadms
from peft import PeftModel
from transformers import AutoModelForPreTraining, AutoProcessor

base = AutoModelForPreTraining.from_pretrained("{{ base_path }}"{{ identities }})
pretraining = PeftModel.from_pretrained(base, "{{ repo }}")
model = pretraining.merge_and_unload().gadms  # the dual encoder (`GADMSModel`)
processor = AutoProcessor.from_pretrained("{{ repo }}")
```{% if merged %}

The same model with the adapters merged in is in `merged/`:
`AutoModel.from_pretrained({{ merged }})`.{% endif %}"""

TEMPLATE = """---
{{ card_data }}
---

# {{ model_name }}

A GA-DMS text-to-person retrieval model (CLIP dual encoder), trained with this project's
`training/{{ script }}.py` with the {{ objective }} objective ({{ objective_text }}).

## Use

{{ usage }}

## Training

| setting | value |
|---|---|
{% for key, value in settings %}| {{ key }} | {{ value }} |
{% endfor %}
## Results (text-to-image, {{ dataset_name }}, `{{ split }}` split)

{% if metrics %}| R1 | R5 | R10 | mAP | mINP |
|---|---|---|---|---|
| {{ row }} |

R@K and mAP / mINP follow the field's protocol (every caption a query, every image in the gallery, ties
broken by gallery index), on the `{{ split }}` split of {{ dataset_name }}.{% else %}Not evaluated.{% endif %}
"""


def synthetic_seed(folder: str | Path) -> int | None:
    """The generator seed of a data folder written by `dataset_builders.synthetic` (either format), or None
    when `folder` is not one. Recognised by its data set card (`pretty_name` / heading "GA-DMS synthetic
    persons"); the seed is read from the card's generation settings, else from `synthetic_config.json`."""
    folder = Path(folder)
    card = folder / "README.md"
    if not card.is_file():
        return None
    text = card.read_text(encoding="utf-8", errors="replace")
    front = _front_matter(text)
    heading = re.search(r"^# (.+)$", text, flags=re.MULTILINE)
    named = front.get("pretty_name") == SYNTHETIC_NAME
    if not named and not (heading and heading.group(1).startswith(SYNTHETIC_NAME)):
        return None
    match = re.search(r"^- `seed`: (\d+)\s*$", text, flags=re.MULTILINE)
    if match:
        return int(match.group(1))
    settings = folder / "synthetic_config.json"
    if settings.is_file():
        return int(json.loads(settings.read_text(encoding="utf-8"))["seed"])
    return None


def _front_matter(text: str) -> dict:
    if not text.startswith("---"):
        return {}
    try:
        loaded = yaml.safe_load(text.split("---", 2)[1])
    except (yaml.YAMLError, IndexError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _local_folders(path: str) -> list[Path]:
    """The folder a local data path names, and for files / glob patterns the folders above them."""
    candidate = Path(path.split("*", 1)[0]) if "*" in path else Path(path)
    start = candidate if candidate.is_dir() else candidate.parent
    return [start, *list(start.parents)[:2]]


def describe_data(source: str | None, benchmark: str | None = None) -> dict:
    """`{"name", "type"}` of a data set as a model card should name it.

    `source` is a hub id, a local folder or parquet files; with `benchmark`, `source` is the benchmark's
    `data_root`. Synthetic data of `dataset_builders.synthetic` is "synthetic persons (generated, seed S)"
    whatever loader read it; a hub id is itself; a benchmark on real local data is the benchmark; another
    local folder is its card's `pretty_name` or the folder name (never the path).
    """
    if source and not Path(source.split("*", 1)[0]).exists() and _HUB_ID.match(source) and not benchmark:
        return {"name": source, "type": source}
    if source:
        folders = _local_folders(source) if not benchmark else [Path(source), *Path(source).glob("*/")]
        for folder in folders:
            seed = synthetic_seed(folder)
            if seed is not None:
                return {"name": f"synthetic persons (generated, seed {seed})", "type": "synthetic-persons"}
    if benchmark:
        from evaluation.benchmarks import resolve_benchmark

        key, spec = resolve_benchmark(benchmark)
        return {"name": spec.name, "type": key}
    if not source:
        return {"name": "unknown", "type": "unknown"}
    folder = _local_folders(source)[0]
    card = folder / "README.md"
    pretty = _front_matter(card.read_text(encoding="utf-8", errors="replace")).get("pretty_name") \
        if card.is_file() else None
    name = str(pretty or folder.name or source)
    return {"name": name, "type": re.sub(r"[^\w.-]+", "-", name.lower()).strip("-") or "local"}


def evaluation_data(config) -> dict:
    """The data set the test figures of a run come from: the benchmark's when `benchmark` is set (fine-tuning,
    or pretraining evaluated on a benchmark), else the training data's own split."""
    if config.benchmark:
        return describe_data(config.data_root, benchmark=config.benchmark)
    return describe_data(config.data)


def relative_base(base: str, directory: str | Path) -> str:
    """How an adapter names its base model: a hub id as it is, a local folder relative to `directory`."""
    if not Path(base).exists():
        return base
    return Path(os.path.relpath(Path(base).resolve(), Path(directory).resolve())).as_posix()


def write_model_card(directory: str | Path, config, metrics: dict | None = None, repo_id: str | None = None,
                     final_directory: str | Path | None = None, base_model: str | None = None,
                     num_identities: int = 0, merged: bool = False, trained: str | None = None) -> Path:
    """Write `README.md` with `model-index` results (when `metrics` are given) into a model directory.

    `final_directory` is where the folder will live once saved (cards are written into a temporary folder that
    is renamed afterwards): the card's name and its usage snippet refer to it (or to `repo_id`, the hub repo
    it is pushed to). With `base_model` (a hub id, or a path relative to the final folder) the folder is a
    LoRA adapter: the card says how to load it with peft, carries `base_model` and `library_name: peft`;
    `num_identities` is the size of the identity classifier saved with the adapter, `merged` whether a merged
    copy sits in `merged/`.
    """
    directory = Path(directory)
    final = Path(final_directory) if final_directory is not None else directory
    data = evaluation_data(config)
    split = config.test_split or "test"
    eval_results = None
    if metrics:
        eval_results = [
            EvalResult(task_type="text-to-image-retrieval", task_name="Text-based person retrieval",
                       dataset_type=data["type"], dataset_name=data["name"], dataset_split=split,
                       metric_type=key.lower(), metric_name=key, metric_value=round(float(metrics[key]), 4))
            for key in ("R1", "R5", "R10", "mAP", "mINP") if key in metrics
        ]
    name = final.name
    repo = repo_id or str(final)
    training_data = describe_data(config.data)["name"] if config.data else data["name"]
    settings = [(k, config.to_dict()[k]) for k in ("objective", "objective_preset", "objective_overrides",
                                                   "epochs", "batch_size", "learning_rate",
                                                   "mixed_precision", "lora")]
    if trained:  # what was trained, where it differs from the plan (`max_steps`, a best-on-validation model)
        settings.insert(settings.index(("epochs", config.epochs)) + 1, ("trained", trained))
    settings = [("model", _model_name(config.model, final)), ("training data", training_data), *settings]
    if base_model is not None:
        resolved = os.path.normpath(final / base_model)  # `final` may not exist yet: no `..` through it
        base_is_path = Path(resolved).exists()
        base_path = resolved if base_is_path and not repo_id else base_model
        identities = f", num_identities={num_identities}" if num_identities else ""
        usage = _render(USE_ADAPTER, base_model=base_model, base_is_path=base_is_path, base_path=base_path,
                        repo=repo, num_identities=num_identities, identities=identities,
                        merged=_merged_call(final, repo_id) if merged else "")
        card_data = ModelCardData(library_name="peft", base_model=base_model, license="apache-2.0",
                                  tags=["person-retrieval", "ga-dms", "clip", "lora"], model_name=name,
                                  eval_results=eval_results)
    else:
        subfolder = model_extra = ""
        if repo_id and final.name == "merged":  # `adapter_kwargs`: not the adapter beside it (peft installed)
            subfolder, model_extra = ', subfolder="merged"', ', adapter_kwargs={"subfolder": "merged"}'
        usage = _render(USE_MODEL, repo=repo, subfolder=subfolder, model_extra=model_extra)
        card_data = ModelCardData(library_name="transformers", license="apache-2.0",
                                  tags=["person-retrieval", "ga-dms", "clip"], model_name=name,
                                  eval_results=eval_results)
    card = ModelCard.from_template(
        card_data, template_str=TEMPLATE, model_name=name, usage=usage,
        script="pretrain" if config.data else "finetune", objective=config.objective,
        objective_text=OBJECTIVES.get(config.objective, config.objective),
        settings=settings, metrics=metrics, dataset_name=data["name"], split=split,
        row=" | ".join(f"{float(metrics[k]):.2f}" for k in ("R1", "R5", "R10", "mAP", "mINP") if k in metrics)
        if metrics else "",
    )
    card.save(directory / "README.md")
    return directory / "README.md"


def _merged_call(final: Path, repo_id: str | None) -> str:
    """The arguments of `AutoModel.from_pretrained` that load the merged copy beside an adapter: its folder, or
    the hub repo's `merged/` subfolder. `adapter_kwargs` keeps transformers from taking the adapter at the repo's
    root for the model to load (it looks there whatever `subfolder` says, when peft is installed)."""
    if repo_id:
        return f'"{repo_id}", subfolder="merged", adapter_kwargs={{"subfolder": "merged"}}'
    return f'"{final / "merged"}"'


def _model_name(model: str, final: Path) -> str:
    """The starting model: "tiny", a hub id, or a local folder relative to the card's folder."""
    named = model if model == "tiny" else relative_base(model, final)
    return f"{named} (relative to this folder)" if named != model or Path(model).exists() else named


def _render(template: str, **values) -> str:
    import jinja2

    return jinja2.Template(template).render(**values)


__all__ = ["describe_data", "evaluation_data", "relative_base", "synthetic_seed", "write_model_card"]
