"""``ingest``: read source images into WORK/ingest."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from gadms_utils.cli_types import non_negative_int, positive_int

from ..images import ImageLimits
from .common import add_settings_options, settings_from_args, stage_parser

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> None:
    """Register ``ingest``."""
    p = stage_parser(
        subparsers,
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
    add_settings_options(p, ImageLimits)
    p.add_argument(
        "--workers", type=positive_int, default=8, help="threads reading / downloading source items"
    )
    p.add_argument(
        "--verify",
        action="store_true",
        help="decode every image here (default: header check; truncated data is found by detect)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run ``ingest``; returns the stage manifest."""
    from ..ingest import ingest
    from ..sources import open_source

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
    return ingest(
        items,
        args.work,
        shard_size=args.shard_size,
        selection=args.shard,
        limits=settings_from_args(ImageLimits, args),
        workers=args.workers,
        verify=args.verify,
        progress=not args.no_progress,
        settings={"source": args.source, "input": [str(i) for i in args.input]},
    )
