"""``status``: the in / kept / rejected counts of every stage in the work directory."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..stage import format_summary
from .common import tool_parser

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> None:
    """Register ``status``."""
    p = tool_parser(
        subparsers,
        "status",
        "counts of every stage in WORK",
        "Print the in / kept / rejected counts of every stage in the work directory.",
        formatter_class=None,
    )
    p.add_argument("--work", required=True, type=Path, help="the work directory")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    """Run ``status``: one summary line per stage."""
    from .. import pipeline

    for totals in pipeline.stage_status(args.work):
        print(format_summary(totals))
