"""``pose``: the COCO-17 pose check into WORK/pose."""

from __future__ import annotations

import argparse
from typing import Any

from gadms_utils.cli_types import positive_int

from ..pose import PoseThresholds
from .common import (
    SPEC_HELP,
    add_settings_options,
    engine_from_args,
    settings_from_args,
    stage_options,
    stage_parser,
)

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> None:
    """Register ``pose``."""
    p = stage_parser(
        subparsers,
        "pose",
        "pose integrity check into WORK/pose",
        "COCO-17 keypoints per crop; keep crops with enough visible keypoints, a hip and head points.",
        retry_errors=True,
        engine="model",
    )
    p.add_argument("--pose-model", default="transformers=usyd-community/vitpose-base-simple", help=SPEC_HELP)
    add_settings_options(p, PoseThresholds)
    p.add_argument("--batch-size", type=positive_int, default=32, help="crops per pose-model call")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run ``pose``; returns the stage manifest."""
    from .. import backends, pipeline
    from ..engines import Deferred

    thresholds = settings_from_args(PoseThresholds, args)
    spec = backends.parse_spec(args.pose_model, "--pose-model")
    backends.check_kind(spec, "--pose-model")
    with engine_from_args(args) as engine:  # the pose model is loaded where the shards run
        return pipeline.run_pose(
            args.work,
            Deferred(backends.make_pose, (spec,)),
            thresholds,
            batch_size=args.batch_size,
            engine=engine,
            **stage_options(args),
        )
