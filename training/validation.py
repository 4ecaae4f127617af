"""Retrieval evaluation during and after training, through the evaluation package's embedding and metrics."""

from __future__ import annotations

from pathlib import Path

import datasets

from evaluation import RetrievalSplit, embed_images, embed_texts, retrieval_metrics


def webperson_view(dataset: datasets.Dataset, caption_columns=("caption1", "caption2")) -> RetrievalSplit:
    """The evaluation view of a WebPerson-schema split: gallery = its images, queries = all their captions.

    The identity is the `person_id` column when present (the synthetic set), else the row (one person per image).
    """
    ids = list(dataset["person_id"]) if "person_id" in dataset.column_names else list(range(len(dataset)))
    gallery = dataset.select_columns(["image"]).add_column("person_id", ids)
    captions = {column: dataset[column] for column in caption_columns}
    queries = datasets.Dataset.from_dict({
        "caption": [captions[c][row] for row in range(len(dataset)) for c in caption_columns],
        "person_id": [ids[row] for row in range(len(dataset)) for _ in caption_columns],
    })
    return RetrievalSplit(gallery=gallery, queries=queries)


def evaluate_split(model, processor, split: RetrievalSplit, batch_size: int = 256, device=None,
                   progress: bool = False) -> dict:
    """Text-to-image R@1/5/10, mAP and mINP (percent) of `model` on a `RetrievalSplit`."""
    if device is not None:
        model = model.to(device)
    undecoded = split.gallery.cast_column("image", datasets.Image(decode=False))["image"]
    gallery = embed_images(model, processor, undecoded, batch_size=batch_size, progress=progress)
    queries = embed_texts(model, processor, split.captions, batch_size=batch_size, progress=progress)
    return retrieval_metrics(queries, gallery, split.query_ids, split.gallery_ids)


def load_for_evaluation(directory: str | Path, config=None):
    """A saved training output as a plain GA-DMS model: a model directory, or a LoRA adapter (merged)."""
    import modeling_gadms  # noqa: F401
    from transformers import AutoModel

    directory = Path(directory)
    if (directory / "adapter_config.json").is_file():
        from peft import PeftConfig, PeftModel

        base = PeftConfig.from_pretrained(directory).base_model_name_or_path
        if config is not None and (base is None or not Path(str(base)).exists()):
            base = config.model
        model = PeftModel.from_pretrained(AutoModel.from_pretrained(base), directory).merge_and_unload()
    else:
        model = AutoModel.from_pretrained(directory)
    return model.eval()


__all__ = ["evaluate_split", "load_for_evaluation", "webperson_view"]
