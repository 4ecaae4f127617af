"""Which person attributes a model's embeddings carry: linear probes on frozen image and text features.

Retrieval metrics say how often a model finds the right person, not what it looks at. On data that records
the attributes of each person (the synthetic person set: gender, hair colour, garment colours, accessories,
...), a logistic-regression probe per attribute, fitted on the frozen, L2-normalised embeddings of one split
and scored on another, says which attributes the image tower and the text tower encode: an attribute whose
probe accuracy stays at the majority rate (always answering the most common value of the fitting split) is
invisible to that tower. A contrastive model only learns what both towers can agree on, so an attribute
missing from the image features is usually missing from the text features too, even when its words are in
every caption (docs/method.md section 13).

Needs scikit-learn (`pip install scikit-learn`, part of the `dev` and `curation` extras).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch


@dataclass(frozen=True)
class AttributeProbeResult:
    """Probe accuracies for one attribute on the scored split.

    Attributes:
        attribute: the column name.
        majority: accuracy of always answering the fitting split's most common value.
        image: accuracy of the logistic probe on the image embeddings.
        text: accuracy of the logistic probe on the caption embeddings.
        values: how many distinct values the attribute takes on the fitting split.
    """

    attribute: str
    majority: float
    image: float
    text: float
    values: int


def majority_rate(fit_labels: Sequence[Any], score_labels: Sequence[Any]) -> float:
    """Accuracy on `score_labels` of always answering the most common label of `fit_labels` (ties: the label
    seen first)."""
    if len(fit_labels) == 0 or len(score_labels) == 0:
        raise ValueError("majority_rate needs labels on both splits")
    top = Counter(fit_labels).most_common(1)[0][0]
    return float(np.mean([label == top for label in score_labels]))


def probe_accuracy(fit_features, fit_labels: Sequence[Any], score_features, score_labels: Sequence[Any],
                   *, inverse_regularization: float = 10.0, max_iter: int = 2000) -> float:
    """Accuracy on the scored split of a multinomial logistic regression fitted on (`fit_features`,
    `fit_labels`).

    Features are ``[N, D]`` arrays or tensors; each row is L2-normalised first (retrieval compares cosines). A
    label that occurs only once on the fitting split is kept; one that takes a single value there gives the
    majority rate (there is nothing to fit).
    """
    try:
        from sklearn.linear_model import LogisticRegression
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("attribute probes need scikit-learn: pip install scikit-learn") from error
    fit_x, score_x = _normalised(fit_features), _normalised(score_features)
    if len(fit_x) != len(fit_labels) or len(score_x) != len(score_labels):
        raise ValueError(f"features and labels differ in length: {len(fit_x)} vs {len(fit_labels)} (fit), "
                         f"{len(score_x)} vs {len(score_labels)} (score)")
    fit_y, score_y = [str(v) for v in fit_labels], [str(v) for v in score_labels]
    if len(set(fit_y)) < 2:
        return majority_rate(fit_y, score_y)
    classifier = LogisticRegression(C=inverse_regularization, max_iter=max_iter)
    classifier.fit(fit_x, fit_y)
    return float(np.mean(classifier.predict(score_x) == np.asarray(score_y)))


def _normalised(features) -> np.ndarray:
    if isinstance(features, torch.Tensor):
        x = features.detach().cpu().float().numpy()
    else:
        x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"features must be [N, D], got shape {x.shape}")
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def attribute_oracle_r1(person_ids: Sequence[Any], attribute_rows: Sequence[Sequence[Any]]) -> float:
    """Expected R@1 (0-1) of a retriever that knows exactly the given attributes of every person and nothing
    else.

    `person_ids` and `attribute_rows` describe the gallery, one entry per image (the attributes of an image
    are its person's). A query of person p ranks first, in random order, every image whose attributes equal
    p's, so its first answer is right with probability (images of p) / (images with p's attributes): 1 / k
    when the k persons sharing them have as many images each. Averaged over the gallery's persons (each
    person weighs the same, as when every person has as many queries): how far a model that has learnt only
    these attributes can get on this gallery.
    """
    if len(person_ids) != len(attribute_rows):
        raise ValueError(f"{len(person_ids)} person ids but {len(attribute_rows)} attribute rows")
    if len(person_ids) == 0:
        raise ValueError("attribute_oracle_r1 needs a non-empty gallery")
    attributes_of: dict[Any, tuple] = {}
    for pid, row in zip(person_ids, attribute_rows):
        row = tuple(row)
        if attributes_of.setdefault(pid, row) != row:
            raise ValueError(f"person {pid!r} has images with different attributes: "
                             f"{attributes_of[pid]} and {row}")
    images_of = Counter(person_ids)
    images_with = Counter(tuple(row) for row in attribute_rows)
    return float(np.mean([images_of[pid] / images_with[row] for pid, row in attributes_of.items()]))


def probe_attributes(model, processor, fit_table, score_table, attributes: Sequence[str] | None = None, *,
                     image_column: str = "image", caption_column: str = "caption1", batch_size: int = 256,
                     progress: bool = False) -> list[AttributeProbeResult]:
    """Probe which `attributes` a model's image and caption embeddings carry.

    Args:
        model: a model with ``get_image_features`` / ``get_text_features`` (`AutoModel` of a GA-DMS folder).
        processor: its processor.
        fit_table / score_table: ``datasets.Dataset`` splits (or anything indexable by column name) with the
            image column, the caption column and the attribute columns; the probes are fitted on the first and
            scored on the second (use identity-disjoint splits, e.g. part of train and test).
        attributes: the columns to probe; by default every attribute column of the synthetic person set that
            both tables have (`dataset_builders.synthetic.ATTRIBUTE_NAMES` but the uncaptioned skin tone).

    Returns:
        one [`AttributeProbeResult`] per attribute, in the order asked.
    """
    from .embedding import embed_images, embed_texts, undecoded_images

    if attributes is None:
        from dataset_builders.synthetic.attributes import ATTRIBUTE_NAMES

        attributes = [a for a in ATTRIBUTE_NAMES if a != "skin_tone"
                      and a in fit_table.column_names and a in score_table.column_names]
        if not attributes:
            raise ValueError("the tables have none of the synthetic person set's attribute columns; "
                             "name them")
    for name, table in (("fitting", fit_table), ("scored", score_table)):
        missing = [c for c in (image_column, caption_column, *attributes) if c not in table.column_names]
        if missing:
            raise ValueError(f"the {name} table has no column(s) {missing}; it has {table.column_names}")

    def embed(table, desc):
        images = embed_images(model, processor, undecoded_images(table, image_column), batch_size=batch_size,
                              progress=progress, desc=f"{desc} images")
        texts = embed_texts(model, processor, table[caption_column], batch_size=batch_size, progress=progress,
                            desc=f"{desc} captions")
        return images, texts

    fit_images, fit_texts = embed(fit_table, "fitting")
    score_images, score_texts = embed(score_table, "scored")
    results = []
    for attribute in attributes:
        fit_y, score_y = list(fit_table[attribute]), list(score_table[attribute])
        results.append(AttributeProbeResult(
            attribute=attribute,
            majority=majority_rate([str(v) for v in fit_y], [str(v) for v in score_y]),
            image=probe_accuracy(fit_images, fit_y, score_images, score_y),
            text=probe_accuracy(fit_texts, fit_y, score_texts, score_y),
            values=len({str(v) for v in fit_y}),
        ))
    return results


__all__ = ["AttributeProbeResult", "attribute_oracle_r1", "majority_rate", "probe_accuracy",
           "probe_attributes"]
