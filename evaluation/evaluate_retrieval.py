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
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, NoReturn, Sequence

if __package__ in (None, ""):  # run as a script: import the repository's packages, not this folder's files
    _here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]
    sys.path.insert(0, os.path.dirname(_here))

import torch  # noqa: E402

from evaluation.benchmarks import (  # noqa: E402
    BENCHMARKS,
    RetrievalSplit,
    SplitNotFoundError,
    find_benchmark_root,
    load_retrieval_split,
    resolve_benchmark,
)
from evaluation.embedding import (  # noqa: E402
    PRECISIONS,
    embed_images,
    embed_texts,
    load_model_and_processor,
    readable_split,
)
from evaluation.metrics import bidirectional_retrieval_metrics  # noqa: E402
from gadms_utils.cli_types import non_negative_int, positive_int  # noqa: E402

logger = logging.getLogger("evaluation.evaluate_retrieval")

PROTOCOL = (
    "cosine similarity of L2-normalised global features (float32); every caption of the split is a "
    "query, every image of the split is in the gallery (image-to-text: the reverse); positives share "
    "the person id; ties broken by gallery index; R@K, mAP over the full ranking, mINP; percent; no "
    "camera or junk filtering; an unreadable image is skipped (reported under skipped_files) and the "
    "captions of persons left without an image are left out"
)


class EvaluationInputError(ValueError):
    """The inputs leave nothing to evaluate (e.g. no image of a split could be read)."""


def fail(message: str) -> NoReturn:
    """Print ``error: <message>`` (one line) to stderr and exit with status 2, as argparse does."""
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
    raise SystemExit(2)


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
    parser.add_argument(
        "--batch-size", type=positive_int, default=64, help="images per forward pass (default: 64)"
    )
    parser.add_argument(
        "--text-batch-size", type=positive_int, default=None,
        help="captions per pass (default: 4 x --batch-size)",
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
        "--ks", type=positive_int, nargs="+", default=[1, 5, 10], help="the K of R@K (default: 1 5 10)"
    )
    parser.add_argument(
        "--image-dir", default=None, help="image folder override (only with a single benchmark)"
    )
    parser.add_argument(
        "--num-workers", type=non_negative_int, default=0, help="image loading workers (default: 0)"
    )
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
    fail(f"{len(benchmarks)} benchmarks but {len(roots)} --data-root values (give 1 or one each)")


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


def check_model_argument(model: str) -> None:
    """Fail (exit 2) when ``--model`` is neither an existing folder nor a possible Hugging Face hub id."""
    if Path(model).expanduser().exists():
        return
    looks_local = model.startswith(("./", "../", "/", "~", ".\\")) or os.path.isabs(model) or "\\" in model
    if not looks_local:
        try:
            from huggingface_hub.utils import validate_repo_id

            validate_repo_id(model)
        except ImportError:
            pass
        except ValueError:  # HFValidationError: not a hub id either
            looks_local = True
    if looks_local:
        fail(f"model folder not found: {model}")


def split_warnings(view: RetrievalSplit, name: str, split: str) -> list[str]:
    """Warnings about a split whose metrics would mislead: empty captions, a single identity."""
    out = []
    empty = [i for i, caption in enumerate(view.captions) if not str(caption).strip()]
    if empty:
        shown = ", ".join(str(i) for i in empty[:10]) + (", ..." if len(empty) > 10 else "")
        out.append(f"{name} {split}: {len(empty)} empty caption(s), query index {shown}")
    identities = set(view.gallery_ids)
    if len(identities) == 1:
        out.append(
            f"{name} {split}: the gallery holds a single identity (person id {next(iter(identities))}), "
            "so every metric is trivially 100"
        )
    return out


def _split_name(split: str) -> str:
    return {"val": "validation"}.get(split.lower(), split.lower())


def evaluate_benchmark(
    model: torch.nn.Module,
    processor: Any,
    name: str,
    root: Path,
    args: argparse.Namespace,
    device: torch.device,
    view: RetrievalSplit | None = None,
) -> dict[str, Any]:
    """Embed one benchmark split and compute both directions' metrics.

    An unreadable image is skipped (logged) and left out of the gallery, with the captions of persons
    left without any image (the protocol needs a positive for every query). The entry says what the
    metrics cover (``num_images``, ``num_captions``, ``num_identities``) and what was skipped
    (``skipped_images``, ``skipped_captions``, ``skipped_files``: ``[{"file", "reason"}]``), with any
    ``warnings`` about the split.

    Raises:
        EvaluationInputError: no image of the split could be read.
    """
    key, spec = resolve_benchmark(name)
    start = time.perf_counter()
    if view is None:
        view = load_retrieval_split(
            key, root, args.split, image_dir=args.image_dir, list_all_missing=args.list_all_missing
        )
    progress = not args.no_progress
    files = view.image_files()
    unreadable: list[tuple[int, str]] = []
    image_embeds = embed_images(
        model, processor, files, batch_size=args.batch_size, precision=args.precision,
        num_workers=args.num_workers, progress=progress, desc=f"{spec.name} images", skipped=unreadable,
    )  # fmt: skip
    gallery_ids, captions, query_ids = readable_split(view.gallery_ids, view.captions, view.query_ids,
                                                      unreadable)
    if not gallery_ids:
        raise EvaluationInputError(f"{spec.name} {_split_name(args.split)}: none of its {len(files)} images "
                                   f"could be read (e.g. {files[0]}: {unreadable[0][1]})")  # fmt: skip
    skipped_captions = view.queries.num_rows - len(query_ids)
    if unreadable:
        logger.warning(
            "%s: skipped %d unreadable image(s) of %d and %d caption(s) of persons left without an image",
            spec.name, len(unreadable), len(files), skipped_captions,
        )  # fmt: skip
    text_embeds = embed_texts(
        model, processor, captions,
        batch_size=args.text_batch_size or 4 * args.batch_size, precision=args.precision, progress=progress,
        desc=f"{spec.name} captions",
    )  # fmt: skip
    metrics = bidirectional_retrieval_metrics(
        text_embeds.to(device), image_embeds.to(device), query_ids, gallery_ids, args.ks
    )
    return {
        "name": spec.name,
        "split": _split_name(args.split),
        "data_root": str(root),
        "num_images": len(gallery_ids),
        "num_captions": len(query_ids),
        "num_identities": len(set(gallery_ids)),
        **metrics,
        "skipped_images": len(unreadable),
        "skipped_captions": skipped_captions,
        "skipped_files": [{"file": files[index], "reason": reason} for index, reason in unreadable],
        "warnings": split_warnings(view, spec.name, _split_name(args.split)),
        "seconds": round(time.perf_counter() - start, 3),
    }


def format_skipped(results: dict[str, dict[str, Any]]) -> str:
    """Lines naming the images each benchmark skipped and what its metrics cover (empty when none)."""
    lines = []
    for entry in results.values():
        if entry.get("skipped_images"):
            lines.append(
                f"{entry['name']} {entry['split']}: skipped {entry['skipped_images']} unreadable image(s) "
                f"and {entry['skipped_captions']} caption(s); the metrics cover {entry['num_images']} images "
                f"and {entry['num_captions']} captions"
            )
            lines += [f"  {item['file']}: {item['reason']}" for item in entry["skipped_files"]]
    return "\n".join(lines)


def _load_views(
    benchmarks: Sequence[str], roots: Sequence[Path], args: argparse.Namespace
) -> dict[str, RetrievalSplit]:
    """Every benchmark's split, read before the model is loaded, so that data errors come first."""
    views = {}
    for key, root in zip(benchmarks, roots):
        view = load_retrieval_split(
            key, root, args.split, image_dir=args.image_dir, list_all_missing=args.list_all_missing
        )
        for message in split_warnings(view, BENCHMARKS[key].name, _split_name(args.split)):
            logger.warning(message)
        views[key] = view
    return views


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the evaluation; returns what it writes to ``--output``.

    Usage errors (an unknown benchmark, a model folder that does not exist or a model that cannot be
    loaded, a data root without the requested split) print one ``error:`` line and exit with status 2.
    A missing image or annotation file raises ``FileNotFoundError``, a malformed annotation file
    ``BenchmarkFormatError`` (the command line turns both into an ``error:`` message, status 2).
    """
    args = build_parser().parse_args(argv)
    try:
        benchmarks = [resolve_benchmark(b)[0] for b in args.benchmark]
    except ValueError:
        unknown = [b for b in args.benchmark if not _is_benchmark(b)]
        fail(f"unknown benchmark {', '.join(map(repr, unknown))}; choose from: {', '.join(BENCHMARKS)}")
    if args.image_dir is not None and len(benchmarks) > 1:
        fail("--image-dir applies to a single benchmark")
    check_model_argument(args.model)
    roots = _pair_roots(benchmarks, args.data_root)
    try:
        views = _load_views(benchmarks, roots, args)
    except SplitNotFoundError as err:
        fail(str(err))
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.no_progress:  # transformers' own bar too (loading the weights)
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    try:
        model, processor = load_model_and_processor(
            args.model, device=device, trust_remote_code=args.trust_remote_code
        )
    except (OSError, ValueError) as err:
        fail(f"cannot load model {args.model}: {err}")
    try:
        results = {
            b: evaluate_benchmark(model, processor, b, r, args, device, view=views[b])
            for b, r in zip(benchmarks, roots)
        }
    except EvaluationInputError as err:
        fail(str(err))
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
    skipped = format_skipped(results)
    if skipped:
        print(skipped)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {output}")
    return report


def _is_benchmark(name: str) -> bool:
    try:
        resolve_benchmark(name)
    except ValueError:
        return False
    return True


if __name__ == "__main__":
    from evaluation.benchmarks import BenchmarkFormatError

    logging.basicConfig(level=logging.WARNING, format="warning: %(message)s")
    try:
        main()
    except (FileNotFoundError, BenchmarkFormatError) as err:  # data problems: a message, not a traceback
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
