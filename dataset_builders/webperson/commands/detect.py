"""``detect``: person boxes and crops into WORK/detect."""

from __future__ import annotations

import argparse
from typing import Any

from gadms_utils.cli_types import positive_int

from ..detection import DetectionThresholds
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
    """Register ``detect``."""
    p = stage_parser(
        subparsers,
        "detect",
        "person boxes and crops into WORK/detect",
        "Detect persons; keep boxes by the thresholds of docs/method.md section 9.2 (all configurable); crop.",
        retry_errors=True,
        engine="model",
    )
    p.add_argument("--detector", default="transformers=PekingU/rtdetr_r50vd_coco_o365", help=SPEC_HELP)
    add_settings_options(p, DetectionThresholds)
    p.add_argument("--batch-size", type=positive_int, default=16, help="images per detector call")
    p.add_argument("--jpeg-quality", type=positive_int, default=95, help="JPEG quality of the crops")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run ``detect``; returns the stage manifest."""
    from .. import backends, pipeline
    from ..engines import Deferred

    thresholds = settings_from_args(DetectionThresholds, args)
    spec = backends.parse_spec(args.detector, "--detector")
    backends.check_kind(spec, "--detector")
    with engine_from_args(args) as engine:  # the detector is loaded where the shards run
        return pipeline.run_detect(
            args.work,
            Deferred(backends.make_detector, (spec,)),
            thresholds,
            batch_size=args.batch_size,
            jpeg_quality=args.jpeg_quality,
            engine=engine,
            **stage_options(args),
        )
