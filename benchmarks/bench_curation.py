"""Throughput of the WebPerson curation pipeline on one core.

Two figures, both in source images per second through every stage (ingest, detect, pose, caption,
filter, export), pinned to one core and one torch thread:

- ``plumbing_images_per_s``: detection, pose and captioning replaced by instant functions, so what is
  measured is the pipeline's own work: reading and hashing the source files, decoding, cropping, JPEG
  encoding, parquet shards, rejection logs, done markers, manifests and the export (target >= 200).
- ``tiny_models_images_per_s``: the same with the tiny random models of each default backend's real
  class (RT-DETR, ViTPose, LLaVA; :mod:`dataset_builders.webperson.testing`): the cost of running
  transformers models through the pipeline, not a forecast for real models on a GPU.

The source pool: 480 x 320 JPEG scenes, each with a synthetic person pasted in (made before timing).

Usage: python benchmarks/bench_curation.py [--images N] [--tiny-images N]
The last line printed is a JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from dataset_builders.webperson.caption_filter import CaptionFilter, FilterRules  # noqa: E402
from dataset_builders.webperson.detection import TransformersDetector  # noqa: E402
from dataset_builders.webperson.export import export  # noqa: E402
from dataset_builders.webperson.ingest import ingest  # noqa: E402
from dataset_builders.webperson.pipeline import run_caption, run_detect, run_filter, run_pose  # noqa: E402
from dataset_builders.webperson.pose import TransformersPoseEstimator  # noqa: E402
from dataset_builders.webperson.sources import folder_source  # noqa: E402
from dataset_builders.webperson.template_bank import load_bank  # noqa: E402
from dataset_builders.webperson.testing import (  # noqa: E402
    PERMISSIVE_DETECTION,
    PERMISSIVE_POSE,
    InstantCaptioner,
    InstantDetector,
    InstantPose,
    tiny_detector,
    tiny_pose,
    tiny_vlm,
    write_test_pool,
)
from dataset_builders.webperson.vlm import TransformersCaptioner  # noqa: E402


def _pin_one_core() -> None:
    torch.set_num_threads(1)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})


def _pipeline(
    pool: Path, work: Path, detector, detection, pose, pose_rules, captioners, caption_filter
) -> tuple[float, dict]:
    start = time.perf_counter()
    ingest(folder_source(pool), work, shard_size=250, workers=1, progress=False)
    run_detect(work, detector, detection, progress=False)
    run_pose(work, pose, pose_rules, progress=False)
    run_caption(work, captioners, load_bank(), progress=False)
    run_filter(work, caption_filter, progress=False)
    stats = export(work, work.parent / f"{work.name}_out")
    return time.perf_counter() - start, stats


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=1000, help="source images for the plumbing figure")
    parser.add_argument(
        "--tiny-images", type=int, default=100, help="source images for the tiny-model figure"
    )
    args = parser.parse_args()
    if args.images < 10 or args.tiny_images < 5:
        parser.error("--images must be >= 10 and --tiny-images >= 5")
    _pin_one_core()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        pool = root / "pool"
        write_test_pool(pool, persons=args.images, distractors=0, broken=False)
        from dataset_builders.webperson.detection import DetectionThresholds
        from dataset_builders.webperson.pose import PoseThresholds

        warm = root / "warm"
        write_test_pool(warm, persons=10, distractors=0, broken=False)
        _pipeline(
            warm,
            root / "warm_work",
            InstantDetector(),
            DetectionThresholds(),
            InstantPose(),
            PoseThresholds(),
            [InstantCaptioner("a"), InstantCaptioner("b")],
            CaptionFilter(),
        )
        seconds, stats = _pipeline(
            pool,
            root / "plumbing",
            InstantDetector(),
            DetectionThresholds(),
            InstantPose(),
            PoseThresholds(),
            [InstantCaptioner("a"), InstantCaptioner("b")],
            CaptionFilter(),
        )
        plumbing = args.images / seconds
        print(
            f"plumbing (instant detector, pose, captioners): {args.images} images in {seconds:.2f} s = "
            f"{plumbing:.0f} images/s on one core; {stats['images']} crops exported"
        )

        tiny_pool = root / "tiny_pool"
        write_test_pool(tiny_pool, persons=args.tiny_images, distractors=0, broken=False, seed=1)
        det_model, det_processor = tiny_detector()
        pose_model, pose_processor = tiny_pose()
        captioners = [
            TransformersCaptioner(*tiny_vlm(seed), max_new_tokens=16, batch_size=8) for seed in (0, 1)
        ]
        seconds, stats = _pipeline(
            tiny_pool,
            root / "tiny",
            TransformersDetector(det_model, det_processor),
            PERMISSIVE_DETECTION,
            TransformersPoseEstimator(pose_model, pose_processor),
            PERMISSIVE_POSE,
            captioners,
            CaptionFilter(FilterRules(min_words=1)),
        )
        tiny = args.tiny_images / seconds
        print(
            f"tiny real model classes (RT-DETR, ViTPose, 2x LLaVA, 16 new tokens): "
            f"{args.tiny_images} images in "
            f"{seconds:.2f} s = {tiny:.1f} images/s on one core; {stats['images']} crops exported"
        )
    print(
        json.dumps({"plumbing_images_per_s": round(plumbing, 1), "tiny_models_images_per_s": round(tiny, 2)})
    )


if __name__ == "__main__":
    main()
