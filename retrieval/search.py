"""Top-k inner-product search over a gallery of L2-normalised embeddings: exact (torch, FAISS) or approximate
(FAISS IVF, :mod:`retrieval.ann`).

The exact backends return the same results for the same gallery and queries: the same indices in the same
order, and bit-identical scores. Each backend first collects *candidates* (every gallery row whose approximate
score lies within a tolerance of the approximate k-th best score; the tolerance bounds the backend's rounding
error twice over), then one shared step rescores the candidates exactly and ranks them by

    score, descending; ties broken by gallery index, ascending

(the evaluation protocol's rule). The exact score of row ``i`` is the dot product of ``gallery[i]`` (as
stored, e.g. float16) with the float32 normalised query, with the products formed in float64 (exactly) and
summed pairwise in a fixed order, so that it does not depend on which or how many rows are rescored together.

- ``torch`` (:func:`exact_topk`): a matrix(-vector) product in the gallery's own dtype (float16 storage: a
  float16 product with float32 accumulation, no converted copy of the gallery), queries in blocks that bound
  the score buffer.
- ``faiss`` (:func:`faiss_topk`): an exhaustive (brute-force, not approximate) FAISS index that stores the
  gallery in float16 (``IndexScalarQuantizer`` with ``QT_fp16``, inner product), split into contiguous
  shards searched in parallel, one per thread (``IndexShards``; built once, see :func:`build_faiss_index`).
  A gallery stored as float16 (as ``GalleryIndex`` stores it) is the index's own precision: it holds the
  embeddings losslessly, so its scores differ from the exact ones by float32 rounding only.
- ``faiss-ivf`` (:func:`retrieval.ann.ivf_topk`): approximate, for large galleries: an IVF index (4-bit PQ
  fast-scan codes) visits ``nprobe`` of its cells; its candidates go through the same exact rescoring, so the scores
  returned are exact, but a true top-k row in a cell that was not visited is missed (recall@10 >= 0.99 at
  the default ``nprobe`` on the clustered 1,000,000-image benchmark; see ``benchmarks/bench_search.py``).
- ``auto``: ``faiss-ivf`` for galleries of at least :data:`IVF_THRESHOLD` rows that have an IVF index
  (``gadms index`` builds one from that size on), else FAISS for galleries of at least
  :data:`FAISS_THRESHOLD` rows when ``faiss`` is installed, else torch.

Candidates of the exact backends are each backend's best ``k +`` :data:`CANDIDATE_EXTRA`, extended by a full
threshold scan (a FAISS range search) when near-ties run past them.

``k`` larger than the gallery returns every row (``min(k, N)`` columns).

Result pages (HTML) are rendered by :mod:`retrieval.render`.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F



__all__ = [
    "BACKENDS",
    "FAISS_THRESHOLD",
    "IVF_THRESHOLD",
    "build_faiss_index",
    "describe_faiss_index",
    "exact_topk",
    "faiss_topk",
    "import_faiss",
    "resolve_backend",
]

#: ``backend`` choices.
BACKENDS = ("auto", "torch", "faiss", "faiss-ivf")
#: Galleries of at least this many images use FAISS under ``backend="auto"`` (when it is installed).
FAISS_THRESHOLD = 200_000
#: Galleries of at least this many images get an IVF index from ``gadms index`` (``--ivf auto``), and
#: ``backend="auto"`` searches it (``faiss-ivf``) when the index holds one. Below it, the exhaustive float16
#: FAISS index is fast enough (about 15 ms a query at 500,000 x 512 on 2 quiet cores) and exact.
IVF_THRESHOLD = 500_000
#: Gallery rows converted per product in :func:`exact_topk` when the gallery's dtype must be converted.
GALLERY_CHUNK = 262_144
#: Upper bound on the entries of :func:`exact_topk`'s score buffer (queries are processed in blocks).
SCORE_BUFFER = 1 << 26
#: Candidates taken beyond ``k`` (by ``topk`` or FAISS) before falling back to a full threshold scan (a
#: range search with FAISS) for long runs of near-ties at the k-th score.
CANDIDATE_EXTRA = 16
#: Candidate window below the approximate k-th score, per dtype of the approximate scores: at least twice
#: the worst rounding error of a dot product of unit vectors computed in that dtype.
TOLERANCE = {torch.float16: 4e-3, torch.bfloat16: 3e-2, torch.float32: 1e-4, torch.float64: 1e-9}
#: Gallery rows converted to float32 at a time while they are added to the FAISS index (bounds the copy).
FAISS_ADD_CHUNK = 65_536


def import_faiss() -> Any:
    """``import faiss``, or an ``ImportError`` that names the ``gadms[search]`` extra."""
    try:
        import faiss
    except ImportError as err:
        raise ImportError(
            'the FAISS backend needs the faiss package: pip install "gadms[search]" '
            "(or faiss-cpu / faiss-gpu)"
        ) from err
    return faiss


def _faiss_available() -> bool:
    try:
        import_faiss()
    except ImportError:
        return False
    return True


def resolve_backend(backend: str, size: int, *, has_ivf: bool = False) -> str:
    """``torch``, ``faiss`` or ``faiss-ivf`` for a gallery of ``size`` rows.

    ``auto``: ``faiss-ivf`` when ``has_ivf`` (the gallery has an IVF index) and ``size >=``
    :data:`IVF_THRESHOLD`; else ``faiss`` from :data:`FAISS_THRESHOLD` rows when FAISS is installed; else
    ``torch``. Other choices are returned as they are.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r} (--backend); choose from {', '.join(BACKENDS)}")
    if backend != "auto":
        return backend
    if has_ivf and size >= IVF_THRESHOLD and _faiss_available():
        return "faiss-ivf"
    if size < FAISS_THRESHOLD:
        return "torch"
    if _faiss_available():
        return "faiss"
    warnings.warn(
        f'gallery of {size} images: FAISS would be used but is not installed (pip install "gadms[search]"); '
        "searching with torch",
        stacklevel=2,
    )
    return "torch"


def _normalise(queries: torch.Tensor) -> torch.Tensor:
    if queries.dim() == 1:
        queries = queries.unsqueeze(0)
    if queries.dim() != 2:
        raise ValueError(f"queries must be [Q, D] (or [D]), got shape {tuple(queries.shape)}")
    return F.normalize(queries.float(), dim=-1)


def _check(gallery: torch.Tensor, queries: torch.Tensor, k: int) -> None:
    if gallery.dim() != 2:
        raise ValueError(f"gallery must be [N, D], got shape {tuple(gallery.shape)}")
    if len(gallery) and queries.shape[1] != gallery.shape[1]:
        raise ValueError(f"queries have dimension {queries.shape[1]}, the gallery {gallery.shape[1]}")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")


def _empty(queries: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.empty(len(queries), 0), torch.empty(len(queries), 0, dtype=torch.long)


def _exact_scores(rows: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """Dot products of ``rows`` [C, D] with ``query`` [D] in float64, summed pairwise in a fixed order.

    The products of float16/bfloat16/float32 values are exact in float64, and the fixed summation tree makes
    each row's score independent of the other rows, so both backends rank equal rows equally.
    """
    products = rows.double() * query.double()
    width = 1 << max(products.shape[-1] - 1, 0).bit_length()
    products = F.pad(products, (0, width - products.shape[-1]))
    while products.shape[-1] > 1:
        products = products[..., 0::2] + products[..., 1::2]
    return products[..., 0]


def _rank(gallery: torch.Tensor, query: torch.Tensor, candidates: torch.Tensor, k: int):
    """Exact scores of ``candidates`` (gallery indices), best ``k`` by (score desc, index asc)."""
    candidates = torch.unique(candidates.to(device=gallery.device, dtype=torch.long))  # sorted ascending
    scores = _exact_scores(gallery.index_select(0, candidates), query.to(gallery.device))
    order = torch.sort(scores, descending=True, stable=True).indices[:k]  # stable: ties keep index order
    return scores[order].float().cpu(), candidates[order].cpu()


def _stack(results: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.stack([s for s, _ in results]), torch.stack([i for _, i in results])


def exact_topk(
    gallery: torch.Tensor,
    queries: torch.Tensor,
    k: int,
    *,
    dtype: torch.dtype | None = None,
    chunk_size: int = GALLERY_CHUNK,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-``k`` inner-product search with torch.

    Args:
        gallery: ``[N, D]`` L2-normalised rows (any float dtype; float16 is searched in float16).
        queries: ``[Q, D]`` or ``[D]`` queries (normalised here).
        k: results per query (``min(k, N)`` are returned).
        dtype: the dtype of the product; default: the gallery's own (float32 for a dtype outside
            :data:`TOLERANCE`). The results do not depend on it, only the speed does.
        chunk_size: gallery rows converted to ``dtype`` per product when it is not the gallery's dtype
            (bounds the converted copy); a gallery already in ``dtype`` is multiplied as it is, in one
            product.

    Returns:
        ``(scores, indices)``: ``[Q, min(k, N)]`` float32 and int64 CPU tensors, best first, ties by index.
    """
    queries = _normalise(queries)
    _check(gallery, queries, k)
    n = len(gallery)
    if n == 0:
        return _empty(queries)
    k = min(k, n)
    if dtype is None:
        dtype = gallery.dtype if gallery.dtype in TOLERANCE else torch.float32
    if dtype not in TOLERANCE:
        raise ValueError(f"dtype must be one of {', '.join(map(str, TOLERANCE))}, got {dtype}")
    tolerance = TOLERANCE[dtype]
    block = max(1, SCORE_BUFFER // n)
    results = []
    for start in range(0, len(queries), block):
        q = queries[start : start + block]
        q_t = q.to(device=gallery.device, dtype=dtype).T
        scores = torch.empty(n, len(q), dtype=dtype, device=gallery.device)  # row slices stay contiguous
        step = n if gallery.dtype == dtype else chunk_size  # nothing to convert: one product (fastest)
        for row in range(0, n, step):
            chunk, out = gallery[row : row + step].to(dtype), scores[row : row + step]
            if len(q) == 1:  # a matrix-vector product: faster than a one-column matrix product on CPUs
                torch.mv(chunk, q_t[:, 0], out=out[:, 0])
            else:
                torch.matmul(chunk, q_t, out=out)
        first = min(n, k + CANDIDATE_EXTRA)
        values, positions = scores.topk(first, dim=0)  # [first, block]
        values = values.float()
        for j in range(len(q)):
            threshold = float(values[k - 1, j]) - tolerance
            if first < n and values[first - 1, j] >= threshold:  # near-ties run past the first candidates
                candidates = (scores[:, j].float() >= threshold).nonzero().flatten()
            else:
                candidates = positions[:, j][values[:, j] >= threshold]
            results.append(_rank(gallery, q[j], candidates, k))
    return _stack(results)


def build_faiss_index(gallery: torch.Tensor, *, shards: int | None = None) -> Any:
    """An exhaustive float16 FAISS inner-product index of ``gallery``, sharded over threads.

    Each shard is a ``faiss.IndexScalarQuantizer(D, QT_fp16, METRIC_INNER_PRODUCT)`` holding a contiguous
    slice of the rows (float16 storage: a float16 gallery is stored exactly); the shards are gathered in a
    ``faiss.IndexShards`` that searches them in parallel threads, with successive ids, so the labels it
    returns are global gallery row indices. Build it once and search it many times (``GalleryIndex`` caches
    it); the rows are converted to float32 :data:`FAISS_ADD_CHUNK` at a time while they are added.

    Args:
        gallery: ``[N, D]`` L2-normalised rows (float16 as ``GalleryIndex`` stores them; other dtypes are
            rounded to float16 in the index, which :func:`faiss_topk` allows for).
        shards: the number of shards, searched in that many threads; default:
            ``faiss.omp_get_max_threads()`` at build time (later changes to it do not reshard the index).
            At least 1 and at most ``N`` (for ``N >= 1``).
    """
    faiss = import_faiss()
    n, dim = gallery.shape
    if shards is None:
        shards = faiss.omp_get_max_threads()
    shards = max(1, min(int(shards), n)) if n else 1
    index = faiss.IndexShards(dim, True, True)  # threaded; successive ids: labels offset by the shard's start
    bounds = [n * s // shards for s in range(shards + 1)]
    for lo, hi in zip(bounds, bounds[1:]):
        shard = faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
        for row in range(lo, hi, FAISS_ADD_CHUNK):
            rows = gallery[row : min(row + FAISS_ADD_CHUNK, hi)].detach().to("cpu", torch.float32)
            rows = rows.contiguous().numpy()
            if row == lo:
                shard.train(rows)  # a no-op for float16 storage
            shard.add(rows)
        index.add_shard(shard)  # the Python wrapper keeps a reference to the shard
    return index


def describe_faiss_index(index: Any) -> str:
    """A one-line description of a FAISS index, e.g. one from :func:`build_faiss_index`."""
    faiss = import_faiss()

    def name(inner: Any) -> str:
        inner = faiss.downcast_index(inner)
        sq = isinstance(inner, faiss.IndexScalarQuantizer)
        fp16 = sq and inner.sq.qtype == faiss.ScalarQuantizer.QT_fp16
        return f"{type(inner).__name__}{' (QT_fp16)' if fp16 else ''}"

    if isinstance(index, faiss.IndexShards):
        sizes = [index.at(s).ntotal for s in range(index.count())]
        kinds = ", ".join(sorted({name(index.at(s)) for s in range(index.count())}))
        return (
            f"exhaustive index sharded over threads: IndexShards of {index.count()} x {kinds}, "
            f"{index.ntotal} vectors (shards of {min(sizes)}-{max(sizes)})"
        )
    return f"{name(index)}, {index.ntotal} vectors"


def _faiss_range_candidates(index: Any, query: Any, threshold: float) -> torch.Tensor:
    """Gallery rows whose FAISS score is above ``threshold`` (``IndexShards`` has no range search of
    its own: each shard is searched, its labels offset by the rows of the shards before it)."""
    faiss = import_faiss()
    if not isinstance(index, faiss.IndexShards):
        return torch.from_numpy(index.range_search(query, threshold)[2])
    found, offset = [], 0
    for s in range(index.count()):
        shard = index.at(s)
        labels = torch.from_numpy(shard.range_search(query, threshold)[2])
        found.append(labels + offset if index.successive_ids else labels)
        offset += shard.ntotal
    return torch.cat(found)


def faiss_topk(
    gallery: torch.Tensor, queries: torch.Tensor, k: int, *, index: Any = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-``k`` inner-product search with FAISS; the same results as :func:`exact_topk`.

    The index (see :func:`build_faiss_index`) is exhaustive: it scores every row. Its best
    ``k +`` :data:`CANDIDATE_EXTRA` rows (all rows within the tolerance of the k-th score, when near-ties run
    past them) are rescored exactly and ranked by the shared step, so indices and scores are identical to
    :func:`exact_topk`'s.

    Args:
        gallery: ``[N, D]`` L2-normalised rows (used to rescore the candidates).
        queries: ``[Q, D]`` or ``[D]`` queries (normalised here).
        k: results per query (``min(k, N)`` are returned).
        index: ``build_faiss_index(gallery)``, built here when not given (build it once for many searches).
    """
    queries = _normalise(queries)
    _check(gallery, queries, k)
    n = len(gallery)
    if n == 0:
        return _empty(queries)
    if index is None:
        index = build_faiss_index(gallery)
    if index.ntotal != n:
        raise ValueError(f"the FAISS index holds {index.ntotal} vectors, the gallery {n}")
    k = min(k, n)
    # A float16 gallery is stored exactly by the float16 index: only float32 rounding of the sums remains.
    # Any other dtype is rounded to float16 in the index, so allow for float16 errors.
    tolerance = TOLERANCE[torch.float32 if gallery.dtype == torch.float16 else torch.float16]
    q = queries.cpu().contiguous().numpy()
    first = min(n, k + CANDIDATE_EXTRA)
    distances, labels = index.search(q, first)
    results = []
    for j in range(len(q)):
        threshold = float(distances[j, k - 1]) - tolerance
        if first < n and distances[j, first - 1] >= threshold:  # ties may run past the first candidates
            candidates = _faiss_range_candidates(index, q[j : j + 1], threshold)
        else:
            candidates = torch.from_numpy(labels[j][distances[j] >= threshold])
        results.append(_rank(gallery, queries[j], candidates, k))
    return _stack(results)
