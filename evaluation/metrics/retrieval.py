"""Retrieval metrics of text-based person retrieval: R@K, mAP and mINP, exactly as the field computes them.

Protocol (docs/method.md section 7):

- every query is ranked against the WHOLE gallery by cosine similarity of L2-normalised embeddings
  (computed in float32 whatever the input dtype);
- a gallery item is a positive of a query when it carries the query's person id; there is no camera
  or junk filtering;
- ties are broken by gallery index: of two gallery items with exactly equal similarity, the one with
  the smaller index ranks first (a stable descending sort; the reference code sorts unstably);
- R@K: percent of queries with at least one positive among the first K;
- mAP: mean over queries of the non-interpolated average precision over the full ranking,
  ``AP = (1/P) * sum_i i / rank_i`` over the P positives, ``rank_i`` the 1-based rank of the i-th;
- mINP: mean over queries of ``P / rank_P`` (the rank of the last positive);
- all in percent. A query with no positive in the gallery is an error.

How it is computed without a full sort: the rank of a positive ``p`` with similarity ``s_p`` is
``1 + #{j : s_j > s_p} + #{j < p : s_j == s_p}``. For each query only its ``P`` positives need a rank,
so only the counts of items scoring ``>`` and ``>=`` each positive are needed (the second only detects
exact ties, which are then resolved by index). On CPU, only the items scoring at least the query's
lowest positive can contribute: they are selected in one pass, sorted (usually a small fraction of the
row) and the positives binary-searched in them (:data:`CPU_CANDIDATE_SORT`). On other devices the two
counts come from two comparisons of the row per positive. Either replaces a full ``O(G log G)`` sort of
every row. Queries with more than :data:`SORT_THRESHOLD` positives are ranked by a stable sort instead.
Queries are processed in chunks so that the similarity block held at any time is ``chunk x gallery``,
never ``queries x gallery``; a very large gallery is also normalised block by block instead of being
copied whole.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import torch

__all__ = [
    "retrieval_metrics",
    "retrieval_metrics_from_similarity",
    "bidirectional_retrieval_metrics",
    "per_query_retrieval",
    "per_query_retrieval_from_similarity",
    "summarize_per_query",
    "PerQueryRetrieval",
    "NoPositiveError",
    "SORT_THRESHOLD",
    "CPU_CANDIDATE_SORT",
]

#: Queries with more positives than this are ranked by a stable sort of their row instead of counting.
SORT_THRESHOLD = 64
#: On CPU, rank the positives of the other queries by sorting only the items that score at least the
#: query's lowest positive (numpy, row by row) instead of counting comparisons for every positive.
CPU_CANDIDATE_SORT = True
# Work-space target: elements of one ``chunk x gallery`` float32 similarity block (256 MiB); 64 MiB for
# a gallery too large to normalise once (the work space then stays ~0.2 GB beside the gallery).
_BLOCK_ELEMENTS = 2**26
_LARGE_GALLERY_BLOCK_ELEMENTS = 2**24
# Scratch space of the counting comparisons and of the occasional sort (elements, 64 MiB in float32).
_WORK_ELEMENTS = 2**24
# Rows x gallery elements of one batch of the tie resolution or of the sort path (several temporaries each).
_SORT_ELEMENTS = 2**22
# A gallery larger than this (elements, float32) is normalised block by block, never copied whole.
_GALLERY_CACHE_ELEMENTS = 2**27


class NoPositiveError(ValueError):
    """Raised when some queries have no gallery item with their person id (the protocol forbids it)."""


@dataclass
class PerQueryRetrieval:
    """Per-query results, in the order of the queries given.

    Attributes:
        first_positive_rank: 1-based rank of the best-ranked positive, int64 ``[Q]``.
        average_precision: non-interpolated average precision over the full ranking, float64 ``[Q]``
            (a fraction, not percent).
        inverse_negative_penalty: ``P / rank of the last positive``, float64 ``[Q]`` (a fraction).
        num_positives: number of positives of each query in the gallery, int64 ``[Q]``.
    """

    first_positive_rank: torch.Tensor
    average_precision: torch.Tensor
    inverse_negative_penalty: torch.Tensor
    num_positives: torch.Tensor


# --------------------------------------------------------------------------------------------------
# inputs


def _as_id_tensors(query_ids: Any, gallery_ids: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Convert both id sequences to int64 CPU tensors (non-integer ids are mapped jointly to codes)."""

    def to_tensor(ids: Any) -> torch.Tensor | None:
        if isinstance(ids, torch.Tensor):
            t = ids.detach().cpu()
        else:
            arr = np.asarray(ids)
            if arr.dtype.kind not in "iub":
                return None
            t = torch.from_numpy(arr.astype(np.int64))
        if t.is_floating_point() or t.is_complex():
            return None
        return t.reshape(-1).to(torch.int64) if t.dim() <= 1 else t

    q, g = to_tensor(query_ids), to_tensor(gallery_ids)
    if q is None or g is None:  # e.g. string ids: a joint vocabulary keeps equality intact
        vocab: dict[Any, int] = {}
        codes = [[vocab.setdefault(x, len(vocab)) for x in _to_list(ids)] for ids in (query_ids, gallery_ids)]
        q, g = (torch.tensor(c, dtype=torch.int64) for c in codes)
    for name, t in (("query_ids", q), ("gallery_ids", g)):
        if t.dim() != 1:
            raise ValueError(f"{name} must be one-dimensional, got shape {tuple(t.shape)}")
    return q, g


def _to_list(ids: Any) -> list:
    if isinstance(ids, torch.Tensor):
        return ids.reshape(-1).tolist()
    if isinstance(ids, np.ndarray):
        return ids.reshape(-1).tolist()
    return list(ids)


def _as_embeddings(x: Any, name: str) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    if t.dim() != 2:
        raise ValueError(f"{name} must be a 2-D tensor [N, D], got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must be floating point (float32/float16/bfloat16), got {t.dtype}")
    return t


def _row_norms(x: torch.Tensor, name: str) -> torch.Tensor:
    """L2 norms ``[N, 1]`` in float32; also the finiteness check (a NaN or inf makes its row's norm so)."""
    norms = x.float().norm(2, 1, keepdim=True)
    if not bool(torch.isfinite(norms).all()):
        raise ValueError(f"{name} contains NaN or infinite values (or values whose float32 norm overflows)")
    return norms


def _l2_normalize(x: torch.Tensor, name: str, norms: torch.Tensor | None = None, out=None) -> torch.Tensor:
    """Float32 L2 normalisation, bit-identical to ``F.normalize(x.float(), dim=1)``."""
    x = x.float()
    norms = _row_norms(x, name) if norms is None else norms
    return torch.div(x, norms.clamp_min(1e-12), out=out)


def _check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    ks = tuple(ks)
    if not ks:
        raise ValueError("ks must contain at least one K")
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"every K in ks must be a positive integer, got {k!r}")
    return tuple(int(k) for k in ks)


@dataclass
class _Positives:
    """Where each query's positives are: ``gallery_order[start : start + count]`` (ascending index)."""

    gallery_order: torch.Tensor
    start: torch.Tensor
    count: torch.Tensor


def _group_positives(query_ids: torch.Tensor, gallery_ids: torch.Tensor, given_ids: Any = None) -> _Positives:
    """Positives of each query; `given_ids` (the query ids as the caller gave them, e.g. strings that
    `_as_id_tensors` turned into codes) are what an error message shows."""
    sorted_ids, gallery_order = torch.sort(gallery_ids, stable=True)
    unique_ids, counts = torch.unique_consecutive(sorted_ids, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.searchsorted(unique_ids, query_ids).clamp(max=max(len(unique_ids) - 1, 0))
    found = (
        unique_ids[slot] == query_ids if len(unique_ids) else torch.zeros_like(query_ids, dtype=torch.bool)
    )
    if not bool(found.all()):
        missing = (~found).nonzero().flatten()
        shown = _to_list(given_ids) if given_ids is not None else query_ids.tolist()
        example_ids = list(dict.fromkeys(shown[i] for i in missing.tolist()))[:5]
        raise NoPositiveError(
            f"{len(missing)} of {len(query_ids)} queries have no positive in the gallery (no gallery item "
            f"with their person id; e.g. person ids {example_ids}); the retrieval protocol requires at "
            "least one per query"
        )
    return _Positives(gallery_order, starts[slot], counts[slot])


# --------------------------------------------------------------------------------------------------
# ranking of one chunk of similarity rows


def _positive_index_matrix(pos: _Positives, rows: torch.Tensor, width: int) -> torch.Tensor:
    """``[n, width]`` gallery indices of the positives of ``rows`` (padded with the first positive)."""
    offsets = torch.arange(width)
    count = pos.count[rows]
    take = torch.where(offsets[None, :] < count[:, None], offsets[None, :], 0)
    return pos.gallery_order[pos.start[rows][:, None] + take]


def _count_greater(
    block: torch.Tensor, threshold: torch.Tensor, work: torch.Tensor, or_equal: bool
) -> torch.Tensor:
    """Per row, how many entries of ``block`` are ``> threshold`` (``>=`` with ``or_equal``), int64.

    Column segments are compared into the flat float32 buffer ``work`` as 0/1 values and summed: a
    float row sum is several times faster than a bool one, and exact (each segment is < 2**24 wide).
    """
    m, g = block.shape
    width = max(1, min(g, len(work) // max(m, 1), 2**24 - 1))
    rows = max(1, len(work) // width)
    compare = torch.ge if or_equal else torch.gt
    total = torch.zeros(m, dtype=torch.int64, device=block.device)
    for r in range(0, m, rows):
        for a in range(0, g, width):
            segment = block[r : r + rows, a : a + width]
            out = work[: segment.numel()].view(segment.shape)
            total[r : r + rows] += compare(segment, threshold[r : r + rows], out=out).sum(1).to(torch.int64)
    return total


def _ranks_by_counting(
    sims: torch.Tensor, positives: torch.Tensor, count: torch.Tensor, work: torch.Tensor
) -> torch.Tensor:
    """1-based ranks of the positives of each row, ascending, padded with a large value.

    ``count`` must be sorted in descending order, so that rows with more than ``k`` positives are a
    prefix of the chunk. ``work`` is a flat float32 scratch buffer.
    """
    n, width = positives.shape
    device = sims.device
    scores = sims.gather(1, positives)  # [n, width]
    greater = torch.zeros(n, width, dtype=torch.int64, device=device)
    greater_equal = torch.zeros(n, width, dtype=torch.int64, device=device)
    rows_with = (count[None, :] > torch.arange(width)[:, None]).sum(1).tolist()
    for k in range(width):
        m = int(rows_with[k])
        block, threshold = sims[:m], scores[:m, k : k + 1]
        greater[:m, k] = _count_greater(block, threshold, work, or_equal=False)
        greater_equal[:m, k] = _count_greater(block, threshold, work, or_equal=True)
    valid = torch.arange(width, device=device)[None, :] < count.to(device)[:, None]
    return _ranks_from_counts(sims, positives, scores, greater, greater_equal, valid)


def _ranks_from_counts(
    sims: torch.Tensor,
    positives: torch.Tensor,
    scores: torch.Tensor,
    greater: torch.Tensor,
    greater_equal: torch.Tensor,
    valid: torch.Tensor,
    row_index: torch.Tensor | None = None,
) -> torch.Tensor:
    """Ascending 1-based ranks (padded with a large value) from the per-positive counts of items
    scoring ``>`` and ``>=`` the positive; exact ties are broken by gallery index. Row ``i`` of the
    other arguments is row ``row_index[i]`` of ``sims`` (default: row ``i``)."""
    device = sims.device
    ranks = greater + 1
    # greater_equal counts the positive itself; anything beyond is an exact tie, broken by index.
    tied = valid & (greater_equal - greater > 1)
    if bool(tied.any()):
        tie_rows, tie_cols = tied.nonzero(as_tuple=True)
        gallery_index = torch.arange(sims.shape[1], device=device)
        step = max(1, _SORT_ELEMENTS // sims.shape[1])
        for a in range(0, len(tie_rows), step):
            r, c = tie_rows[a : a + step], tie_cols[a : a + step]
            sim_rows = sims[r] if row_index is None else sims[row_index[r]]
            equal_before = (sim_rows == scores[r, c][:, None]) & (
                gallery_index[None, :] < positives[r, c][:, None]
            )
            ranks[r, c] += equal_before.sum(1)
    ranks = torch.where(valid, ranks, torch.iinfo(torch.int64).max)
    return torch.sort(ranks, dim=1).values


def _ranks_by_candidates(
    sims: torch.Tensor, row_index: torch.Tensor, positives: torch.Tensor, count: torch.Tensor
) -> torch.Tensor:
    """Same result as :func:`_ranks_by_counting` for rows ``row_index`` of a float32 CPU similarity
    block (in any order of positive counts), row by row in numpy, without copying the rows.

    Only the items scoring at least a row's lowest-scoring positive can outrank any of its positives.
    Those candidates are selected (one comparison per item), sorted (numpy's vectorised sort, on
    typically a small fraction of the row) and the positives' scores are binary-searched in them,
    which gives the ``>`` and ``>=`` counts of every positive; when a row has so few positives that
    ``2 * P < log2(candidates)``, the candidates are compared with each positive instead of sorted.
    Ties are then resolved by index as in the counting path. Cost per row: one pass over the gallery
    plus a sort of (or 2P passes over) the candidates, so at worst one sort of the row.
    """
    n, width = positives.shape
    scores = sims[row_index[:, None], positives]  # [n, width]
    valid = torch.arange(width)[None, :] < count[:, None]
    lowest = torch.where(valid, scores, torch.inf).amin(1)
    rows, score_rows, lowest_rows = sims.numpy(), scores.numpy(), lowest.numpy()
    greater = np.empty((n, width), dtype=np.int64)
    greater_equal = np.empty((n, width), dtype=np.int64)
    for i, (r, num) in enumerate(zip(row_index.tolist(), count.tolist())):
        row = rows[r]
        candidates = np.compress(row >= lowest_rows[i], row)
        size = len(candidates)
        if 2 * num < math.log2(size + 1):  # few positives, many candidates: two counts per positive
            for k, score in enumerate(score_rows[i, :num].tolist()):
                greater[i, k] = np.count_nonzero(candidates > score)
                greater_equal[i, k] = np.count_nonzero(candidates >= score)
            greater[i, num:], greater_equal[i, num:] = greater[i, 0], greater_equal[i, 0]  # padding
            continue
        candidates.sort()
        greater[i] = size - np.searchsorted(candidates, score_rows[i], side="right")
        greater_equal[i] = size - np.searchsorted(candidates, score_rows[i], side="left")
    return _ranks_from_counts(
        sims, positives, scores, torch.from_numpy(greater), torch.from_numpy(greater_equal), valid, row_index
    )


def _ranks_by_sorting(
    sims: torch.Tensor, query_ids: torch.Tensor, gallery_ids: torch.Tensor, width: int
) -> torch.Tensor:
    """Same as :func:`_ranks_by_counting`, by a stable descending sort (for rows with many positives)."""
    n, g = sims.shape
    out = torch.full((n, width), torch.iinfo(torch.int64).max, dtype=torch.int64, device=sims.device)
    step = max(1, _SORT_ELEMENTS // g)
    for a in range(0, n, step):
        order = torch.sort(sims[a : a + step], dim=1, descending=True, stable=True).indices
        matches = gallery_ids[order] == query_ids[a : a + step, None]
        slot = matches.cumsum(1) - 1
        r, col = matches.nonzero(as_tuple=True)
        out[a + r, slot[r, col]] = col + 1
    return out


def _summarize_ranks(ranks: torch.Tensor, count: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """First rank, AP and INP from ascending ranks ``[n, width]`` (padding beyond ``count``)."""
    width = ranks.shape[1]
    ranks = ranks.cpu()
    count = count.cpu()
    valid = torch.arange(width)[None, :] < count[:, None]
    ordinal = torch.arange(1, width + 1, dtype=torch.float64)[None, :]
    precision = torch.where(valid, ordinal / ranks.to(torch.float64), 0.0)
    ap = precision.sum(1) / count.to(torch.float64)
    last = ranks.gather(1, (count - 1)[:, None]).squeeze(1)
    inp = count.to(torch.float64) / last.to(torch.float64)
    return ranks[:, 0].clone(), ap, inp


def _rank_rows(
    sims: torch.Tensor,
    rows: torch.Tensor,
    pos: _Positives,
    query_ids: torch.Tensor,
    gallery_ids_device: torch.Tensor,
    work: torch.Tensor,
) -> tuple[torch.Tensor, ...]:
    """Per-query first rank / AP / INP for a chunk; ``rows`` sorted by descending positive count
    (any order on the CPU candidate path)."""
    if _uses_candidate_sort(sims.device):
        return _rank_rows_cpu(sims, rows, pos, query_ids, gallery_ids_device)
    count = pos.count[rows]
    heavy = int((count > SORT_THRESHOLD).sum())
    results = []
    if heavy:
        width = int(count[0])
        ranks = _ranks_by_sorting(
            sims[:heavy], query_ids[rows[:heavy]].to(sims.device), gallery_ids_device, width
        )
        results.append(_summarize_ranks(ranks, count[:heavy]))
    if heavy < len(rows):
        light = rows[heavy:]
        width = int(count[heavy])
        positives = _positive_index_matrix(pos, light, width).to(sims.device)
        if sims.device.type == "cpu" and CPU_CANDIDATE_SORT:
            ranks = _ranks_by_candidates(sims[heavy:], positives, count[heavy:])
        else:
            ranks = _ranks_by_counting(sims[heavy:], positives, count[heavy:], work)
        results.append(_summarize_ranks(ranks, count[heavy:]))
    return tuple(torch.cat(parts) for parts in zip(*results))


def _uses_candidate_sort(device: torch.device) -> bool:
    return device.type == "cpu" and CPU_CANDIDATE_SORT


def _rank_rows_cpu(
    sims: torch.Tensor,
    rows: torch.Tensor,
    pos: _Positives,
    query_ids: torch.Tensor,
    gallery_ids: torch.Tensor,
) -> tuple[torch.Tensor, ...]:
    """:func:`_rank_rows` on CPU: candidate sort for most rows, stable sort for rows with many positives."""
    count = pos.count[rows]
    n = len(rows)
    first = torch.empty(n, dtype=torch.int64)
    ap = torch.empty(n, dtype=torch.float64)
    inp = torch.empty(n, dtype=torch.float64)
    heavy = count > SORT_THRESHOLD
    for select, by_sort in ((heavy, True), (~heavy, False)):
        index = select.nonzero().flatten()
        if not len(index):
            continue
        width = int(count[index].max())
        if by_sort:
            ranks = _ranks_by_sorting(sims[index], query_ids[rows[index]], gallery_ids, width)
        else:
            positives = _positive_index_matrix(pos, rows[index], width)
            ranks = _ranks_by_candidates(sims, index, positives, count[index])
        first[index], ap[index], inp[index] = _summarize_ranks(ranks, count[index])
    return first, ap, inp


# --------------------------------------------------------------------------------------------------
# similarity chunks


def _default_chunk_size(gallery_size: int, large_gallery: bool = False) -> int:
    block = _LARGE_GALLERY_BLOCK_ELEMENTS if large_gallery else _BLOCK_ELEMENTS
    return max(2, block // max(gallery_size, 1))


def _gallery_block_size(gallery_embeds: torch.Tensor, gallery_block_size: int | None) -> int:
    """Rows normalised at a time: the whole gallery when small enough, else 16 MiB (float32) blocks."""
    g, d = gallery_embeds.shape
    if gallery_block_size is None:
        return g if g * d <= _GALLERY_CACHE_ELEMENTS else max(1, 2**22 // d)
    return gallery_block_size


def _embedding_similarity_chunks(
    query_embeds: torch.Tensor,
    gallery_embeds: torch.Tensor,
    order: torch.Tensor,
    chunk_size: int,
    gallery_block_size: int | None,
    device: torch.device,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(rows, similarity[rows])`` in float32 on ``device`` for consecutive chunks of ``order``.

    The similarity block is written into one reused buffer. A gallery larger than
    ``_GALLERY_CACHE_ELEMENTS`` is normalised in 16 MiB blocks for every
    chunk instead of being copied whole; its row norms are computed once.
    """
    g, d = gallery_embeds.shape
    gallery_block_size = _gallery_block_size(gallery_embeds, gallery_block_size)
    cached = gallery_block_size >= g
    if cached:
        gallery_normed = _l2_normalize(gallery_embeds.to(device), "gallery_embeds")
    else:
        # one float32 buffer for a gallery block: filled by an exact widening copy and normalised in
        # place, so that the loop allocates nothing of the gallery's size (no temporaries to fragment)
        block_buffer = torch.empty(min(gallery_block_size, g), d, dtype=torch.float32, device=device)

        def gallery_block(b: int) -> torch.Tensor:
            block = gallery_embeds[b : b + gallery_block_size]
            return block_buffer[: len(block)].copy_(block)

        gallery_norms = torch.cat(
            [_row_norms(gallery_block(b), "gallery_embeds") for b in range(0, g, gallery_block_size)]
        )
    buffer = torch.empty(-(-min(chunk_size, len(order)) // 8) * 8, g, dtype=torch.float32, device=device)
    for a in range(0, len(order), chunk_size):
        rows = order[a : a + chunk_size]
        # BLAS kernels round differently for a one-row product (gemv) and for row-count tails; padding
        # the chunk to a multiple of 8 rows keeps similarities independent of the chunking (on MKL).
        padded = torch.cat([rows, rows[-1:].repeat((-len(rows)) % 8)])
        queries = _l2_normalize(query_embeds[padded.to(query_embeds.device)].to(device), "query_embeds")
        sims = buffer[: len(padded)]
        if cached:
            torch.mm(queries, gallery_normed.T, out=sims)
        else:
            for b in range(0, g, gallery_block_size):
                block = gallery_block(b)
                normed = _l2_normalize(block, "", gallery_norms[b : b + len(block)], block)
                sims[:, b : b + len(block)] = queries @ normed.T
        del queries
        yield rows, sims[: len(rows)]


def _matrix_similarity_chunks(
    similarity: torch.Tensor, order: torch.Tensor | None, chunk_size: int, device: torch.device
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(rows, similarity[rows])`` in float32 on ``device``; ``order=None``: consecutive rows,
    as views when the matrix already is float32 on ``device`` (no copy)."""
    num_rows = similarity.shape[0]
    for a in range(0, num_rows, chunk_size):
        if order is None:
            rows = torch.arange(a, min(a + chunk_size, num_rows))
            chunk = similarity[a : a + chunk_size]
        else:
            rows = order[a : a + chunk_size]
            chunk = similarity[rows.to(similarity.device)]
        chunk = chunk.to(device=device, dtype=torch.float32).contiguous()
        low, high = torch.aminmax(chunk)  # NaN propagates into both, an infinity into one
        if not bool(torch.isfinite(low) & torch.isfinite(high)):
            raise ValueError("similarity contains NaN or infinite values")
        yield rows, chunk


def _run(
    chunks: Iterator[tuple[torch.Tensor, torch.Tensor]],
    pos: _Positives,
    query_ids: torch.Tensor,
    gallery_ids: torch.Tensor,
    device: torch.device,
) -> PerQueryRetrieval:
    q = len(query_ids)
    first = torch.empty(q, dtype=torch.int64)
    ap = torch.empty(q, dtype=torch.float64)
    inp = torch.empty(q, dtype=torch.float64)
    gallery_ids_device = gallery_ids.to(device)
    work = torch.empty(_WORK_ELEMENTS, dtype=torch.float32, device=device)
    for rows, sims in chunks:
        f, a, i = _rank_rows(sims, rows, pos, query_ids, gallery_ids_device, work)
        first[rows], ap[rows], inp[rows] = f, a, i
        del sims
    return PerQueryRetrieval(first, ap, inp, pos.count.clone())


def _processing_order(pos: _Positives) -> torch.Tensor:
    # Most positives first, so that within a chunk the rows with more than k positives are a prefix.
    return torch.sort(pos.count, descending=True, stable=True).indices


# --------------------------------------------------------------------------------------------------
# public API


@torch.no_grad()
def per_query_retrieval(
    query_embeds: torch.Tensor,
    gallery_embeds: torch.Tensor,
    query_ids: Any,
    gallery_ids: Any,
    *,
    chunk_size: int | None = None,
    gallery_block_size: int | None = None,
    device: str | torch.device | None = None,
) -> PerQueryRetrieval:
    """Rank every query against the whole gallery and return per-query results.

    Args:
        query_embeds: ``[Q, D]`` query embeddings (any float dtype; normalised here, used in float32).
        gallery_embeds: ``[G, D]`` gallery embeddings.
        query_ids: ``Q`` person ids (tensor, array or list; integers or any hashable values).
        gallery_ids: ``G`` person ids.
        chunk_size: queries ranked at a time; peak work memory is about ``chunk_size x G`` float32
            values. Default: ``2**26 // G`` (a 256 MiB block; ``2**24 // G`` for a gallery normalised
            block by block).
        gallery_block_size: gallery rows normalised at a time. Default: the whole gallery is normalised
            once when it holds at most ``2**27`` values, else 16 MiB blocks (re-normalised per chunk,
            so that a huge gallery is never copied).
        device: where similarities are computed (default: the device of ``query_embeds``).

    Raises:
        NoPositiveError: when some query has no gallery item with its person id.
    """
    query_embeds = _as_embeddings(query_embeds, "query_embeds")
    gallery_embeds = _as_embeddings(gallery_embeds, "gallery_embeds")
    if query_embeds.shape[1] != gallery_embeds.shape[1]:
        raise ValueError(
            "query and gallery embeddings differ in dimension: "
            f"{query_embeds.shape[1]} vs {gallery_embeds.shape[1]}"
        )
    q_ids, g_ids = _as_id_tensors(query_ids, gallery_ids)
    _check_lengths(query_embeds.shape[0], gallery_embeds.shape[0], q_ids, g_ids)
    device = torch.device(device) if device is not None else query_embeds.device
    pos = _group_positives(q_ids, g_ids, query_ids)
    order = _processing_order(pos)
    large = _gallery_block_size(gallery_embeds, gallery_block_size) < gallery_embeds.shape[0]
    chunk_size = chunk_size or _default_chunk_size(gallery_embeds.shape[0], large)
    chunks = _embedding_similarity_chunks(
        query_embeds, gallery_embeds, order, chunk_size, gallery_block_size, device
    )
    return _run(chunks, pos, q_ids, g_ids, device)


def _check_lengths(num_queries: int, num_gallery: int, q_ids: torch.Tensor, g_ids: torch.Tensor) -> None:
    if num_queries == 0 or num_gallery == 0:
        raise ValueError(f"need at least one query and one gallery item, got {num_queries} and {num_gallery}")
    if len(q_ids) != num_queries:
        raise ValueError(f"{num_queries} queries but {len(q_ids)} query ids")
    if len(g_ids) != num_gallery:
        raise ValueError(f"{num_gallery} gallery items but {len(g_ids)} gallery ids")


def summarize_per_query(results: PerQueryRetrieval, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Average per-query results into the standard percentages ``R{K}``, ``mAP``, ``mINP``."""
    ks = _check_ks(ks)
    out = {f"R{k}": float((results.first_positive_rank <= k).double().mean() * 100) for k in ks}
    out["mAP"] = float(results.average_precision.mean() * 100)
    out["mINP"] = float(results.inverse_negative_penalty.mean() * 100)
    return out


def retrieval_metrics(
    query_embeds: torch.Tensor,
    gallery_embeds: torch.Tensor,
    query_ids: Any,
    gallery_ids: Any,
    ks: Sequence[int] = (1, 5, 10),
    *,
    chunk_size: int | None = None,
    gallery_block_size: int | None = None,
    device: str | torch.device | None = None,
) -> dict[str, float]:
    """R@K, mAP and mINP (percent) of ranking the gallery for every query, by the field's protocol.

    Embeddings are L2-normalised here and compared by cosine similarity in float32; ties are broken
    by gallery index (stable). Memory stays ``O(chunk_size x G)``: the ``Q x G`` similarity matrix is
    never formed. Works on CPU and GPU tensors; float16 / bfloat16 inputs are accepted.

    Args:
        query_embeds: ``[Q, D]``, e.g. caption embeddings for text-to-image retrieval.
        gallery_embeds: ``[G, D]``, e.g. image embeddings.
        query_ids: person id of every query.
        gallery_ids: person id of every gallery item.
        ks: the K of R@K (any positive integers).
        chunk_size, gallery_block_size, device: see :func:`per_query_retrieval`.

    Returns:
        ``{"R1": ..., "R5": ..., "R10": ..., "mAP": ..., "mINP": ...}`` (one ``R{K}`` per K), floats in
        percent.

    Raises:
        NoPositiveError: when some query has no positive in the gallery (the message says how many).

    Example::

        >>> import torch
        >>> from evaluation import retrieval_metrics
        >>> gallery = torch.eye(6)
        >>> queries = torch.tensor([[.9, .8, .7, .6, .5, .1], [0., 0., 1., 0., 0., 0.]])
        >>> retrieval_metrics(queries, gallery, [3, 9], [7, 3, 9, 3, 5, 3], ks=(1, 2))
        {'R1': 50.0, 'R2': 100.0, 'mAP': 75.0, 'mINP': 75.0}
    """
    ks = _check_ks(ks)
    results = per_query_retrieval(
        query_embeds,
        gallery_embeds,
        query_ids,
        gallery_ids,
        chunk_size=chunk_size,
        gallery_block_size=gallery_block_size,
        device=device,
    )
    return summarize_per_query(results, ks)


@torch.no_grad()
def per_query_retrieval_from_similarity(
    similarity: torch.Tensor,
    query_ids: Any,
    gallery_ids: Any,
    *,
    chunk_size: int | None = None,
    device: str | torch.device | None = None,
) -> PerQueryRetrieval:
    """:func:`per_query_retrieval` from a precomputed ``[Q, G]`` similarity (or score) matrix, higher = better."""
    similarity = _as_embeddings(similarity, "similarity")
    q_ids, g_ids = _as_id_tensors(query_ids, gallery_ids)
    _check_lengths(similarity.shape[0], similarity.shape[1], q_ids, g_ids)
    device = torch.device(device) if device is not None else similarity.device
    pos = _group_positives(q_ids, g_ids, query_ids)
    # the CPU candidate path takes rows in any order: consecutive rows, no gather of the matrix
    order = None if _uses_candidate_sort(device) else _processing_order(pos)
    chunk_size = chunk_size or _default_chunk_size(similarity.shape[1])
    chunks = _matrix_similarity_chunks(similarity, order, chunk_size, device)
    return _run(chunks, pos, q_ids, g_ids, device)


@torch.no_grad()
def retrieval_metrics_from_similarity(
    similarity: torch.Tensor,
    query_ids: Any,
    gallery_ids: Any,
    ks: Sequence[int] = (1, 5, 10),
    *,
    chunk_size: int | None = None,
    device: str | torch.device | None = None,
) -> dict[str, float]:
    """Same metrics from a precomputed ``[Q, G]`` similarity (or score) matrix, higher = better.

    Useful for re-ranking scores that are not cosines of two embeddings. Rows are ranked a chunk at a
    time (converted to float32), with the same tie rule (gallery index).
    """
    ks = _check_ks(ks)
    results = per_query_retrieval_from_similarity(
        similarity, query_ids, gallery_ids, chunk_size=chunk_size, device=device
    )
    return summarize_per_query(results, ks)


def bidirectional_retrieval_metrics(
    text_embeds: torch.Tensor,
    image_embeds: torch.Tensor,
    text_ids: Any,
    image_ids: Any,
    ks: Sequence[int] = (1, 5, 10),
    **kwargs: Any,
) -> dict[str, dict[str, float]]:
    """Text-to-image (captions query the image gallery) and image-to-text (images query the captions).

    Returns ``{"t2i": {...}, "i2t": {...}}``, each as :func:`retrieval_metrics`; ``kwargs`` go to it.
    """
    return {
        "t2i": retrieval_metrics(text_embeds, image_embeds, text_ids, image_ids, ks, **kwargs),
        "i2t": retrieval_metrics(image_embeds, text_embeds, image_ids, text_ids, ks, **kwargs),
    }
