"""``filter``: caption rules into WORK/filter."""

from __future__ import annotations

import argparse
from typing import Any

from ..caption_filter import CaptionFilter, FilterRules
from .common import add_settings_options, engine_from_args, settings_from_args, stage_options, stage_parser

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> None:
    """Register ``filter``."""
    p = stage_parser(
        subparsers,
        "filter",
        "caption rules into WORK/filter",
        "Reject captions by length, speculation, identity/emotion, background, meta talk, duplicates.",
        engine="cpu",
    )
    add_settings_options(p, FilterRules)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run ``filter``; returns the stage manifest."""
    from .. import pipeline

    caption_filter = CaptionFilter(settings_from_args(FilterRules, args))
    with engine_from_args(args) as engine:
        return pipeline.run_filter(args.work, caption_filter, engine=engine, **stage_options(args))
