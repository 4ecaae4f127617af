"""Evaluation of text-to-person retrieval: the field's metrics, benchmark loaders, batched embedding.

- :func:`retrieval_metrics` (and friends in :mod:`evaluation.metrics`): R@K / mAP / mINP by the protocol of docs/method.md section 7
  protocol, chunked (memory ``O(chunk x gallery)``), CPU or GPU.
- :mod:`evaluation.benchmarks`: CUHK-PEDES, ICFG-PEDES, RSTPReid and UFine6926 as ``datasets`` objects.
- :mod:`evaluation.embedding`: embed images / captions with any model exposing ``get_image_features`` /
  ``get_text_features`` and its processor, batched.
- :mod:`evaluation.noise_tokens`: the noise-token AUC, whether token scores (GASS, occlusion) rank a caption's
  noise tokens below its clean ones, on data that records clean captions.
- :mod:`evaluation.attribute_probe`: which person attributes a model's image and text embeddings carry (linear
  probes on frozen features, on data that records attributes).
- ``python evaluation/evaluate_retrieval.py --help``: the evaluation command line.
- ``evaluate.load("evaluation/metrics/person_retrieval")``: the same metric as an ``evaluate`` module.

The loaders and the embedding helpers are imported lazily (they pull in ``datasets`` / ``PIL``).
"""

from __future__ import annotations

import importlib
from typing import Any

from .metrics import (
    NoPositiveError,
    PerQueryRetrieval,
    bidirectional_retrieval_metrics,
    per_query_retrieval,
    retrieval_metrics,
    retrieval_metrics_from_similarity,
    summarize_per_query,
)

_LAZY = {
    "AttributeProbeResult": "attribute_probe",
    "attribute_oracle_r1": "attribute_probe",
    "probe_attributes": "attribute_probe",
    "BENCHMARKS": "benchmarks",
    "BenchmarkFormatError": "benchmarks",
    "MissingImagesError": "benchmarks",
    "RetrievalSplit": "benchmarks",
    "SplitNotFoundError": "benchmarks",
    "evaluation_view": "benchmarks",
    "load_benchmark": "benchmarks",
    "load_retrieval_split": "benchmarks",
    "embed_images": "embedding",
    "embed_texts": "embedding",
    "load_model_and_processor": "embedding",
    "undecoded_images": "embedding",
    "open_image": "embedding",
    "NoiseTokenAUC": "noise_tokens",
    "label_noise_tokens": "noise_tokens",
    "noise_token_auc": "noise_tokens",
    "noise_token_auc_of": "noise_tokens",
    "noise_token_auc_ceiling": "noise_tokens",
    "noise_token_auc_on_split": "noise_tokens",
    "noise_token_labels": "noise_tokens",
    "noisy_captions": "noise_tokens",
    "stored_score_report": "noise_tokens",
}

__all__ = [
    "NoPositiveError",
    "PerQueryRetrieval",
    "bidirectional_retrieval_metrics",
    "per_query_retrieval",
    "retrieval_metrics",
    "retrieval_metrics_from_similarity",
    "summarize_per_query",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
