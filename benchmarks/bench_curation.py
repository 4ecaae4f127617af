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

With ``--engine ray``, first (before pinning to one core) the plumbing pipeline runs on a local Ray
with 2 CPUs (detect, pose, caption and filter on 2 actors; ingest and export in this process) and on
the local engine, on the same 2 cores, after a warm-up run of each (Ray's start and the actors' start,
once per stage command, are not timed): ``ray_plumbing_images_per_s``,
``local_plumbing_images_per_s_2cores`` and their ratio ``ray_over_local`` (target >= 0.7: the Ray
engine's overhead stays small).

Usage: python benchmarks/bench_curation.py [--images N] [--tiny-images N] [--engine local|ray]
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
    pool: Path, work: Path, detector, detection, pose, pose_rules, captioners, caption_filter, engine=None
) -> tuple[float, dict]:
    start = time.perf_counter()
    ingest(folder_source(pool), work, shard_size=250, workers=1, progress=False)
    run_detect(work, detector, detection, progress=False, engine=engine)
    run_pose(work, pose, pose_rules, progress=False, engine=engine)
    run_caption(work, captioners, load_bank(), progress=False, engine=engine)
    run_filter(work, caption_filter, progress=False, engine=engine)
    stats = export(work, work.parent / f"{work.name}_out")
    return time.perf_counter() - start, stats


def _instant(pool: Path, work: Path, engine=None) -> tuple[float, dict]:
    from dataset_builders.webperson.detection import DetectionThresholds
    from dataset_builders.webperson.pose import PoseThresholds

    return _pipeline(
        pool,
        work,
        InstantDetector(),
        DetectionThresholds(),
        InstantPose(),
        PoseThresholds(),
        [InstantCaptioner("a"), InstantCaptioner("b")],
        CaptionFilter(),
        engine,
    )


def _ray_over_local(root: Path, images: int) -> dict:
    """Plumbing throughput on a local Ray with 2 CPUs and on the local engine (same cores, same pool)."""
    import ray

    from dataset_builders.webperson.engines import RayEngine, RayOptions

    pool, warm = root / "ray_pool", root / "ray_warm"
    write_test_pool(pool, persons=images, distractors=0, broken=False, seed=2)
    write_test_pool(warm, persons=10, distractors=0, broken=False, seed=3)
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    try:
        with RayEngine(RayOptions(actors=2)) as engine:
            _instant(warm, root / "ray_warm_work", engine)  # starts the actors
            ray_seconds, ray_stats = _instant(pool, root / "ray_work", engine)
    finally:
        ray.shutdown()
    _instant(warm, root / "local_warm_work")
    local_seconds, local_stats = _instant(pool, root / "local_work")
    if ray_stats["images"] != local_stats["images"]:
        raise RuntimeError(f"ray exported {ray_stats['images']} crops, local {local_stats['images']}")
    ray_rate, local_rate = images / ray_seconds, images / local_seconds
    print(
        f"plumbing on 2 cores: ray engine (2 actors) {ray_rate:.0f} images/s, local engine "
        f"{local_rate:.0f} images/s: ray/local = {ray_rate / local_rate:.2f}"
    )
    return {
        "ray_plumbing_images_per_s": round(ray_rate, 1),
        "local_plumbing_images_per_s_2cores": round(local_rate, 1),
        "ray_over_local": round(ray_rate / local_rate, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=1000, help="source images for the plumbing figure")
    parser.add_argument(
        "--tiny-images", type=int, default=100, help="source images for the tiny-model figure"
    )
    parser.add_argument(
        "--engine",
        choices=["local", "ray"],
        default="local",
        help="ray: also compare the Ray engine with the local one on 2 cores (ray_over_local)",
    )
    args = parser.parse_args()
    if args.images < 10 or args.tiny_images < 5:
        parser.error("--images must be >= 10 and --tiny-images >= 5")
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if args.engine == "ray":
            figures = _ray_over_local(root, args.images)  # before pinning: Ray's workers inherit it
        _pin_one_core()
        pool = root / "pool"
        write_test_pool(pool, persons=args.images, distractors=0, broken=False)
        warm = root / "warm"
        write_test_pool(warm, persons=10, distractors=0, broken=False)
        _instant(warm, root / "warm_work")
        seconds, stats = _instant(pool, root / "plumbing")
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
        json.dumps(
            {"plumbing_images_per_s": round(plumbing, 1), "tiny_models_images_per_s": round(tiny, 2), **figures}
        )
    )


if __name__ == "__main__":
    main()
