"""Text-based person retrieval metrics (R@K, mAP, mINP) as a Hugging Face `evaluate` module.

A thin wrapper: the computation is the plain function :func:`evaluation.metrics.retrieval_metrics` of
the GA-DMS project (package ``gadms``, which must be importable: ``pip install -e .``). Load it with
``evaluate.load("evaluation/metrics/person_retrieval")`` (a path relative to the repository root).
"""

from __future__ import annotations

import datasets
import evaluate
import numpy as np
import torch

from evaluation.metrics.retrieval import retrieval_metrics

_CITATION = """\
@inproceedings{zheng2025gadms,
  title     = {Gradient-Attention Guided Dual-Masking Synergetic Framework for Robust Text-based Person
               Retrieval},
  author    = {Zheng and Zhang and An and Feng and Yang and Ding},
  booktitle = {EMNLP},
  year      = {2025}
}
"""

_DESCRIPTION = """\
Retrieval metrics of text-based person retrieval, by the field's protocol: every query is ranked
against the whole gallery by cosine similarity of L2-normalised embeddings (float32); a gallery item
is a positive when it has the query's person id; ties are broken by gallery index (stable). R@K is the
percent of queries with a positive in the top K, mAP the mean non-interpolated average precision over
the full ranking, mINP the mean of (number of positives) / (rank of the last positive); all in percent.
A query without any positive in the gallery is an error. Memory stays O(chunk x gallery).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: query embeddings, one vector per query (e.g. caption embeddings for text-to-image).
    references: person id of every query (integers).
    gallery_embeddings: gallery embeddings, ``[G, D]`` (array, tensor or list of vectors).
    gallery_ids: person id of every gallery item.
    ks: the K of R@K, default ``(1, 5, 10)``.
    chunk_size: queries ranked at a time (default: automatic).
    device: where to compute (default: CPU).
Returns:
    ``{"R1", "R5", "R10", "mAP", "mINP"}`` (one ``R{K}`` per K), floats in percent.
Example:
    >>> import evaluate
    >>> metric = evaluate.load("evaluation/metrics/person_retrieval")
    >>> metric.compute(
    ...     predictions=[[.9, .8, .7, .6, .5, .1], [0, 0, 1, 0, 0, 0]], references=[3, 9],
    ...     gallery_embeddings=np.eye(6), gallery_ids=[7, 3, 9, 3, 5, 3], ks=[1, 2])
    {'R1': 50.0, 'R2': 100.0, 'mAP': 75.0, 'mINP': 75.0}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class PersonRetrieval(evaluate.Metric):
    """R@K / mAP / mINP of ranking a gallery for every query (text-based person retrieval)."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("float32")),
                    "references": datasets.Value("int64"),
                }
            ),
            reference_urls=["https://arxiv.org/abs/2509.09118"],
        )

    def _compute(
        self,
        predictions,
        references,
        gallery_embeddings=None,
        gallery_ids=None,
        ks=(1, 5, 10),
        chunk_size=None,
        device=None,
    ) -> dict:
        if gallery_embeddings is None or gallery_ids is None:
            raise ValueError("person_retrieval needs gallery_embeddings= and gallery_ids= in compute()")
        queries = torch.from_numpy(np.stack([np.asarray(p, dtype=np.float32) for p in predictions]))
        if isinstance(gallery_embeddings, torch.Tensor):
            gallery = gallery_embeddings
        else:
            gallery = torch.from_numpy(np.asarray(gallery_embeddings, dtype=np.float32))
        return retrieval_metrics(
            queries,
            gallery,
            np.asarray(references),
            gallery_ids,
            tuple(ks),
            chunk_size=chunk_size,
            device=device,
        )
