"""Text-to-image search over a large gallery: exact (FAISS, torch) vs approximate (FAISS IVF), with recall.

The gallery looks like real image embeddings rather than independent Gaussians (:func:`clustered_gallery`):
``--rows`` L2-normalised ``--dim``-d rows stored as float16 (as ``gadms index`` stores them), made of
*looks* (groups of similar-looking people, e.g. the same clothes), persons within a look, several images per
person (:data:`IMAGES_PER_PERSON` on average, 1 to 2x that: the frames of a track, several cameras), and near
duplicates (:data:`DUPLICATES` of the images are an almost identical copy of another image of the same
person); every random direction follows a power-law variance spectrum (:data:`SPECTRUM`), as real
embeddings concentrate their variance in few directions. Queries are noisy versions of person centres, as
a caption's embedding lies near its person's images but not on them: a person-level offset with the
gallery's spectrum plus an isotropic "modality" offset (text is not an image). The script prints what that
gives (1,000,000 rows: cosine similarity 0.70 with the best image, 0.58 with the 10th; 71% of the exact
top-10 are the query's own person).

Measured, one process, :data:`THREADS` threads:

- ``exact``: the exact backends on ``--exact-queries`` single queries, interleaved: ``faiss``
  (:func:`retrieval.search.faiss_topk`: exhaustive float16 ``IndexShards``, what ``auto`` searches below
  :data:`retrieval.ann.IVF_THRESHOLD` or without an IVF) and ``torch`` (:func:`retrieval.search.exact_topk`);
  ``same_results``: both returned identical indices and scores;
- ``ivf``: :func:`retrieval.ann.ivf_topk` on the IVF index :func:`retrieval.ann.build_ivf` builds (timed:
  ``ivf_build_s``, training included), ``--queries`` single queries (``ivf_p50_ms``) and the same queries in
  batches of 64 (``ivf_qps_batch64``, queries per second);
- ``ivf_recall_at_10``: the fraction of the exact top-10 (the exact rule: ties by index; computed in
  batches, float32 products then the shared exact rescoring) that the IVF search returns, over ``--queries``
  queries; ``ivf_scores_exact``: every score it returns equals the exact score of that row;
- ``index_gb``: the memory the IVF search needs: the float16 embeddings (rescoring) plus the serialized
  IVF (codes, ids, centroids, id map), i.e. what ``gadms index`` saves;
- ``*_cpu_p50_ms``: the CPU time (all threads) per query: what the wall-clock figures would approach on a
  quiet machine (on a busy one a query waits for the CPU, and the wall-clock p50 mostly measures that).

``--sweep 16,32,64`` also reports recall and p50 for those ``nprobe`` values. ``load_avg`` is the 1-minute
load average before and after the timed part (other processes on the machine slow it down).

Usage: python benchmarks/bench_search.py [--rows 1000000] [--dim 512] [--queries 500] [--k 10]
The last line printed is a JSON object: {"ivf_p50_ms": ..., "ivf_recall_at_10": ..., "ivf_build_s": ...,
"index_gb": ..., "exact_p50_ms": ..., "ivf_qps_batch64": ..., "nprobe": ..., "nlist": ..., ...}.
"""

import argparse
import json
import os
import statistics
import sys
import time

if __package__ in (None, ""):  # run as a script: import the repository's packages
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from retrieval.ann import build_ivf, default_nprobe, ivf_topk  # noqa: E402
from retrieval.search import (  # noqa: E402
    _normalise,
    _rank,
    _stack,
    build_faiss_index,
    describe_faiss_index,
    exact_topk,
    faiss_topk,
    import_faiss,
)

THREADS = 2
#: Average images per person (each person has 1 to 2x - 1 of them: the frames of a track, several
#: cameras).
IMAGES_PER_PERSON = 8
#: Persons per look.
PERSONS_PER_LOOK = 10
#: Norms of the noise added at each level, relative to a unit vector: person around its look, image around
#: its person, near duplicate around its original, query around its person (with the gallery's spectrum:
#: what the caption says about the person), and the query's modality offset (isotropic: text embeddings
#: are not image embeddings).
PERSON_NOISE, IMAGE_NOISE, DUPLICATE_NOISE, QUERY_NOISE, MODALITY_NOISE = 0.7, 0.5, 0.05, 0.4, 0.8
#: The fraction of images that are near duplicates of another image of the same person.
DUPLICATES = 0.1
#: Every random direction (looks, persons, images, queries) is drawn with a power-law spectrum: variance
#: ``(i + 1) ** -SPECTRUM`` along the ``i``-th axis of a fixed random rotation, as real embeddings spread
#: their variance over few directions (the top ~10% of the axes hold about 2/3 of it with 1.0) rather than
#: evenly (``--spectrum 0``: independent Gaussian directions, a harder, less realistic case).
SPECTRUM = 1.0
BATCH = 64


class _Directions:
    """Random unit directions with a power-law spectrum (see :data:`SPECTRUM`)."""

    def __init__(self, dim: int, spectrum: float, generator: torch.Generator) -> None:
        self.scale = torch.arange(1, dim + 1, dtype=torch.float32) ** (-spectrum / 2)
        self.rotation = torch.linalg.qr(torch.randn(dim, dim, generator=generator))[0]
        self.generator = generator

    def __call__(self, n: int) -> torch.Tensor:
        z = torch.randn(n, len(self.scale), generator=self.generator) * self.scale
        return F.normalize(z @ self.rotation.T, dim=-1)


def clustered_gallery(
    rows: int, dim: int, seed: int, chunk: int = 65_536, spectrum: float = SPECTRUM
) -> tuple[torch.Tensor, torch.Tensor, "_Queries"]:
    """A gallery of ``rows`` float16 unit rows with looks, persons, images and near duplicates.

    Returns ``(gallery, person_of_row, persons)``: ``[rows, dim]`` float16, ``[rows]`` int64 (rows of one
    person are contiguous) and the person centres (to draw queries from, :func:`noisy_queries`). Generated a
    chunk of persons at a time (bounded memory: the float16 gallery plus a chunk).
    """
    generator = torch.Generator().manual_seed(seed)
    unit = _Directions(dim, spectrum, generator)
    counts = torch.randint(1, 2 * IMAGES_PER_PERSON, (2 * (rows // IMAGES_PER_PERSON) + 16,), generator=generator)
    ends = counts.cumsum(0)
    persons = int((ends < rows).sum()) + 1
    counts = counts[:persons]
    counts[-1] -= int(ends[persons - 1]) - rows  # the last person gets the rows that are left
    looks = max(1, persons // PERSONS_PER_LOOK)
    look_centres = unit(looks)
    look_of_person = torch.randint(0, looks, (persons,), generator=generator)
    centres = torch.empty(persons, dim)
    gallery = torch.empty(rows, dim, dtype=torch.float16)
    person_of_row = torch.repeat_interleave(torch.arange(persons), counts)
    starts = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)[:-1]])
    step = max(1, chunk // IMAGES_PER_PERSON)
    for first in range(0, persons, step):
        last = min(first + step, persons)
        block = look_centres[look_of_person[first:last]] + PERSON_NOISE * unit(last - first)
        centres[first:last] = F.normalize(block, dim=-1)
        lo, hi = int(starts[first]), int(starts[last - 1] + counts[last - 1])
        owner = person_of_row[lo:hi]
        images = centres[owner] + IMAGE_NOISE * unit(hi - lo)
        # near duplicates: a copy (plus a little noise) of the previous image of the same person
        duplicate = torch.rand(hi - lo, generator=generator) < DUPLICATES
        duplicate[0] = False
        duplicate[1:] &= owner[1:] == owner[:-1]
        where = duplicate.nonzero().flatten()
        images[where] = images[where - 1] + DUPLICATE_NOISE * unit(len(where))
        gallery[lo:hi] = F.normalize(images, dim=-1).half()
    queries = _Queries(centres, unit)
    return gallery, person_of_row, queries


class _Queries:
    """Draws queries near the person centres (see :func:`noisy_queries`)."""

    def __init__(self, centres: torch.Tensor, unit: _Directions) -> None:
        self.centres, self.unit = centres, unit

    def __len__(self) -> int:
        return len(self.centres)


def noisy_queries(centres: _Queries, count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` unit queries near random person centres (noise with the gallery's spectrum), and those
    persons."""
    generator = torch.Generator().manual_seed(seed)
    persons = torch.randint(0, len(centres), (count,), generator=generator)
    centres.unit.generator = generator
    modality = F.normalize(torch.randn(count, centres.centres.shape[1], generator=generator), dim=-1)
    queries = centres.centres[persons] + QUERY_NOISE * centres.unit(count) + MODALITY_NOISE * modality
    return F.normalize(queries, dim=-1), persons


def exact_reference(gallery: torch.Tensor, queries: torch.Tensor, k: int, chunk: int = 65_536):
    """The exact top-``k`` of many queries at once: float32 products of the gallery a chunk at a time (fast
    matrix products), the best ``k + 16`` per chunk kept, then the shared exact rescoring and ranking."""
    best_scores = torch.full((len(queries), 0), -2.0)
    best_rows = torch.empty(len(queries), 0, dtype=torch.long)
    keep = k + 16
    for start in range(0, len(gallery), chunk):
        scores = queries @ gallery[start : start + chunk].float().T  # [Q, C]
        values, rows = scores.topk(min(keep, scores.shape[1]), dim=1)
        best_scores = torch.cat([best_scores, values], 1)
        best_rows = torch.cat([best_rows, rows + start], 1)
        order = best_scores.topk(min(keep, best_scores.shape[1]), dim=1).indices
        best_scores, best_rows = best_scores.gather(1, order), best_rows.gather(1, order)
    return _stack([_rank(gallery, queries[j], best_rows[j], k) for j in range(len(queries))])


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return (time.perf_counter() - start) * 1000, result


def cpu_timed(fn) -> tuple[float, float, object]:
    """(wall ms, CPU ms of the whole process: all threads, object)."""
    cpu = time.process_time()
    ms, result = timed(fn)
    return ms, (time.process_time() - cpu) * 1000, result


def recall(found: torch.Tensor, truth: torch.Tensor) -> float:
    hits = sum(len(set(f.tolist()) & set(t.tolist())) for f, t in zip(found, truth))
    return hits / truth.numel()


def search_ivf(gallery, queries, k, index, nprobe):
    """Single queries, one at a time: (p50 ms, [Q, k] indices, [Q, k] scores, wall ms, CPU ms)."""
    times, cpu_times, indices, scores = [], [], [], []
    for i in range(len(queries)):
        ms, cpu, (s, idx) = cpu_timed(
            lambda: ivf_topk(gallery, queries[i : i + 1], k, index=index, nprobe=nprobe)
        )
        times.append(ms)
        cpu_times.append(cpu)
        indices.append(idx[0])
        scores.append(s[0])
    return statistics.median(times), torch.stack(indices), torch.stack(scores), times, cpu_times


def load_avg() -> float:
    return round(os.getloadavg()[0], 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", "--n", dest="rows", type=int, default=1_000_000,
                        help="gallery size (default: 1,000,000)")  # fmt: skip
    parser.add_argument("--dim", type=int, default=512, help="embedding dimension (default: 512)")
    parser.add_argument(
        "--queries", type=int, default=500,
        help="queries for the IVF latency and recall, one at a time and in batches of 64 (default: 500)",
    )  # fmt: skip
    parser.add_argument(
        "--exact-queries", type=int, default=50,
        help="single queries timed on the exact backends (default: 50)",
    )  # fmt: skip
    parser.add_argument("--k", type=int, default=10, help="results per query (default: 10)")
    parser.add_argument("--nprobe", type=int, default=None, help="IVF cells visited (default: the library's)")
    parser.add_argument("--nlist", type=int, default=None, help="IVF cells (default: the library's)")
    parser.add_argument("--sweep", default="", help="also measure these nprobe values, e.g. 16,32,64")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--spectrum", type=float, default=SPECTRUM,
        help=f"power-law exponent of the gallery's variance spectrum (default: {SPECTRUM}; 0: isotropic)",
    )  # fmt: skip
    args = parser.parse_args()

    faiss = import_faiss()
    torch.set_num_threads(THREADS)
    faiss.omp_set_num_threads(THREADS)  # also the exhaustive index's number of shards
    print(f"load average before: {os.getloadavg()}", flush=True)
    ms, (gallery, person_of_row, centres) = timed(
        lambda: clustered_gallery(args.rows, args.dim, args.seed, spectrum=args.spectrum)
    )
    queries, query_person = noisy_queries(centres, max(args.queries, args.exact_queries), args.seed + 1)
    del centres
    print(f"gallery: {args.rows} x {args.dim} float16 ({ms / 1000:.1f} s to generate)", flush=True)

    truth_ms, (truth_scores, truth) = timed(lambda: exact_reference(gallery, queries, args.k))
    own = (person_of_row[truth] == query_person[:, None]).float().mean()
    stats = {  # what the gallery looks like from the queries
        "top1_cos": round(float(truth_scores[:, 0].mean()), 3),
        "top10_cos": round(float(truth_scores[:, -1].mean()), 3),
        "own_person_in_top10": round(float(own), 3),
    }
    print(f"exact reference of {len(queries)} queries: {truth_ms / 1000:.1f} s; {stats}", flush=True)

    build_s, ivf = timed(lambda: build_ivf(gallery, nlist=args.nlist, seed=args.seed))
    build_s /= 1000
    description = ivf.describe()
    nlist = ivf.nlist
    nprobe = args.nprobe or default_nprobe(nlist)
    ivf_bytes = ivf.nbytes()
    index_gb = (gallery.numel() * gallery.element_size() + ivf_bytes) / 1e9
    print(f"IVF: {description}; built in {build_s:.1f} s; {ivf_bytes / 1e9:.3f} GB serialized", flush=True)

    load_before = load_avg()
    queries_ivf = queries[: args.queries]
    ivf_topk(gallery, queries_ivf[:1], args.k, index=ivf, nprobe=nprobe)  # warm-up
    p50, found, found_scores, times, cpu_times = search_ivf(gallery, queries_ivf, args.k, ivf, nprobe)
    ivf_recall = recall(found, truth[: args.queries])
    normalised = _normalise(queries_ivf)  # as ivf_topk normalises them
    exact_scores = torch.stack([_rank(gallery, normalised[j], found[j], args.k)[0] for j in range(len(found))])
    scores_exact = bool(torch.equal(torch.sort(exact_scores, 1).values, torch.sort(found_scores, 1).values))
    batches = [queries_ivf[s : s + BATCH] for s in range(0, len(queries_ivf) - BATCH + 1, BATCH)]
    batch_ms, _ = timed(lambda: [ivf_topk(gallery, b, args.k, index=ivf, nprobe=nprobe) for b in batches])
    qps = len(batches) * BATCH / (batch_ms / 1000) if batches else None
    p90 = statistics.quantiles(times, n=10)[-1] if len(times) > 1 else times[0]
    print(f"IVF nprobe {nprobe}: p50 {p50:.2f} ms, p90 {p90:.2f} ms, recall@{args.k} {ivf_recall:.4f}, "
          f"batch {BATCH}: {qps} queries/s; returned scores exact: {scores_exact}", flush=True)  # fmt: skip

    sweep = {}
    for value in [int(v) for v in args.sweep.split(",") if v]:
        p, f, _, _, c = search_ivf(gallery, queries_ivf, args.k, ivf, value)
        sweep[value] = {"p50_ms": round(p, 2), "cpu_p50_ms": round(statistics.median(c), 2),
                        "recall_at_10": round(recall(f, truth[: args.queries]), 4)}  # fmt: skip
        print(f"  nprobe {value:5d}: p50 {p:7.2f} ms, recall@{args.k} {sweep[value]['recall_at_10']:.4f}",
              flush=True)  # fmt: skip
    ivf = None  # free it before the exact backends

    # the exact backends (what `auto` searches without an IVF), on fewer queries: they are slow
    faiss_build_ms, flat = timed(lambda: build_faiss_index(gallery))
    times_exact: dict[str, list[float]] = {"faiss": [], "torch": []}
    cpu_exact: dict[str, list[float]] = {"faiss": [], "torch": []}
    same = True
    faiss_topk(gallery, queries[:1], args.k, index=flat)  # warm-up
    for i in range(args.exact_queries):
        query = queries[i : i + 1]
        runs = [
            ("faiss", lambda: faiss_topk(gallery, query, args.k, index=flat)),
            ("torch", lambda: exact_topk(gallery, query, args.k)),
        ]
        if i % 2:  # alternate the order so that neither backend always runs first
            runs.reverse()
        results = {}
        for name, fn in runs:
            ms, cpu, results[name] = cpu_timed(fn)
            times_exact[name].append(ms)
            cpu_exact[name].append(cpu)
        same &= torch.equal(results["faiss"][1], results["torch"][1])
        same &= torch.equal(results["faiss"][0], results["torch"][0])
        same &= torch.equal(results["faiss"][1][0], truth[i])
    exact_p50 = {name: statistics.median(v) for name, v in times_exact.items()}
    load_after = load_avg()
    print(f"exact: faiss p50 {exact_p50['faiss']:.2f} ms, torch p50 {exact_p50['torch']:.2f} ms "
          f"({describe_faiss_index(flat)}); same results: {same}", flush=True)  # fmt: skip
    print(json.dumps({
        "ivf_p50_ms": round(p50, 2),
        "ivf_p90_ms": round(p90, 2),
        "ivf_cpu_p50_ms": round(statistics.median(cpu_times), 2),
        "ivf_recall_at_10": round(ivf_recall, 4),
        "ivf_scores_exact": scores_exact,
        "ivf_build_s": round(build_s, 1),
        "index_gb": round(index_gb, 3),
        "ivf_gb": round(ivf_bytes / 1e9, 3),
        "ivf_qps_batch64": round(qps, 1) if qps else None,
        "exact_p50_ms": round(exact_p50["faiss"], 2),
        "exact_cpu_p50_ms": round(statistics.median(cpu_exact["faiss"]), 2),
        "faiss_p50_ms": round(exact_p50["faiss"], 2),
        "torch_p50_ms": round(exact_p50["torch"], 2),
        "faiss_build_ms": round(faiss_build_ms),
        "same_results": bool(same),
        "nprobe": nprobe,
        "nlist": nlist,
        "rows": args.rows,
        "dim": args.dim,
        "k": args.k,
        "queries": len(queries_ivf),
        "exact_queries": args.exact_queries,
        "threads": THREADS,
        "gallery": stats,
        "sweep": sweep,
        "ivf_index": description,
        "faiss_index": describe_faiss_index(flat),
        "load_avg": [load_before, load_after],
    }))  # fmt: skip


if __name__ == "__main__":
    main()
