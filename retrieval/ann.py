"""Approximate search for large galleries: a FAISS IVF index whose candidates are rescored exactly.

The exhaustive backends (:mod:`retrieval.search`) read every embedding for every query: at 1,000,000 x 512
float16 that is 1 GB a query. The ``faiss-ivf`` backend reads a small part of the gallery instead:

- **coarse quantizer**: k-means (FAISS's own; spherical, as the metric is the inner product) splits the
  gallery into ``nlist`` cells (:func:`choose_nlist`: about ``sqrt(N)``), trained on a random sample of at
  most :data:`TRAIN_PER_LIST` rows per cell;
- **codes**: each row is stored in its cell's inverted list as a short code, :data:`DEFAULT_CODES`
  (``faiss.index_factory(D, f"IVF{nlist},{codes}", METRIC_INNER_PRODUCT)``);
- **search**: the query visits its ``nprobe`` best cells (:func:`default_nprobe`) and keeps the best
  ``max(`` :data:`RESCORE_FACTOR` ``* k,`` :data:`RESCORE_MIN` ``)`` rows by their approximate scores;
- **exact rescoring**: those candidates are rescored against the stored float16 embeddings with the
  shared exact step of :mod:`retrieval.search` (float64 products, fixed summation order, ties by row
  index), so every returned score is the row's exact cosine similarity, the very value the exact backends
  give it. Only *which* rows come back is approximate: a true top-k row is missed when it lies in a cell the
  query did not visit, or (rarely, with enough candidates) when its code ranks it below the candidates.
  ``benchmarks/bench_search.py`` measures that recall on a clustered gallery.

The codes: the candidates are rescored from the float16 embeddings anyway, so the codes only have to bring
the true top-k into the best :data:`RESCORE_MIN` of the visited rows; recall is then limited by ``nprobe``
(the cells visited), not by the codes. What the codes decide is how fast a cell is scanned and how much
memory the IVF adds. The default, ``PQ{D/4}x4fs`` (4-bit product quantization of 4-dimension sub-vectors
in FAISS's SIMD "fast scan" layout: ``D / 8`` bytes a row, 64 at 512-d), scans several times faster than
8-bit scalar codes (``SQ8``, ``D`` bytes a row) and, with 200 candidates rescored, finds the same rows;
coarser PQ (``PQ{D/8}x4fs``, 2 dimensions a bit) lost 1-3 points of recall@10 that way in our tests, and
float16 codes (``SQfp16``) only double the memory and the scan time.

Ids: the IVF stores *ids*, not row indices; :attr:`IVFIndex.rows` maps each id to its gallery row (``-1``
for an id removed by an update). An update (``gadms index --update``, :func:`remap_ivf`) then only removes
the codes of the images that are gone (``remove_ids``), renumbers the map, and adds the new images' codes
to the trained cells (``add_with_ids``), without retraining or touching the kept codes;
:func:`needs_retrain` says when the gallery has grown so much that the cells should be retrained instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .search import (
    FAISS_ADD_CHUNK,
    TOLERANCE,
    _check,
    _empty,
    _normalise,
    _rank,
    _stack,
    import_faiss,
)

__all__ = [
    "DEFAULT_CODES",
    "IVFIndex",
    "RESCORE_FACTOR",
    "RESCORE_MIN",
    "TRAIN_PER_LIST",
    "build_ivf",
    "choose_nlist",
    "default_nprobe",
    "ivf_topk",
    "needs_retrain",
    "remap_ivf",
]

#: ``nlist`` is about this times ``sqrt(N)`` (see :func:`choose_nlist`).
NLIST_FACTOR = 1.0
#: At least this many training rows per cell (FAISS warns below 39) ...
MIN_TRAIN_PER_LIST = 39
#: ... and at most this many: k-means is trained on ``min(N, TRAIN_PER_LIST * nlist)`` random rows.
TRAIN_PER_LIST = 64
#: The codes: ``{D/4}`` is replaced by a quarter of the dimension (4-bit PQ fast scan; see the module notes).
DEFAULT_CODES = "PQ{D/4}x4fs"
#: Cells visited per query when ``nprobe`` is not given, as a fraction of ``nlist`` (see
#: :func:`default_nprobe`).
DEFAULT_NPROBE = 0.3
#: The least default ``nprobe``.
MIN_NPROBE = 16
#: Candidates rescored exactly: ``max(RESCORE_FACTOR * k, RESCORE_MIN)`` (at most ``N``).
RESCORE_FACTOR = 4
#: See :data:`RESCORE_FACTOR`.
RESCORE_MIN = 200
#: Retrain (rather than extend) an IVF when the gallery's :func:`choose_nlist` reaches this many times the
#: index's ``nlist`` (with ``nlist ~ sqrt(N)``: a gallery about 4 times the size it was trained at).
RETRAIN_GROWTH = 2.0


def choose_nlist(n: int) -> int:
    """The number of IVF cells for a gallery of ``n`` rows: ``round(NLIST_FACTOR * sqrt(n))``, at most
    ``n // MIN_TRAIN_PER_LIST`` (enough training rows per cell), at least 1. 1,000,000 rows: 1,000 cells of
    about 1,000 rows each."""
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    return max(1, min(round(NLIST_FACTOR * math.sqrt(n)), n // MIN_TRAIN_PER_LIST))


def default_nprobe(nlist: int) -> int:
    """The ``nprobe`` used when none is given: ``ceil(nlist * DEFAULT_NPROBE)``, at least
    :data:`MIN_NPROBE`, at most ``nlist`` (1,000 cells: 300, which found 99% of the exact top-10 on the
    clustered 1,000,000 x 512 benchmark; 4-bit fast-scan codes make 30% of the cells cheap to scan)."""
    return min(nlist, max(MIN_NPROBE, math.ceil(nlist * DEFAULT_NPROBE)))


#: The default PQ codes need this many training rows (16 centroids per sub-quantizer, 39+ rows each);
#: smaller galleries get ``SQ8`` codes.
MIN_PQ_TRAIN = 1024


def _codes(codes: str, dim: int, train_rows: int) -> str:
    if "{D/4}" in codes:
        if dim % 4 or train_rows < MIN_PQ_TRAIN:
            return "SQ8"  # PQ needs equal sub-vectors and enough rows to train 16 centroids each
        codes = codes.replace("{D/4}", str(dim // 4))
    return codes


def _float32(rows: torch.Tensor) -> np.ndarray:
    return rows.detach().to("cpu", torch.float32).contiguous().numpy()


@dataclass
class IVFIndex:
    """A FAISS IVF index of a gallery and the map from its ids to gallery rows.

    Attributes:
        index: the FAISS index (an ``IndexIVF``: ``faiss.extract_index_ivf`` finds it).
        rows: ``[next id]`` int64: the gallery row of each id the index has used, ``-1`` for a removed one.
    """

    index: Any
    rows: torch.Tensor

    def __post_init__(self) -> None:
        faiss = import_faiss()
        if faiss.extract_index_ivf(self.index) is None:
            raise TypeError(f"not a FAISS IVF index: {type(self.index).__name__}")
        self.rows = self.rows.to(torch.int64)
        if int((self.rows >= 0).sum()) != self.index.ntotal:
            raise ValueError(
                f"the IVF index holds {self.index.ntotal} vectors but maps {int((self.rows >= 0).sum())} ids "
                "to rows"
            )

    @property
    def nlist(self) -> int:
        """The number of cells."""
        return import_faiss().extract_index_ivf(self.index).nlist

    @property
    def ntotal(self) -> int:
        """The number of rows it holds."""
        return self.index.ntotal

    @property
    def d(self) -> int:
        """The dimension."""
        return self.index.d

    def fits(self, gallery: torch.Tensor) -> bool:
        """Whether it indexes a gallery of ``gallery``'s shape (every row once)."""
        n = len(gallery)
        mapped = self.rows[self.rows >= 0]
        return (
            self.ntotal == n
            and self.d == gallery.shape[1]
            and len(mapped) == n
            and (n == 0 or (int(mapped.min()) == 0 and int(mapped.max()) == n - 1))
            and len(torch.unique(mapped)) == n
        )

    def describe(self) -> str:
        """A one-line description, e.g. for a benchmark."""
        faiss = import_faiss()
        ivf = faiss.extract_index_ivf(self.index)
        sizes = np.array([ivf.invlists.list_size(i) for i in range(ivf.nlist)])
        return (
            f"{type(faiss.downcast_index(self.index)).__name__}: nlist {ivf.nlist}, {ivf.ntotal} vectors, "
            f"{ivf.code_size} bytes/vector, lists of {sizes.min()}-{sizes.max()} (median {int(np.median(sizes))})"
        )

    def to_tensors(self) -> dict[str, torch.Tensor]:
        """``{"ivf": uint8 (faiss.serialize_index), "ivf_rows": int64}``: what a safetensors file stores."""
        faiss = import_faiss()
        return {"ivf": torch.from_numpy(faiss.serialize_index(self.index)), "ivf_rows": self.rows.contiguous()}

    @classmethod
    def from_tensors(cls, data: torch.Tensor, rows: torch.Tensor) -> IVFIndex:
        """The index :meth:`to_tensors` turned into ``data`` and ``rows``."""
        faiss = import_faiss()
        index = faiss.deserialize_index(np.ascontiguousarray(data.numpy(), dtype=np.uint8))
        return cls(index=index, rows=rows)

    def nbytes(self) -> int:
        """The size of its serialized form (codes, ids, centroids, the id map), in bytes."""
        return sum(t.numel() * t.element_size() for t in self.to_tensors().values())


def build_ivf(
    gallery: torch.Tensor,
    *,
    nlist: int | None = None,
    train_rows: int | None = None,
    seed: int = 0,
    codes: str = DEFAULT_CODES,
) -> IVFIndex:
    """A FAISS IVF inner-product index of ``gallery`` (row ``i`` gets id ``i``), trained and filled.

    Args:
        gallery: ``[N, D]`` L2-normalised rows (``N >= 1``; float16 as ``GalleryIndex`` stores them).
        nlist: IVF cells (default: :func:`choose_nlist`); ``1 <= nlist <= N``.
        train_rows: rows k-means (and the codes) are trained on, sampled at random (default:
            ``min(N, TRAIN_PER_LIST * nlist)``); between ``nlist`` and ``N``.
        seed: seeds the training sample and k-means.
        codes: the FAISS factory name of the codes (default :data:`DEFAULT_CODES`, ``{D/4}`` standing for
            ``D // 4``; ``SQ8`` when ``D`` is not a multiple of 4 or for fewer than :data:`MIN_PQ_TRAIN`
            training rows); e.g. ``SQ8``, ``SQfp16``, ``PQ64``.

    The rows are converted to float32 :data:`~retrieval.search.FAISS_ADD_CHUNK` at a time while they are
    added (bounded memory). Search it with :func:`ivf_topk`; ``GalleryIndex.save`` stores it.
    """
    faiss = import_faiss()
    if gallery.dim() != 2 or len(gallery) == 0:
        raise ValueError(f"an IVF index needs a non-empty [N, D] gallery, got shape {tuple(gallery.shape)}")
    n, dim = gallery.shape
    nlist = choose_nlist(n) if nlist is None else int(nlist)
    if not 1 <= nlist <= n:
        raise ValueError(f"nlist must be between 1 and the gallery's {n} rows, got {nlist}")
    train_rows = min(n, TRAIN_PER_LIST * nlist) if train_rows is None else int(train_rows)
    if not nlist <= train_rows <= n:
        raise ValueError(f"train_rows must be between nlist={nlist} and the gallery's {n} rows, got {train_rows}")
    index = faiss.index_factory(dim, f"IVF{nlist},{_codes(codes, dim, train_rows)}", faiss.METRIC_INNER_PRODUCT)
    ivf = faiss.extract_index_ivf(index)
    ivf.cp.seed = seed
    ivf.cp.max_points_per_centroid = max(ivf.cp.max_points_per_centroid, -(-train_rows // nlist))
    sample = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:train_rows].sort().values
    index.train(_float32(gallery.index_select(0, sample)))
    del sample
    for start in range(0, n, FAISS_ADD_CHUNK):
        rows = _float32(gallery[start : start + FAISS_ADD_CHUNK])
        index.add_with_ids(rows, np.arange(start, start + len(rows), dtype=np.int64))
    return IVFIndex(index=index, rows=torch.arange(n))


def needs_retrain(ivf: IVFIndex, n: int) -> bool:
    """Whether an IVF index should be retrained for a gallery of ``n`` rows rather than updated: its cells
    are too few for ``n`` (:func:`choose_nlist` ``(n) >= RETRAIN_GROWTH * nlist``), or more than the rows."""
    return choose_nlist(n) >= RETRAIN_GROWTH * ivf.nlist or ivf.nlist > n


def remap_ivf(ivf: IVFIndex, new_row: torch.Tensor, gallery: torch.Tensor, added: torch.Tensor) -> IVFIndex:
    """Update an IVF index in place for a gallery whose rows were dropped, reordered or added.

    Args:
        ivf: an IVF index of the old gallery.
        new_row: ``[N_old]`` int: the new row index of each old row, ``-1`` for a dropped row.
        gallery: the new ``[N_new, D]`` gallery.
        added: the new row indices of the rows to add (those not carried over from the old gallery).

    The dropped rows' codes are removed (``remove_ids``), the kept ones stay as they are (only the id map
    changes), the added rows are encoded into their nearest cells with the trained quantizer and codes
    (``add_with_ids``, new ids; no retraining: see :func:`needs_retrain`). Returns ``ivf``, which then
    indexes exactly the rows of ``gallery``.

    Raises:
        ValueError: ``new_row`` does not have one entry per old row, or ``new_row`` and ``added`` do not
            cover every new row once.
    """
    faiss = import_faiss()
    new_row = new_row.to(torch.int64).cpu()
    old_rows = int((ivf.rows >= 0).sum())
    if len(new_row) != old_rows:
        raise ValueError(f"new_row has {len(new_row)} entries, the IVF index holds {old_rows} rows")
    mapped = ivf.rows >= 0
    rows = torch.full_like(ivf.rows, -1)
    rows[mapped] = new_row[ivf.rows[mapped]]
    gone = (mapped & (rows < 0)).nonzero().flatten()
    added = added.to(torch.int64).cpu()
    ids = torch.arange(len(rows), len(rows) + len(added))
    for start in range(0, len(added), FAISS_ADD_CHUNK):
        chunk = slice(start, start + FAISS_ADD_CHUNK)
        ivf.index.add_with_ids(_float32(gallery.index_select(0, added[chunk])), ids[chunk].numpy())
    if len(gone):  # after the additions: a fast-scan list extended after a removal mislaid codes (FAISS 1.15)
        removed = ivf.index.remove_ids(faiss.IDSelectorBatch(gone.numpy()))
        if removed != len(gone):
            raise ValueError(f"removed {removed} of {len(gone)} codes from the IVF index; rebuild it")
    ivf.rows = torch.cat([rows, added])
    if not ivf.fits(gallery):
        raise ValueError(
            f"the updated IVF index holds {ivf.ntotal} vectors for a gallery of {len(gallery)} (new_row and "
            "added must cover every new row once); rebuild it"
        )
    return ivf


def _check_nprobe(nprobe: Any, nlist: int) -> int:
    if isinstance(nprobe, bool) or not isinstance(nprobe, (int, np.integer)):
        raise TypeError(f"nprobe (--nprobe) must be an integer, got {nprobe!r}")
    if not 1 <= nprobe <= nlist:
        raise ValueError(f"nprobe (--nprobe) must be between 1 and the index's nlist={nlist}, got {nprobe}")
    return int(nprobe)


def _rescore(gallery: torch.Tensor, query: torch.Tensor, candidates: torch.Tensor, k: int):
    """The best ``k`` of ``candidates`` by exact score: float32 scores first pick the rows within their
    rounding error of the k-th (float16 rows are exact in float32), then the shared exact ranking.

    The float32 step runs in NumPy on CPU galleries: a few hundred rows are too few for torch's threads,
    which only wait for each other on a busy machine (milliseconds a query).
    """
    if len(candidates) > k:
        if gallery.device.type == "cpu":
            rows = gallery.detach().numpy()[candidates.numpy()].astype(np.float32)
            approx = torch.from_numpy(rows @ query.detach().cpu().numpy())
        else:
            approx = (gallery.index_select(0, candidates.to(gallery.device)).float() @ query.to(gallery.device)).cpu()
        threshold = float(np.partition(approx.numpy(), len(approx) - k)[len(approx) - k])
        candidates = candidates[approx >= threshold - TOLERANCE[torch.float32]]
    return _rank(gallery, query, candidates, k)


def ivf_topk(
    gallery: torch.Tensor,
    queries: torch.Tensor,
    k: int,
    *,
    index: IVFIndex,
    nprobe: int | None = None,
    rescore: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Approximate top-``k`` inner-product search: IVF candidates, rescored exactly.

    Args:
        gallery: ``[N, D]`` L2-normalised rows, the ones ``index`` indexes.
        queries: ``[Q, D]`` or ``[D]`` queries (normalised here).
        k: results per query (``min(k, N)`` are returned).
        index: the IVF index (:func:`build_ivf`) of ``gallery``.
        nprobe: cells visited per query, ``1 <= nprobe <= nlist`` (default: :func:`default_nprobe`); more is
            slower and misses fewer of the true top-k.
        rescore: candidates rescored exactly per query (default: ``max(RESCORE_FACTOR * k, RESCORE_MIN)``);
            at least ``k``.

    Returns:
        ``(scores, indices)`` like :func:`~retrieval.search.exact_topk`: each score is the row's exact score
        (the value the exact backends give that row), best first, ties by index. A query whose visited cells
        hold fewer than ``k`` rows is searched again over all cells.
    """
    queries = _normalise(queries)
    _check(gallery, queries, k)
    n = len(gallery)
    if n == 0:
        return _empty(queries)
    if index.ntotal != n or index.d != gallery.shape[1]:
        raise ValueError(
            f"the IVF index holds {index.ntotal} vectors of dimension {index.d}, the gallery {n} of "
            f"{gallery.shape[1]}; rebuild it"
        )
    nprobe = default_nprobe(index.nlist) if nprobe is None else _check_nprobe(nprobe, index.nlist)
    k = min(k, n)
    first = max(RESCORE_FACTOR * k, RESCORE_MIN) if rescore is None else int(rescore)
    if first < k:
        raise ValueError(f"rescore must be at least k={k}, got {first}")
    first = min(first, n)
    faiss = import_faiss()
    q = queries.cpu().contiguous().numpy()
    _, labels = index.index.search(q, first, params=faiss.SearchParametersIVF(nprobe=nprobe))
    results = []
    for j in range(len(q)):
        ids = labels[j][labels[j] >= 0]
        if len(ids) < k:  # the visited cells are nearly empty: visit them all
            everywhere = faiss.SearchParametersIVF(nprobe=index.nlist)
            ids = index.index.search(q[j : j + 1], first, params=everywhere)[1][0]
            ids = ids[ids >= 0]
        candidates = index.rows[torch.from_numpy(ids)]
        results.append(_rescore(gallery, queries[j], candidates, k))
    return _stack(results)
