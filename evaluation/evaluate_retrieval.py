#!/usr/bin/env python
"""Evaluate a text-to-person retrieval model on CUHK-PEDES, ICFG-PEDES, RSTPReid and UFine6926.

Embeds every image of the split's gallery and every caption (batched, with progress bars), ranks by
the field's protocol (cosine similarity, ties broken by gallery index, R@1/5/10, mAP, mINP, no
filtering), prints the standard table for text-to-image and image-to-text, and writes a JSON file.
Any model with ``get_image_features`` / ``get_text_features`` and a processor works, so zero-shot or
direct-transfer evaluation is the same command (e.g. ``--model openai/clip-vit-base-patch16``).

Examples::

    python evaluation/evaluate_retrieval.py --model ./gadms-vitb16 --benchmark cuhk-pedes \\
        --data-root data/CUHK-PEDES
    # several benchmarks, one parent folder holding CUHK-PEDES/, ICFG-PEDES/, RSTPReid/
    python evaluation/evaluate_retrieval.py --model org/gadms-vitb16 \\
        --benchmark cuhk-pedes icfg-pedes rstpreid --data-root data --device cuda --precision fp16
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

if __package__ in (None, ""):  # run as a script: import the repository's packages, not this folder's files
    _here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]
    sys.path.insert(0, os.path.dirname(_here))

import torch  # noqa: E402

from evaluation.benchmarks import (  # noqa: E402
    BENCHMARKS,
    find_benchmark_root,
    load_retrieval_split,
    resolve_benchmark,
)
from evaluation.embedding import PRECISIONS, embed_images, embed_texts, load_model_and_processor  # noqa: E402
from evaluation.metrics import bidirectional_retrieval_metrics  # noqa: E402

PROTOCOL = (
    "cosine similarity of L2-normalised global features (float32); every caption of the split is a "
    "query, every image of the split is in the gallery (image-to-text: the reverse); positives share "
    "the person id; ties broken by gallery index; R@K, mAP over the full ranking, mINP; percent; no "
    "camera or junk filtering"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="evaluate_retrieval.py",
        description=__doc__.split("\n\n")[0] + "\n\n" + __doc__.split("\n\n")[1],
        epilog="Benchmarks: " + ", ".join(f"{k} ({s.annotation_file})" for k, s in BENCHMARKS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", required=True, help="model folder or Hugging Face hub id")
    parser.add_argument(
        "--benchmark", required=True, nargs="+", action="extend", metavar="NAME",
        help="one or more of: " + ", ".join(BENCHMARKS) + " (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--data-root", required=True, nargs="+", action="extend", metavar="DIR",
        help="the benchmark's folder (holding its annotation file), one per --benchmark in the same "
        "order; or a single parent folder holding CUHK-PEDES/, ICFG-PEDES/, RSTPReid/, UFine6926/",
    )  # fmt: skip
    parser.add_argument("--split", default="test", help="train, validation (val) or test (default: test)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default: 64)")
    parser.add_argument(
        "--text-batch-size", type=int, default=None, help="captions per pass (default: 4 x --batch-size)"
    )
    parser.add_argument(
        "--device", default=None, help="torch device (default: cuda when available, else cpu)"
    )
    parser.add_argument(
        "--precision", default="fp32", choices=list(PRECISIONS),
        help="inference precision via autocast (default: fp32); similarities are always float32",
    )  # fmt: skip
    parser.add_argument(
        "--output", default="retrieval_results.json", help="JSON file to write (default: %(default)s)"
    )
    parser.add_argument(
        "--ks", type=int, nargs="+", default=[1, 5, 10], help="the K of R@K (default: 1 5 10)"
    )
    parser.add_argument(
        "--image-dir", default=None, help="image folder override (only with a single benchmark)"
    )
    parser.add_argument("--num-workers", type=int, default=0, help="image loading workers (default: 0)")
    parser.add_argument("--list-all-missing", action="store_true", help="report every missing image at once")
    parser.add_argument(
        "--trust-remote-code", action="store_true", help="allow the model's own code from the hub"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    return parser


def _pair_roots(benchmarks: Sequence[str], roots: Sequence[str]) -> list[Path]:
    if len(roots) == len(benchmarks):
        return [find_benchmark_root(b, r) for b, r in zip(benchmarks, roots)]
    if len(roots) == 1:
        return [find_benchmark_root(b, roots[0]) for b in benchmarks]
    raise SystemExit(
        f"error: {len(benchmarks)} benchmarks but {len(roots)} --data-root values (give 1 or one each)"
    )


def format_table(results: dict[str, dict[str, Any]], ks: Sequence[int]) -> str:
    """The standard table: one row per benchmark and direction, columns R@K..., mAP, mINP."""
    columns = [f"R{k}" for k in ks] + ["mAP", "mINP"]
    header = f"{'benchmark':<12} {'split':<10} {'task':<5} " + " ".join(f"{c:>7}" for c in columns)
    lines = [header, "-" * len(header)]
    for entry in results.values():
        for task in ("t2i", "i2t"):
            values = " ".join(f"{entry[task][c]:7.2f}" for c in columns)
            lines.append(f"{entry['name']:<12} {entry['split']:<10} {task:<5} {values}")
    return "\n".join(lines)


def evaluate_benchmark(
    model: torch.nn.Module,
    processor: Any,
    name: str,
    root: Path,
    args: argparse.Namespace,
    device: torch.device,
) -> dict[str, Any]:
    """Embed one benchmark split and compute both directions' metrics."""
    key, spec = resolve_benchmark(name)
    start = time.perf_counter()
    view = load_retrieval_split(
        key, root, args.split, image_dir=args.image_dir, list_all_missing=args.list_all_missing
    )
    progress = not args.no_progress
    image_embeds = embed_images(
        model, processor, view.image_files(), batch_size=args.batch_size, precision=args.precision,
        num_workers=args.num_workers, progress=progress, desc=f"{spec.name} images",
    )  # fmt: skip
    text_embeds = embed_texts(
        model, processor, view.captions, batch_size=args.text_batch_size or 4 * args.batch_size,
        precision=args.precision, progress=progress, desc=f"{spec.name} captions",
    )  # fmt: skip
    metrics = bidirectional_retrieval_metrics(
        text_embeds.to(device), image_embeds.to(device), view.query_ids, view.gallery_ids, args.ks
    )
    return {
        "name": spec.name,
        "split": {"val": "validation"}.get(args.split.lower(), args.split.lower()),
        "data_root": str(root),
        "num_images": view.gallery.num_rows,
        "num_captions": view.queries.num_rows,
        "num_identities": len(set(view.gallery_ids)),
        **metrics,
        "seconds": round(time.perf_counter() - start, 3),
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the evaluation; returns what it writes to ``--output``."""
    args = build_parser().parse_args(argv)
    benchmarks = [resolve_benchmark(b)[0] for b in args.benchmark]
    if args.image_dir is not None and len(benchmarks) > 1:
        raise SystemExit("error: --image-dir applies to a single benchmark")
    roots = _pair_roots(benchmarks, args.data_root)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, processor = load_model_and_processor(
        args.model, device=device, trust_remote_code=args.trust_remote_code
    )
    results = {b: evaluate_benchmark(model, processor, b, r, args, device) for b, r in zip(benchmarks, roots)}
    report = {
        "model": str(args.model),
        "split": args.split,
        "precision": args.precision,
        "device": str(device),
        "ks": list(args.ks),
        "protocol": PROTOCOL,
        "results": results,
    }
    print(format_table(results, args.ks))
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {output}")
    return report


if __name__ == "__main__":
    from evaluation.benchmarks import BenchmarkFormatError

    try:
        main()
    except (FileNotFoundError, BenchmarkFormatError) as err:  # data problems: a message, not a traceback
        sys.exit(f"error: {err}")
