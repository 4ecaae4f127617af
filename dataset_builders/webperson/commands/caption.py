"""``caption``: two VLM captions per crop into WORK/caption."""

from __future__ import annotations

import argparse
from typing import Any

from gadms_utils.cli_types import non_negative_int, positive_int

from .common import SPEC_HELP, engine_from_args, stage_options, stage_parser

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> None:
    """Register ``caption``."""
    p = stage_parser(
        subparsers,
        "caption",
        "two VLM captions per crop into WORK/caption",
        "Caption each crop twice: the instruction of docs/method.md section 9.5 plus a randomly drawn template.",
        retry_errors=True,
        engine="model",
    )
    p.add_argument(
        "--captioner",
        action="append",
        required=True,
        metavar="SPEC",
        help="give once (two samplings) or twice (caption1, caption2); " + SPEC_HELP,
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
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run ``caption``; returns the stage manifest."""
    from .. import backends, pipeline
    from ..engines import Deferred
    from ..template_bank import load_bank

    if len(args.captioner) > 2:
        raise ValueError(f"--captioner: give it once or twice, got {len(args.captioner)}")
    bank = load_bank(args.templates)
    specs = [backends.parse_spec(s, "--captioner") for s in args.captioner]
    for spec in specs:
        backends.check_kind(spec, "--captioner")
    with engine_from_args(args) as engine:  # the captioners are made where the shards run
        return pipeline.run_caption(
            args.work,
            [Deferred(backends.make_captioner, (spec,)) for spec in specs],
            bank,
            seed=args.seed,
            max_words=args.max_words,
            batch_size=args.batch_size,
            from_stage=args.from_stage,
            engine=engine,
            **stage_options(args),
        )
