"""Benchmark: chunked retrieval metrics vs. the naive full-argsort implementation of the reference code.

What is measured
----------------
1. ICFG-PEDES size: 19,848 queries x 19,848 gallery images, 4,102 person ids with several images each
   (every id has at least 2 images, the rest spread at random; queries carry the gallery's id list,
   since ICFG-PEDES has one caption per image), 512-d float32 embeddings drawn at random around a
   random centre per id (so that the metrics land in a realistic range, not near zero).
   - ``ours``: :func:`evaluation.retrieval_metrics` (chunked counting, no sort, no Q x G matrix).
   - ``naive``: written below the way the reference code does it: full similarity matrix, argsort of
     every row (stable, to apply the same tie rule), gallery ids gathered into a matches matrix,
     cumulative sums over full rows, per-row loop for mINP. Intermediates are freed as soon as they are
     no longer needed, which only lowers the naive peak (so the memory ratio is conservative).
   Both run in this one process on the same inputs, end to end (normalisation and matrix product
   included), after a small warm-up of each. ``speedup`` = naive time / ours time.
   ``max_abs_diff`` = largest absolute difference between the two metric dicts (percent units).
2. Huge gallery: 1,000 queries x 1,000,000 gallery items (512-d float32, 250,000 ids x 4 images):
   only ``ours`` (the naive one would need a 4 GB similarity matrix plus 8 GB of sort indices).
   It runs first, in the fresh process.

How memory is measured
----------------------
Peak resident set size (RSS) of this process, from the kernel: before each measured call the
high-water mark is reset (``echo 5 > /proc/self/clear_refs``, Linux >= 4.0), and ``VmHWM`` is read
from ``/proc/self/status`` afterwards. This counts everything the process touches (torch's CPU
allocations, BLAS work space, Python objects), not an estimate. For the ICFG comparison the figure
is the peak *increase* over the RSS just before the call (inputs already resident, the same for both);
``memory_ratio`` = ours / naive. For the 1M gallery the figure is the *total* peak RSS of the process
(interpreter and torch included) during data generation and the call, the 2 GB gallery itself
included. Where ``clear_refs`` cannot be written, a thread samples ``VmRSS`` every millisecond instead
(that may miss very short spikes; the output then says ``"memory_method": "sampled"``).

The LAST line printed is a JSON object:
``{"speedup": ..., "memory_ratio": ..., "max_abs_diff": ..., "million_gallery_peak_gb": ...}``.
Targets: identical metrics (max_abs_diff <= 1e-6), speedup >= 3, memory_ratio <= 0.25,
million_gallery_peak_gb < 4. About 2-3 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import threading
import time
from typing import Callable

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

from evaluation import retrieval_metrics  # noqa: E402

# ----------------------------------------------------------------------------------------------
# memory accounting


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not found in /proc/self/status")


def _can_reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class PeakRSS:
    """Context manager: peak RSS (bytes) reached inside the block, and RSS at its start."""

    def __init__(self) -> None:
        self.method = "kernel" if _can_reset_hwm() else "sampled"

    def __enter__(self) -> "PeakRSS":
        gc.collect()
        self.start = _status_kib("VmRSS") * 1024
        if self.method == "kernel":
            _can_reset_hwm()
        else:
            self._peak = self.start
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, _status_kib("VmRSS") * 1024)
            time.sleep(0.001)

    def __exit__(self, *exc: object) -> None:
        if self.method == "kernel":
            self.peak = _status_kib("VmHWM") * 1024
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self._peak, _status_kib("VmRSS") * 1024)
        self.increase = self.peak - self.start


# ----------------------------------------------------------------------------------------------
# the naive reference implementation


def naive_metrics(
    query_embeds: torch.Tensor,
    gallery_embeds: torch.Tensor,
    query_ids: torch.Tensor,
    gallery_ids: torch.Tensor,
    ks: tuple[int, ...] = (1, 5, 10),
) -> dict[str, float]:
    """Full similarity matrix, full argsort, matches matrix, cumulative sums (the reference code's way).

    Per-element precision is float32 as in the reference; only the final per-query sums and means are
    accumulated in float64, so that float32 summation error does not hide or fake ranking differences.
    """
    similarity = F.normalize(query_embeds.float(), dim=1) @ F.normalize(gallery_embeds.float(), dim=1).T
    indices = torch.argsort(similarity, dim=1, descending=True, stable=True)
    del similarity
    matches = gallery_ids[indices] == query_ids[:, None]
    del indices
    out = {f"R{k}": float(matches[:, :k].any(1).double().mean() * 100) for k in ks}
    num_relevant = matches.sum(1)
    hits = matches.cumsum(1)
    inp = []
    for i, row in enumerate(matches):  # as the reference: last positive per row
        last = int(row.nonzero()[-1])
        inp.append(float(hits[i, last]) / (last + 1.0))
    precision = hits / torch.arange(1, matches.shape[1] + 1, dtype=torch.float32)
    del hits
    average_precision = (precision * matches).sum(1, dtype=torch.float64) / num_relevant
    out["mAP"] = float(average_precision.mean() * 100)
    out["mINP"] = float(torch.tensor(inp, dtype=torch.float64).mean() * 100)
    return out


# ----------------------------------------------------------------------------------------------
# data


def identity_structure(num_items: int, num_ids: int, generator: torch.Generator) -> torch.Tensor:
    """Person ids for ``num_items`` images: every id gets >= 2 images, the rest spread at random."""
    base = torch.arange(num_ids).repeat_interleave(2)
    extra = torch.randint(0, num_ids, (num_items - len(base),), generator=generator)
    ids = torch.cat([base, extra])
    return ids[torch.randperm(num_items, generator=generator)]


def clustered_embeddings(
    ids: torch.Tensor, centres: torch.Tensor, noise: float, generator: torch.Generator
) -> torch.Tensor:
    out = torch.randn(len(ids), centres.shape[1], generator=generator) * noise
    out += centres[ids]
    return out


def timed(fn: Callable[[], dict[str, float]]) -> tuple[dict[str, float], float, PeakRSS]:
    with PeakRSS() as mem:
        start = time.perf_counter()
        result = fn()
        elapsed = time.perf_counter() - start
    return result, elapsed, mem


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queries", type=int, default=19848)
    parser.add_argument("--gallery", type=int, default=19848)
    parser.add_argument("--ids", type=int, default=4102)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--noise", type=float, default=3.0, help="per-image noise around the id centre")
    parser.add_argument("--million-queries", type=int, default=1000)
    parser.add_argument("--million-gallery", type=int, default=1_000_000)
    parser.add_argument("--skip-million", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    gen = torch.Generator().manual_seed(args.seed)

    million = None if args.skip_million else million_gallery(args, gen)
    gc.collect()
    icfg = icfg_comparison(args, gen)

    details = {
        "queries": args.queries,
        "gallery": args.gallery,
        "ids": args.ids,
        "dim": args.dim,
        **{k: v for k, v in icfg.items() if k not in ("ours", "naive", "ours_bytes", "naive_bytes")},
        "million_s": None if million is None else round(million["seconds"], 3),
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(details))
    summary = {
        "speedup": round(icfg["naive_s"] / icfg["ours_s"], 3),
        "memory_ratio": round(icfg["ours_bytes"] / icfg["naive_bytes"], 5),
        "max_abs_diff": icfg["max_abs_diff"],
        "million_gallery_peak_gb": None if million is None else round(million["peak_gb"], 3),
    }
    print(json.dumps(summary))


def icfg_comparison(args: argparse.Namespace, gen: torch.Generator) -> dict:
    """Ours vs naive at ICFG-PEDES size, on the same inputs, in this process."""
    gib = 1024**3
    gallery_ids = identity_structure(args.gallery, args.ids, gen)
    query_ids = gallery_ids[torch.randperm(args.gallery, generator=gen)][: args.queries]
    centres = torch.randn(args.ids, args.dim, generator=gen) / args.dim**0.5
    noise = args.noise / args.dim**0.5
    gallery = clustered_embeddings(gallery_ids, centres, noise, gen)
    queries = clustered_embeddings(query_ids, centres, noise, gen)

    # warm-up (BLAS kernels, allocator pools): 1,000 gallery items querying 2,000 (all have a positive)
    retrieval_metrics(gallery[:1000], gallery[:2000], gallery_ids[:1000], gallery_ids[:2000])
    naive_metrics(gallery[:1000], gallery[:2000], gallery_ids[:1000], gallery_ids[:2000])

    ours, ours_s, ours_mem = timed(lambda: retrieval_metrics(queries, gallery, query_ids, gallery_ids))
    print(f"ours : {ours_s:7.2f} s, peak RSS increase {ours_mem.increase / gib:6.3f} GiB  {ours}", flush=True)
    naive, naive_s, naive_mem = timed(lambda: naive_metrics(queries, gallery, query_ids, gallery_ids))
    print(
        f"naive: {naive_s:7.2f} s, peak RSS increase {naive_mem.increase / gib:6.3f} GiB  {naive}", flush=True
    )
    return {
        "ours": ours,
        "naive": naive,
        "max_abs_diff": max(abs(ours[k] - naive[k]) for k in naive),
        "ours_s": round(ours_s, 3),
        "naive_s": round(naive_s, 3),
        "ours_peak_increase_gib": round(ours_mem.increase / gib, 4),
        "naive_peak_increase_gib": round(naive_mem.increase / gib, 4),
        "memory_method": ours_mem.method,
        "ours_bytes": ours_mem.increase,
        "naive_bytes": naive_mem.increase,
    }


def million_gallery(args: argparse.Namespace, gen: torch.Generator) -> dict:
    """1,000 queries x 1,000,000 gallery items: total process peak RSS, data generation included."""
    with PeakRSS() as mem:
        start = time.perf_counter()
        ids = torch.arange(args.million_gallery) // 4
        gallery = torch.randn(args.million_gallery, args.dim, generator=gen)
        query_ids = ids[torch.randint(0, args.million_gallery, (args.million_queries,), generator=gen)]
        queries = gallery[query_ids * 4] + torch.randn(args.million_queries, args.dim, generator=gen)
        result = retrieval_metrics(queries, gallery, query_ids, ids)
        seconds = time.perf_counter() - start
    peak_gb = mem.peak / 1e9
    print(
        f"1M gallery: {seconds:7.2f} s (data generation included), process peak RSS {peak_gb:.3f} GB "
        f"(RSS before: {mem.start / 1e9:.3f} GB)  {result}",
        flush=True,
    )
    return {"seconds": seconds, "peak_gb": peak_gb, "metrics": result}


if __name__ == "__main__":
    main()
