"""``export``: WORK/filter (or WORK/caption) -> the data set folder (parquet shards, README card, figures)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from gadms_utils.cli_types import non_negative_int, positive_int

from .common import tool_parser

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> None:
    """Register ``export``."""
    p = tool_parser(
        subparsers,
        "export",
        "write the data set folder (parquet + card)",
        "Write OUT/data/train-*.parquet, OUT/README.md and OUT/assets/*.png.",
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
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    """Run ``export`` and print what it wrote."""
    from ..export import export

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
