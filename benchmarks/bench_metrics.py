"""Benchmark: the evaluation package's retrieval metrics vs. the field's ``rank()`` as people run it.

What is measured
----------------
1. ICFG-PEDES test layout: 19,848 gallery images of 1,000 persons (every person has at least 2
   images, the remaining 17,848 are spread over the persons at random, about 20 each), 19,848 text
   queries, one per image (ICFG-PEDES has one caption per image), 512-d float32 embeddings drawn at
   random around a random centre per person (captions noisier than images, each with its own noise
   scale); the default noise puts the metrics where published models are on ICFG-PEDES (here about
   R1 66, mAP 38, mINP 6; IRRA reports 63.5 / 38.1 / 7.9), so that the last positive of a query ranks
   about as deep as it does on the real benchmark (mean rank ~3,000 of 19,848). The embeddings are continuous, but float32 cosines still
   tie now and then (about one positive in a few thousand); see ``max_abs_diff``.
   - ``baseline``: the field's ``rank()`` (IRRA's ``utils/metrics.py``, written here from its
     formulas): full ``Q x G`` float32 similarity matrix, UNSTABLE ``torch.argsort`` of every row,
     gallery ids gathered in that order, matches matrix, CMC from the first 10 columns, AP from the
     cumulative sum of matches over positions, INP from the last match. Written vectorised where the
     reference loops in Python (its per-column division for AP, its per-row loop for INP), which only
     makes the baseline faster; intermediates are freed as soon as they are dead, which only lowers
     its memory; final means are taken in float64 (per element it stays float32, as the reference).
   - ``ours``: :func:`evaluation.retrieval_metrics_from_similarity` on the same similarity matrix.
   ``speedup`` = baseline time / ours time, both from the same similarity matrix (the product of the
   embeddings is the same work for both and is timed apart: ``similarity_s``). End to end from the
   embeddings: ``baseline_end_to_end_s`` = similarity_s + baseline_s, and ``ours_end_to_end_s`` =
   :func:`evaluation.retrieval_metrics` on the embeddings (chunked product included);
   ``speedup_end_to_end`` is their ratio (bounded by the matrix product both must do).
   ``max_abs_diff`` = largest absolute difference between the two metric dicts (percent units).
2. Million gallery: ``ours`` (:func:`evaluation.retrieval_metrics`) for 1,000 queries against
   1,000,000 gallery embeddings (512-d, stored as float16 as a million-image index would be, 2.05 GB
   in float32 / 1.02 GB in float16; 250,000 ids x 4 images). ``million_gallery_peak_gb`` is the
   TOTAL peak resident memory of that process (interpreter, torch, the gallery itself and the data
   generation included; ``resource.getrusage(RUSAGE_SELF).ru_maxrss``), in GB (10^9 bytes).
   ``million_compute_gb`` is the peak increase during the call over the resident memory just before it.

Each figure is measured in its own process (this script re-invokes itself with ``--figure
baseline|ours|million`` and reads one JSON line back), so that the memory, allocator pools and caches
of one figure do not affect another. The same seed gives the same inputs in every process.

Memory: ``*_peak_gb`` is ``ru_maxrss`` (the process's high-water mark since it started). The peak
increase of a call is measured by resetting the kernel's high-water mark before the call (``echo 5 >
/proc/self/clear_refs``) and reading ``VmHWM`` after; where that cannot be written, a thread samples
``VmRSS`` every millisecond (``"memory_method": "sampled"``). ``memory_ratio`` = ours / baseline peak
increase at ICFG size.

The LAST line printed is a JSON object with ``speedup``, ``million_gallery_peak_gb``, ``baseline_s``,
``ours_s``, ``queries``, ``gallery``, ``persons``, ``load_avg`` (1-minute load average of the machine
just before the measurements, ``os.getloadavg()[0]``; the highest of the three processes'),
``memory_ratio``, ``max_abs_diff`` and the details.
Targets: max_abs_diff <= 1e-6, speedup >= 10, million_gallery_peak_gb < 2.
Run time on 2 shared CPU cores (load average ~6): the baseline ~2 minutes, ours well under one; the
million gallery several minutes (its 64 MiB similarity blocks of 16 queries each re-normalise and
re-multiply the whole gallery: the price of the 2 GB bound; ``--skip-million`` leaves it out).
``--quick``: 4,000 queries and a 200,000-image "million" gallery, about a minute.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

from evaluation import retrieval_metrics, retrieval_metrics_from_similarity  # noqa: E402
from evaluation.metrics import per_query_retrieval_from_similarity  # noqa: E402

GB = 1e9

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


def max_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


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


def timed(fn):
    with PeakRSS() as mem:
        start = time.perf_counter()
        result = fn()
        elapsed = time.perf_counter() - start
    return result, elapsed, mem


# ----------------------------------------------------------------------------------------------
# the baseline: the field's rank(), from its formulas


def field_rank(
    similarity: torch.Tensor, q_pids: torch.Tensor, g_pids: torch.Tensor, max_rank: int = 10
) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """CMC (R1/R5/R10), mAP and mINP the way the field's ``rank()`` computes them (percent), and the
    per-query CMC rows, AP and INP they average."""
    indices = torch.argsort(similarity, dim=1, descending=True)  # unstable, as the reference
    pred_labels = g_pids[indices]
    del indices
    matches = pred_labels.eq(q_pids.view(-1, 1))
    del pred_labels
    all_cmc = matches[:, :max_rank].cumsum(1).clamp(max=1)
    cmc = all_cmc.double().mean(0) * 100
    num_rel = matches.sum(1)
    hits = matches.cumsum(1)
    # INP: hits at the last match over its 1-based position (the reference loops over rows for it)
    last = matches.shape[1] - 1 - matches.flip(1).to(torch.uint8).argmax(1)
    inp = hits.gather(1, last[:, None]).squeeze(1).double() / (last + 1.0).double()
    # AP: hits over position (float32, as the reference), at the matches, summed per query
    precision = hits / torch.arange(1, matches.shape[1] + 1, dtype=torch.float32)
    del hits
    average_precision = (precision * matches).sum(1, dtype=torch.float64) / num_rel
    metrics = {
        "R1": float(cmc[0]),
        "R5": float(cmc[4]),
        "R10": float(cmc[9]),
        "mAP": float(average_precision.mean() * 100),
        "mINP": float(inp.mean() * 100),
    }
    return metrics, {"cmc": all_cmc.to(torch.uint8), "ap": average_precision, "inp": inp}


def tied_queries(similarity: torch.Tensor, query_ids: torch.Tensor, gallery_ids: torch.Tensor) -> torch.Tensor:
    """Queries one of whose positives has exactly the score of another gallery item (float32 ties).

    Only there can an unstable sort order items differently from the stable one (ties are broken by
    gallery index in ours, arbitrarily in the baseline). Written independently of the package: per row,
    the items scoring at least the lowest positive are sorted and each positive's score is looked up.
    """
    rows = similarity.numpy()
    gallery = gallery_ids.numpy()
    out = np.zeros(len(rows), dtype=bool)
    for r, row in enumerate(rows):
        scores = row[gallery == int(query_ids[r])]
        candidates = np.sort(row[row >= scores.min()])
        equal = np.searchsorted(candidates, scores, "right") - np.searchsorted(candidates, scores, "left")
        out[r] = bool((equal > 1).any())
    return torch.from_numpy(out)


def summarize(first_rank: torch.Tensor, ap: torch.Tensor, inp: torch.Tensor) -> dict[str, float]:
    out = {f"R{k}": float((first_rank <= k).double().mean() * 100) for k in (1, 5, 10)}
    out["mAP"] = float(ap.mean() * 100)
    out["mINP"] = float(inp.mean() * 100)
    return out


# ----------------------------------------------------------------------------------------------
# data


def icfg_data(args: argparse.Namespace):
    """ICFG-PEDES test identity layout; queries are one caption per image (same ids as the gallery)."""
    gen = torch.Generator().manual_seed(args.seed)
    n, persons, dim = args.gallery, args.persons, args.dim
    counts = 2 + torch.bincount(torch.randint(0, persons, (n - 2 * persons,), generator=gen), minlength=persons)
    gallery_ids = torch.arange(persons).repeat_interleave(counts)[torch.randperm(n, generator=gen)]
    centres = torch.randn(persons, dim, generator=gen) / dim**0.5

    def around(ids: torch.Tensor, noise: float) -> torch.Tensor:
        scale = noise * torch.exp(args.noise_spread * torch.randn(len(ids), 1, generator=gen))
        return centres[ids] + torch.randn(len(ids), dim, generator=gen) * scale / dim**0.5

    gallery = around(gallery_ids, args.noise)
    query_ids = gallery_ids.clone()  # one caption per image
    queries = around(query_ids, args.query_noise)
    return queries[: args.queries], gallery, query_ids[: args.queries], gallery_ids


def similarity_matrix(queries: torch.Tensor, gallery: torch.Tensor) -> torch.Tensor:
    return F.normalize(queries, dim=1) @ F.normalize(gallery, dim=1).T


# ----------------------------------------------------------------------------------------------
# the figures, each run in a fresh process


def figure_baseline(args: argparse.Namespace) -> dict:
    load = os.getloadavg()[0]
    queries, gallery, query_ids, gallery_ids = icfg_data(args)
    field_rank(similarity_matrix(queries[:500], gallery[:2000]), query_ids[:500], gallery_ids[:2000])  # warm-up
    start = time.perf_counter()
    similarity = similarity_matrix(queries, gallery)
    similarity_s = time.perf_counter() - start
    del queries, gallery
    (metrics, per_query), seconds, mem = timed(lambda: field_rank(similarity, query_ids, gallery_ids))
    # first positive rank as far as the CMC tells it: 1..10, or 11 for "beyond 10"
    first = torch.where(per_query["cmc"].bool().any(1), per_query["cmc"].argmax(1) + 1, 11)
    torch.save({"first": first, "ap": per_query["ap"], "inp": per_query["inp"]},
               os.path.join(args.out_dir, "baseline.pt"))
    return {
        "metrics": metrics,
        "seconds": seconds,
        "similarity_s": similarity_s,
        "peak_increase": mem.increase,
        "memory_method": mem.method,
        "peak_gb": max_rss_bytes() / GB,
        "load_avg": load,
    }


def figure_ours(args: argparse.Namespace) -> dict:
    load = os.getloadavg()[0]
    queries, gallery, query_ids, gallery_ids = icfg_data(args)
    retrieval_metrics(queries[:500], gallery[:2000], query_ids[:500], gallery_ids[:2000])  # warm-up
    similarity = similarity_matrix(queries, gallery)
    metrics, seconds, mem = timed(lambda: retrieval_metrics_from_similarity(similarity, query_ids, gallery_ids))
    per_query = per_query_retrieval_from_similarity(similarity, query_ids, gallery_ids)
    torch.save({"first": per_query.first_positive_rank.clamp(max=11), "ap": per_query.average_precision,
                "inp": per_query.inverse_negative_penalty,
                "tied": tied_queries(similarity, query_ids, gallery_ids)},
               os.path.join(args.out_dir, "ours.pt"))
    similarity = None  # freed before the end-to-end run
    gc.collect()
    end_to_end, e2e_seconds, e2e_mem = timed(lambda: retrieval_metrics(queries, gallery, query_ids, gallery_ids))
    return {
        "metrics": metrics,
        "seconds": seconds,
        "peak_increase": mem.increase,
        "memory_method": mem.method,
        "end_to_end_metrics": end_to_end,
        "end_to_end_s": e2e_seconds,
        "end_to_end_peak_increase": e2e_mem.increase,
        "peak_gb": max_rss_bytes() / GB,
        "load_avg": load,
    }


def figure_million(args: argparse.Namespace) -> dict:
    load = os.getloadavg()[0]
    gen = torch.Generator().manual_seed(args.seed)
    size, dim, dtype = args.million_gallery, args.dim, getattr(torch, args.million_dtype)
    ids = torch.arange(size) // 4
    gallery = torch.empty(size, dim, dtype=dtype)
    block = 65536  # generated block by block: no float32 copy of the whole gallery
    for a in range(0, size, block):
        gallery[a : a + block] = torch.randn(min(block, size - a), dim, generator=gen)
    query_ids = ids[torch.randint(0, size, (args.million_queries,), generator=gen)]
    queries = gallery[query_ids * 4].float() + torch.randn(args.million_queries, dim, generator=gen)
    metrics, seconds, mem = timed(lambda: retrieval_metrics(queries, gallery, query_ids, ids))
    return {
        "metrics": metrics,
        "seconds": seconds,
        "peak_gb": max_rss_bytes() / GB,
        "rss_before_gb": mem.start / GB,
        "compute_gb": mem.increase / GB,
        "gallery_gb": gallery.numel() * gallery.element_size() / GB,
        "load_avg": load,
    }


FIGURES = {"baseline": figure_baseline, "ours": figure_ours, "million": figure_million}


def run_child(figure: str, argv: list[str], out_dir: str) -> dict:
    command = [sys.executable, os.path.abspath(__file__), *argv, "--figure", figure, "--out-dir", out_dir]
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queries", type=int, default=19848)
    parser.add_argument("--gallery", type=int, default=19848)
    parser.add_argument("--persons", type=int, default=1000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--noise", type=float, default=1.2, help="median noise of an image around its centre")
    parser.add_argument("--query-noise", type=float, default=5.0, help="median noise of a caption")
    parser.add_argument("--noise-spread", type=float, default=0.15, help="log-normal spread of the noise")
    parser.add_argument("--million-queries", type=int, default=1000)
    parser.add_argument("--million-gallery", type=int, default=1_000_000)
    parser.add_argument("--million-dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    parser.add_argument("--skip-million", action="store_true")
    parser.add_argument("--quick", action="store_true", help="4,000 queries; 200,000-image 'million' gallery")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--figure", choices=sorted(FIGURES), help=argparse.SUPPRESS)
    parser.add_argument("--out-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.figure:
        print(json.dumps(FIGURES[args.figure](args)))
        return

    argv = [a for a in sys.argv[1:] if a != "--quick"]
    if args.quick:
        argv += ["--queries", "4000", "--million-gallery", "200000"]
        args.queries, args.million_gallery = 4000, 200000
    out_dir = tempfile.mkdtemp(prefix="bench_metrics_")
    base = run_child("baseline", argv, out_dir)
    print(f"baseline: rank {base['seconds']:7.2f} s (similarity {base['similarity_s']:.2f} s), "
          f"peak increase {base['peak_increase'] / GB:.3f} GB  {base['metrics']}", flush=True)
    ours = run_child("ours", argv, out_dir)
    print(f"ours    : {ours['seconds']:7.2f} s from the similarity, {ours['end_to_end_s']:.2f} s from the "
          f"embeddings, peak increase {ours['peak_increase'] / GB:.3f} GB  {ours['metrics']}", flush=True)
    million = None if args.skip_million else run_child("million", argv, out_dir)
    if million:
        print(f"million : {million['seconds']:7.2f} s, process peak {million['peak_gb']:.3f} GB "
              f"(gallery {million['gallery_gb']:.3f} GB, RSS before the call {million['rss_before_gb']:.3f} GB, "
              f"increase in the call {million['compute_gb']:.3f} GB)  {million['metrics']}", flush=True)

    diffs = [abs(ours["metrics"][k] - base["metrics"][k]) for k in base["metrics"]]
    diffs += [abs(ours["end_to_end_metrics"][k] - base["metrics"][k]) for k in base["metrics"]]
    # per query: away from exact float32 ties, the two must agree (ranks exactly, AP to float32 rounding)
    base_q = torch.load(os.path.join(out_dir, "baseline.pt"))
    ours_q = torch.load(os.path.join(out_dir, "ours.pt"))
    for name in ("baseline.pt", "ours.pt"):
        os.remove(os.path.join(out_dir, name))
    os.rmdir(out_dir)
    untied = ~ours_q["tied"]
    differs = (base_q["first"] != ours_q["first"]) | (base_q["inp"] != ours_q["inp"]) | (
        (base_q["ap"] - ours_q["ap"]).abs() > 1e-6)
    base_untied = summarize(*(base_q[k][untied] for k in ("first", "ap", "inp")))
    ours_untied = summarize(*(ours_q[k][untied] for k in ("first", "ap", "inp")))
    print(f"tied queries: {int((~untied).sum())}; queries whose ranks differ: {int(differs.sum())} "
          f"({int((differs & untied).sum())} of them without a tie)", flush=True)
    baseline_e2e = base["similarity_s"] + base["seconds"]
    loads = [base["load_avg"], ours["load_avg"]] + ([million["load_avg"]] if million else [])
    print(json.dumps({
        "speedup": round(base["seconds"] / ours["seconds"], 3),
        "million_gallery_peak_gb": None if million is None else round(million["peak_gb"], 3),
        "baseline_s": round(base["seconds"], 3),
        "ours_s": round(ours["seconds"], 3),
        "queries": args.queries,
        "gallery": args.gallery,
        "persons": args.persons,
        "load_avg": round(max(loads), 2),
        "memory_ratio": round(ours["peak_increase"] / base["peak_increase"], 5),
        "max_abs_diff": max(diffs),
        "max_abs_diff_untied": max(abs(ours_untied[k] - base_untied[k]) for k in base_untied),
        "tied_queries": int((~untied).sum()),
        "differing_queries": int(differs.sum()),
        "differing_untied_queries": int((differs & untied).sum()),
        "per_query_max_ap_diff_untied": float((base_q["ap"] - ours_q["ap"])[untied].abs().max()),
        "metrics": {k: round(v, 4) for k, v in ours["metrics"].items()},
        "similarity_s": round(base["similarity_s"], 3),
        "baseline_end_to_end_s": round(baseline_e2e, 3),
        "ours_end_to_end_s": round(ours["end_to_end_s"], 3),
        "speedup_end_to_end": round(baseline_e2e / ours["end_to_end_s"], 3),
        "baseline_peak_increase_gb": round(base["peak_increase"] / GB, 3),
        "ours_peak_increase_gb": round(ours["peak_increase"] / GB, 4),
        "memory_method": ours["memory_method"],
        "million_gallery": None if million is None else args.million_gallery,
        "million_queries": None if million is None else args.million_queries,
        "million_dtype": None if million is None else args.million_dtype,
        "million_compute_gb": None if million is None else round(million["compute_gb"], 3),
        "million_s": None if million is None else round(million["seconds"], 3),
        "load_avgs": [round(x, 2) for x in loads],
        "threads": torch.get_num_threads(),
    }))


if __name__ == "__main__":
    main()
