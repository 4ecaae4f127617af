"""Retrieval evaluation during and after training, through the evaluation package's embedding and metrics."""

from __future__ import annotations

import logging
from pathlib import Path

import datasets

from evaluation import RetrievalSplit, embed_images, embed_texts, retrieval_metrics
from evaluation.embedding import image_label, readable_split, undecoded_images

logger = logging.getLogger(__name__)


def webperson_view(dataset: datasets.Dataset, caption_columns=("caption1", "caption2")) -> RetrievalSplit:
    """The evaluation view of a WebPerson-schema split: gallery = its images, queries = all their captions.

    The identity is the `person_id` column when present (the synthetic set), else the row (one person per
    image).
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
    """Text-to-image R@1/5/10, mAP and mINP (percent) of `model` on a `RetrievalSplit`, and what they cover.

    An unreadable gallery image (empty, truncated, over the pixel limit, ...) is skipped, not fatal: it
    is logged, left out of the gallery, and the captions of persons left with no gallery image are left
    out of the queries (the protocol needs a positive for every query). Besides the metrics, the result
    holds `num_images` and `num_queries` (what the metrics cover), `skipped_images`, `skipped_queries`
    (counts) and `skipped_files` (one `"<file>: <reason>"` string per skipped image).

    Raises:
        ValueError: no gallery image of the split could be read.
    """
    if device is not None:
        model = model.to(device)
    undecoded = undecoded_images(split.gallery)
    unreadable: list[tuple[int, str]] = []
    gallery = embed_images(model, processor, undecoded, batch_size=batch_size, progress=progress,
                           skipped=unreadable)
    gallery_ids, captions, query_ids = readable_split(split.gallery_ids, split.captions, split.query_ids,
                                                      unreadable)
    if not gallery_ids:
        example = f" (e.g. {image_label(undecoded[0], 0)}: {unreadable[0][1]})" if unreadable else ""
        raise ValueError(f"none of the {len(undecoded)} gallery image(s) of the split could be read{example}")
    skipped_queries = len(split.query_ids) - len(query_ids)
    if unreadable:
        logger.warning("evaluation skipped %d unreadable gallery image(s) of %d and the %d caption(s) of "
                       "persons left without an image", len(unreadable), len(undecoded), skipped_queries)
    queries = embed_texts(model, processor, captions, batch_size=batch_size, progress=progress)
    metrics = retrieval_metrics(queries, gallery, query_ids, gallery_ids)
    return {
        **metrics,
        "num_images": len(gallery_ids),
        "num_queries": len(query_ids),
        "skipped_images": len(unreadable),
        "skipped_queries": skipped_queries,
        "skipped_files": [f"{image_label(undecoded[i], i)}: {reason}" for i, reason in unreadable],
    }


def load_for_evaluation(directory: str | Path, config=None):
    """A saved training output as the GA-DMS dual encoder (`GADMSModel`): a model directory, or a LoRA adapter
    (trained on `GADMSForPreTraining`, so applied to one and merged, then its dual encoder)."""
    import modeling_gadms  # noqa: F401
    from transformers import AutoModel, AutoModelForPreTraining

    directory = Path(directory)
    if (directory / "adapter_config.json").is_file():
        from peft import PeftConfig, PeftModel

        base = PeftConfig.from_pretrained(directory).base_model_name_or_path
        if base and (directory / str(base)).exists():  # a local base is stored relative to the adapter folder
            base = str((directory / str(base)).resolve())
        elif config is not None and (base is None or not Path(str(base)).exists()):
            base = config.model
        pretraining = AutoModelForPreTraining.from_pretrained(base)
        model = PeftModel.from_pretrained(pretraining, directory).merge_and_unload().gadms
    else:
        model = AutoModel.from_pretrained(directory)
    return model.eval()


__all__ = ["evaluate_split", "load_for_evaluation", "webperson_view"]
