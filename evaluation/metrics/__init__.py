"""Retrieval metrics (plain functions on tensors). The `evaluate` wrapper lives in `person_retrieval/`."""

from .retrieval import (
    SORT_THRESHOLD,
    NoPositiveError,
    PerQueryRetrieval,
    bidirectional_retrieval_metrics,
    per_query_retrieval,
    per_query_retrieval_from_similarity,
    retrieval_metrics,
    retrieval_metrics_from_similarity,
    summarize_per_query,
)

__all__ = [
    "SORT_THRESHOLD",
    "NoPositiveError",
    "PerQueryRetrieval",
    "bidirectional_retrieval_metrics",
    "per_query_retrieval",
    "per_query_retrieval_from_similarity",
    "retrieval_metrics",
    "retrieval_metrics_from_similarity",
    "summarize_per_query",
]
