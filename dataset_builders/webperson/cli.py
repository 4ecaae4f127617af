"""Command line of the WebPerson pipeline: ``python -m dataset_builders.webperson <stage> ...``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from gadms_utils.cli_types import non_negative_int, positive_int
from .shards import parse_shard
from .stage import format_summary

_EPILOG = """\
stages, in order (each reads the previous one's shards in WORK, resumes after a kill, takes --shard i/n):
  ingest     source images -> WORK/ingest          (folder, WebDataset tars, parquet, datasets, URL list)
  detect     person boxes and crops -> WORK/detect (transformers RT-DETR/DETR, or ultralytics YOLO11)
  pose       COCO-17 pose check -> WORK/pose       (transformers ViTPose, or ultralytics YOLO11-pose)
  caption    two VLM captions per crop -> WORK/caption (transformers, vLLM offline, OpenAI-compatible server)
  filter     caption rules -> WORK/filter          (length, speculation, background, meta talk, duplicates)
  export     WORK/filter -> OUT (parquet shards + README card + figures; datasets.load_dataset(OUT))
  publish    OUT -> the Hugging Face Hub (load_dataset("ORG/NAME"))
tools: templates-extract, templates-select (build a template bank), status (counts of every stage)

example:
  python -m dataset_builders.webperson ingest --work W --source tar --input 'pool/*.tar'
  python -m dataset_builders.webperson detect --work W \\
      --detector transformers=PekingU/rtdetr_r50vd_coco_o365,device=cuda
  python -m dataset_builders.webperson pose --work W \\
      --pose-model transformers=usyd-community/vitpose-base-simple,device=cuda
  python -m dataset_builders.webperson caption --work W \\
      --captioner openai=Qwen/Qwen2.5-VL-7B-Instruct,base_url=http://localhost:8000/v1,concurrency=64 \\
      --captioner openai=Qwen/Qwen2.5-VL-32B-Instruct,base_url=http://localhost:8001/v1,concurrency=32
  python -m dataset_builders.webperson filter --work W
  python -m dataset_builders.webperson export --work W --out webperson --license cc-by-4.0
  python -m dataset_builders.webperson publish --folder webperson --repo ORG/webperson
"""

_SPEC_HELP = "KIND=MODEL[,key=value...]; keys: device, dtype, batch_size, ... (see backends.py)"


def _shard(text: str):
    try:
        return parse_shard(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _stage_parser(sub, name: str, help_text: str, description: str) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        name, help=help_text, description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--work", required=True, type=Path, help="the work directory shared by all stages")
    parser.add_argument(
        "--shard",
        type=_shard,
        default="0/1",
        metavar="i/n",
        help="take only shards whose number %% n == i (split work over processes/machines)",
    )
    parser.add_argument("--max-shards", type=positive_int, default=None, help="stop after this many shards")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    if name in ("detect", "pose", "caption"):
        parser.add_argument(
            "--retry-errors",
            action="store_true",
            help="also redo the items of done shards that failed with a backend error "
            "(detector_error / pose_error / caption_error)",
        )
    return parser


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one subcommand per stage."""
    parser = argparse.ArgumentParser(
        prog="python -m dataset_builders.webperson",
        description="WebPerson curation: web images -> person crops with two captions.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="<stage>")

    p = _stage_parser(
        sub,
        "ingest",
        "read source images into WORK/ingest",
        "Read source images, give each a content id (SHA-256), drop duplicates and broken files.",
    )
    p.add_argument(
        "--source",
        required=True,
        choices=["folder", "tar", "parquet", "dataset", "urls"],
        help="kind of source",
    )
    p.add_argument(
        "--input",
        required=True,
        nargs="+",
        help="folder / tar files or globs / parquet files or globs / data set name or folder / URL list file",
    )
    p.add_argument("--image-column", default="image", help="image column (parquet, dataset)")
    p.add_argument("--url-column", default="url", help="URL column (parquet, dataset), if present")
    p.add_argument("--split", default="train", help="split (dataset)")
    p.add_argument(
        "--downloader",
        choices=["builtin", "img2dataset"],
        default="builtin",
        help="URL lists: built-in threaded downloader, or img2dataset (optional extra, for real pools)",
    )
    p.add_argument(
        "--download-dir", type=Path, default=None, help="img2dataset output (default WORK/downloads)"
    )
    p.add_argument("--timeout", type=float, default=10.0, help="built-in downloader: seconds per URL")
    p.add_argument("--retries", type=non_negative_int, default=1, help="built-in downloader: retries per URL")
    p.add_argument("--shard-size", type=positive_int, default=1000, help="source images per shard")
    p.add_argument(
        "--min-side", type=positive_int, default=90, help="reject images with a shorter side below this"
    )
    p.add_argument(
        "--max-pixels", type=positive_int, default=64_000_000, help="reject images with more pixels"
    )
    p.add_argument(
        "--workers", type=positive_int, default=8, help="threads reading / downloading source items"
    )
    p.add_argument(
        "--verify",
        action="store_true",
        help="decode every image here (default: header check; truncated data is found by detect)",
    )

    p = _stage_parser(
        sub,
        "detect",
        "person boxes and crops into WORK/detect",
        "Detect persons; keep boxes by the SPEC's thresholds (all configurable); crop.",
    )
    p.add_argument("--detector", default="transformers=PekingU/rtdetr_r50vd_coco_o365", help=_SPEC_HELP)
    p.add_argument("--min-short-side", type=float, default=90.0, help="box shorter side must be above (px)")
    p.add_argument("--min-aspect", type=float, default=0.25, help="lowest width/height")
    p.add_argument("--max-aspect", type=float, default=0.5, help="highest width/height")
    p.add_argument("--min-score", type=float, default=0.85, help="confidence must be above")
    p.add_argument("--labels", nargs="+", default=["person"], help="class names that count as persons")
    p.add_argument("--max-per-image", type=non_negative_int, default=0, help="boxes kept per image (0: all)")
    p.add_argument("--batch-size", type=positive_int, default=16, help="images per detector call")
    p.add_argument("--jpeg-quality", type=positive_int, default=95, help="JPEG quality of the crops")

    p = _stage_parser(
        sub,
        "pose",
        "pose integrity check into WORK/pose",
        "COCO-17 keypoints per crop; keep crops with enough visible keypoints, a hip and head points.",
    )
    p.add_argument("--pose-model", default="transformers=usyd-community/vitpose-base-simple", help=_SPEC_HELP)
    p.add_argument(
        "--visibility", type=float, default=0.5, help="keypoint score at which it counts as visible"
    )
    p.add_argument("--min-visible", type=non_negative_int, default=8, help="visible keypoints needed (of 17)")
    p.add_argument("--min-hips", type=non_negative_int, default=1, help="visible hips (11, 12) needed")
    p.add_argument("--min-head", type=non_negative_int, default=2, help="visible head points (0-4) needed")
    p.add_argument("--batch-size", type=positive_int, default=32, help="crops per pose-model call")

    p = _stage_parser(
        sub,
        "caption",
        "two VLM captions per crop into WORK/caption",
        "Caption each crop twice: the SPEC's instruction plus a randomly drawn template.",
    )
    p.add_argument(
        "--captioner",
        action="append",
        required=True,
        metavar="SPEC",
        help="give once (two samplings) or twice (caption1, caption2); " + _SPEC_HELP,
    )
    p.add_argument("--templates", default="default_v1", help="template bank: a shipped name or a file")
    p.add_argument("--seed", type=non_negative_int, default=0, help="template and sampling draws")
    p.add_argument("--max-words", type=positive_int, default=60, help="word limit stated in the prompt")
    p.add_argument("--batch-size", type=positive_int, default=64, help="crops per captioner call")
    p.add_argument(
        "--from",
        dest="from_stage",
        choices=["pose", "detect"],
        default="pose",
        help="input stage (detect: skip the pose check)",
    )

    p = _stage_parser(
        sub,
        "filter",
        "caption rules into WORK/filter",
        "Reject captions by length, speculation, identity/emotion, background, meta talk, duplicates.",
    )
    p.add_argument("--min-words", type=non_negative_int, default=8, help="fewest words per caption")
    p.add_argument("--max-words", type=positive_int, default=80, help="most words per caption")

    p = sub.add_parser(
        "export",
        help="write the data set folder (parquet + card)",
        description="Write OUT/data/train-*.parquet, OUT/README.md and OUT/assets/*.png.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--work", required=True, type=Path, help="the work directory")
    p.add_argument("--out", required=True, type=Path, help="the data set folder to write")
    p.add_argument(
        "--from", dest="from_stage", default="filter", choices=["filter", "caption"], help="input stage"
    )
    p.add_argument("--name", default="WebPerson", help="pretty name in the card")
    p.add_argument("--license", default="other", help="licence field of the card (e.g. cc-by-4.0, other)")
    p.add_argument("--shard-size", type=positive_int, default=5000, help="rows per parquet shard")
    p.add_argument("--samples", type=non_negative_int, default=8, help="crops in the card's sample grid")
    p.add_argument("--seed", type=non_negative_int, default=0, help="which samples")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier export in OUT")

    p = sub.add_parser(
        "publish",
        help="upload an export to the Hugging Face Hub",
        description="Create the data set repo and upload the export (token: --token or HF_TOKEN).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--folder", required=True, type=Path, help="the export folder")
    p.add_argument("--repo", required=True, help="ORG/NAME of the data set repository")
    p.add_argument("--private", action="store_true", help="create the repository private")
    p.add_argument("--token", default=None, help="Hub token (default: HF_TOKEN or the saved login)")
    p.add_argument("--revision", default=None, help="branch to push to")
    p.add_argument("--large", action="store_true", help="use upload_large_folder (resumable, multi-commit)")

    p = sub.add_parser(
        "templates-extract",
        help="LLM: benchmark captions -> templates (text file)",
        description="Rewrite benchmark captions into templates with an instruct LLM.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--captions",
        required=True,
        type=Path,
        help="a .txt (one caption a line), a JSON list of strings, or a benchmark JSON "
        "(records with 'captions')",
    )
    p.add_argument("--llm", required=True, help="openai=MODEL,base_url=... or transformers=MODEL")
    p.add_argument("--out", required=True, type=Path, help="text file of templates (one a line)")
    p.add_argument("--limit", type=positive_int, default=None, help="use the first N captions")
    p.add_argument("--batch-size", type=positive_int, default=64, help="prompts per LLM call")

    p = sub.add_parser(
        "templates-select",
        help="embed + k-means: templates -> a versioned bank",
        description="Embed templates, k-means them, keep the nearest to each centroid plus N random.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--templates", required=True, type=Path, help="text file of templates (one a line)")
    p.add_argument("--embedder", required=True, help="clip=MODEL or sentence-transformers=MODEL")
    p.add_argument("--clusters", required=True, type=positive_int, help="k of k-means")
    p.add_argument(
        "--random-per-cluster", type=non_negative_int, default=5, help="random members kept per cluster"
    )
    p.add_argument("--seed", type=non_negative_int, default=0, help="k-means and random draws")
    p.add_argument("--name", required=True, help="bank name (file NAME_vVERSION.json)")
    p.add_argument("--version", required=True, type=positive_int, help="bank version")
    p.add_argument("--out-dir", required=True, type=Path, help="folder of the bank file")

    p = sub.add_parser(
        "status",
        help="counts of every stage in WORK",
        description="Print the in / kept / rejected counts of every stage in the work directory.",
    )
    p.add_argument("--work", required=True, type=Path, help="the work directory")
    return parser


def _read_captions(path: Path) -> list[str]:
    if path.suffix == ".txt":
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    data = json.loads(path.read_text())
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list")
    captions: list[str] = []
    for number, item in enumerate(data):
        if isinstance(item, str):
            captions.append(item)
        elif isinstance(item, dict) and isinstance(item.get("captions"), list):
            captions += [str(c) for c in item["captions"]]
        else:
            raise ValueError(f"{path}: item {number} is neither a caption nor a record with 'captions'")
    return captions


def _run(args: argparse.Namespace) -> Any:
    from . import backends, pipeline

    progress = not getattr(args, "no_progress", False)
    common = {
        "selection": getattr(args, "shard", None),
        "progress": progress,
        "max_shards": getattr(args, "max_shards", None),
    }
    retry = {"retry_errors": getattr(args, "retry_errors", False)}
    if args.command == "ingest":
        from .images import ImageLimits
        from .ingest import ingest
        from .sources import open_source

        items = open_source(
            args.source,
            args.input,
            image_column=args.image_column,
            url_column=args.url_column,
            split=args.split,
            downloader=args.downloader,
            timeout=args.timeout,
            retries=args.retries,
            download_dir=args.download_dir or args.work / "downloads",
        )
        settings = {"source": args.source, "input": [str(i) for i in args.input]}
        return ingest(
            items,
            args.work,
            shard_size=args.shard_size,
            selection=args.shard,
            limits=ImageLimits(args.min_side, args.max_pixels),
            workers=args.workers,
            verify=args.verify,
            progress=progress,
            settings=settings,
        )
    if args.command == "detect":
        from .detection import DetectionThresholds

        thresholds = DetectionThresholds(
            args.min_short_side,
            args.min_aspect,
            args.max_aspect,
            args.min_score,
            tuple(args.labels),
            args.max_per_image,
        )
        detector = backends.make_detector(backends.parse_spec(args.detector, "--detector"))
        return pipeline.run_detect(
            args.work,
            detector,
            thresholds,
            batch_size=args.batch_size,
            jpeg_quality=args.jpeg_quality,
            **common,
            **retry,
        )
    if args.command == "pose":
        from .pose import PoseThresholds

        thresholds = PoseThresholds(args.visibility, args.min_visible, args.min_hips, args.min_head)
        estimator = backends.make_pose(backends.parse_spec(args.pose_model, "--pose-model"))
        return pipeline.run_pose(
            args.work, estimator, thresholds, batch_size=args.batch_size, **common, **retry
        )
    if args.command == "caption":
        from .template_bank import load_bank

        if len(args.captioner) > 2:
            raise ValueError(f"--captioner: give it once or twice, got {len(args.captioner)}")
        bank = load_bank(args.templates)
        captioners = [backends.make_captioner(backends.parse_spec(s, "--captioner")) for s in args.captioner]
        return pipeline.run_caption(
            args.work,
            captioners,
            bank,
            seed=args.seed,
            max_words=args.max_words,
            batch_size=args.batch_size,
            from_stage=args.from_stage,
            **common,
            **retry,
        )
    if args.command == "filter":
        from .caption_filter import CaptionFilter, FilterRules

        return pipeline.run_filter(
            args.work, CaptionFilter(FilterRules(args.min_words, args.max_words)), **common
        )
    if args.command == "export":
        from .export import export

        stats = export(
            args.work,
            args.out,
            from_stage=args.from_stage,
            name=args.name,
            license=args.license,
            shard_size=args.shard_size,
            samples=args.samples,
            seed=args.seed,
            overwrite=args.overwrite,
        )
        print(
            f"exported {stats['images']:,} crops, {stats['captions']:,} captions, vocabulary "
            f"{stats['vocabulary']:,} to {args.out} ({stats['shards']} shards); "
            f"load with datasets.load_dataset({str(args.out)!r})"
        )
        return None
    if args.command == "publish":
        from .publish import publish

        result = publish(
            args.folder,
            args.repo,
            token=args.token or os.environ.get("HF_TOKEN"),
            private=args.private,
            revision=args.revision,
            large=args.large,
        )
        print(f"published {args.folder} to https://huggingface.co/datasets/{args.repo} ({result})")
        return None
    if args.command == "templates-extract":
        from .template_mining import extract_templates

        captions = _read_captions(args.captions)[: args.limit]
        generate = backends.make_llm(backends.parse_spec(args.llm, "--llm"))
        templates, dropped = extract_templates(captions, generate, batch_size=args.batch_size)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("".join(t + "\n" for t in templates))
        print(
            f"{len(templates)} templates from {len(captions)} captions -> {args.out}; "
            f"dropped: {dropped or 'none'}"
        )
        return None
    if args.command == "templates-select":
        from .template_bank import TemplateBank, save_bank
        from .template_mining import select_templates

        texts = [line.strip() for line in args.templates.read_text().splitlines() if line.strip()]
        embedder = backends.make_embedder(backends.parse_spec(args.embedder, "--embedder"))
        chosen, _ = select_templates(
            embedder(texts), args.clusters, per_cluster_random=args.random_per_cluster, seed=args.seed
        )
        bank = TemplateBank.from_texts(
            args.name,
            args.version,
            [texts[i] for i in chosen],
            {
                "source": str(args.templates),
                "embedder": args.embedder,
                "clusters": args.clusters,
                "random_per_cluster": args.random_per_cluster,
                "seed": args.seed,
                "candidates": len(texts),
            },
        )
        print(f"kept {len(chosen)} of {len(texts)} templates -> {save_bank(bank, args.out_dir)}")
        return None
    if args.command == "status":
        for totals in pipeline.stage_status(args.work):
            print(format_summary(totals))
        return None
    raise ValueError(f"unknown command {args.command!r}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 on a usage or input error, with its message)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        manifest = _run(args)
    except (ValueError, FileNotFoundError, FileExistsError, KeyError, ImportError) as error:
        print(f"error ({args.command}): {error}", file=sys.stderr)
        return 2
    if isinstance(manifest, dict):
        print(format_summary(manifest))
        if manifest.get("pending_input"):
            print(f"  ({manifest['pending_input']} input shards not done yet: rerun when they are)")
    return 0
