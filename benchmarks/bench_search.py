"""Text-to-image search latency over a large gallery: FAISS vs torch, exact top-k, the same results.

A seeded random gallery of ``--n`` L2-normalised ``--dim``-d embeddings stored as float16 (as
``gadms index`` stores them) and ``--queries`` random normalised queries, searched one query at a time
for the top ``--k`` in one process, the two backends interleaved query by query (2 threads each):

- ``faiss``: :func:`retrieval.search.faiss_topk` on the index :func:`retrieval.search.build_faiss_index`
  builds (the one ``GalleryIndex`` builds and caches), built once before timing: exhaustive, float16
  storage (``IndexScalarQuantizer`` ``QT_fp16``, inner product), one contiguous shard per thread in a
  threaded ``IndexShards``; plus the exact rescoring of its candidates;
- ``torch``: :func:`retrieval.search.exact_topk`, a float16 matrix-vector product straight on the float16
  gallery (float32 accumulation; no converted copy), ``topk``, plus the same exact rescoring.

Both return the same indices and scores (the script checks all queries: ``same_results``).
``*_raw_p50_ms`` time the bare candidate step (``index.search`` / float16 product + ``topk``) without the
rescoring; ``faiss_index`` says what the index is. Figures are medians (p50).

Usage: python benchmarks/bench_search.py [--n 1000000] [--dim 512] [--queries 100] [--k 10]
The last line printed is a JSON object:
{"faiss_p50_ms": ..., "torch_p50_ms": ..., "same_results": ..., "faiss_index": "...", ...}.
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

from retrieval.search import (  # noqa: E402
    build_faiss_index,
    describe_faiss_index,
    exact_topk,
    faiss_topk,
    import_faiss,
)

THREADS = 2


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return (time.perf_counter() - start) * 1000, result


def random_gallery(n: int, dim: int, seed: int, chunk: int = 131_072) -> torch.Tensor:
    """``[n, dim]`` float16 L2-normalised Gaussian rows, generated a chunk at a time (bounded memory)."""
    generator = torch.Generator().manual_seed(seed)
    gallery = torch.empty(n, dim, dtype=torch.float16)
    for start in range(0, n, chunk):
        rows = F.normalize(torch.randn(min(chunk, n - start), dim, generator=generator), dim=-1)
        gallery[start : start + len(rows)] = rows.half()
    return gallery


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="gallery size (default: 1,000,000)")
    parser.add_argument("--dim", type=int, default=512, help="embedding dimension (default: 512)")
    parser.add_argument(
        "--queries", type=int, default=100, help="queries, searched one at a time (default: 100)"
    )
    parser.add_argument("--k", type=int, default=10, help="results per query (default: 10)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    faiss = import_faiss()
    torch.set_num_threads(THREADS)
    faiss.omp_set_num_threads(THREADS)  # also the index's number of shards (build_faiss_index's default)
    gallery = random_gallery(args.n, args.dim, args.seed)
    generator = torch.Generator().manual_seed(args.seed + 1)
    queries = F.normalize(torch.randn(args.queries, args.dim, generator=generator))
    build_ms, index = timed(lambda: build_faiss_index(gallery))
    description = describe_faiss_index(index)
    q16 = queries.half()

    times: dict[str, list[float]] = {"faiss": [], "torch": [], "faiss_raw": [], "torch_raw": []}
    same = True
    exact_topk(gallery, queries[:1], args.k), faiss_topk(gallery, queries[:1], args.k, index=index)  # warm-up
    for i in range(args.queries):
        query = queries[i : i + 1]
        runs = [
            ("faiss", lambda: faiss_topk(gallery, query, args.k, index=index)),
            ("torch", lambda: exact_topk(gallery, query, args.k)),
            ("faiss_raw", lambda: index.search(query.numpy(), args.k)),
            ("torch_raw", lambda: torch.topk(gallery @ q16[i], args.k)),
        ]
        if i % 2:  # alternate the order so that neither backend always runs first
            runs.reverse()
        results = {}
        for name, fn in runs:
            ms, results[name] = timed(fn)
            times[name].append(ms)
        same &= torch.equal(results["faiss"][1], results["torch"][1])
        same &= torch.equal(results["faiss"][0], results["torch"][0])

    p50 = {name: statistics.median(values) for name, values in times.items()}
    for name, values in times.items():
        print(f"{name:>9}: p50 {p50[name]:8.2f} ms   p90 {statistics.quantiles(values, n=10)[-1]:8.2f} ms"
              if len(values) > 1 else f"{name:>9}: {values[0]:8.2f} ms")  # fmt: skip
    print(f"FAISS index: {description}")
    print(f"FAISS index build: {build_ms:.0f} ms; same results (indices and scores) for all queries: {same}")
    print(json.dumps({
        "faiss_p50_ms": round(p50["faiss"], 2),
        "torch_p50_ms": round(p50["torch"], 2),
        "faiss_raw_p50_ms": round(p50["faiss_raw"], 2),
        "torch_raw_p50_ms": round(p50["torch_raw"], 2),
        "faiss_build_ms": round(build_ms),
        "same_results": bool(same),
        "n": args.n,
        "dim": args.dim,
        "queries": args.queries,
        "k": args.k,
        "threads": THREADS,
        "torch_gallery": "float16 (float16 product, float32 accumulation)",
        "faiss_index": description,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
