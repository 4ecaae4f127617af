"""Generation speed of the synthetic person data set on one core.

Measures ``generate_records`` (drawing the 384 x 128 images and their two captions, noise included)
pinned to one thread, no multiprocessing: that is the headline ``images_per_s`` (target >= 300).
Also reports, for information, the throughput of writing both formats (JPEG encoding and files
included) and the rate at another image size.

Usage: python benchmarks/bench_synthetic.py [--images N] [--image-size HxW]
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dataset_builders.synthetic import (  # noqa: E402
    SyntheticPersonConfig, generate_records, write_cuhk_pedes, write_webperson,
)


def _pin_one_thread() -> None:
    try:
        import torch
    except ImportError:  # the generator does not use torch; pinning it only keeps the figure honest
        return
    torch.set_num_threads(1)


def _rate(config: SyntheticPersonConfig) -> float:
    start = time.perf_counter()
    count = sum(1 for _ in generate_records(config))
    return count / (time.perf_counter() - start)


def _write_rate(writer, config: SyntheticPersonConfig) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        writer(config, Path(tmp) / "out")
        return config.num_images / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000, help="images to generate per measurement")
    parser.add_argument("--image-size", default="384x128", help="HEIGHTxWIDTH of the measured images")
    args = parser.parse_args()
    if args.images < 10:
        parser.error("--images must be at least 10")
    height, width = (int(v) for v in args.image_size.lower().split("x"))
    _pin_one_thread()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    identities = max(10, args.images // 4)
    config = SyntheticPersonConfig(num_identities=identities, images_per_identity=4,
                                   image_size=(height, width), noise_rate=0.3)
    warm_up = SyntheticPersonConfig(num_identities=10, images_per_identity=2, image_size=(height, width))
    _rate(warm_up)
    images_per_s = _rate(config)
    print(f"generate_records {height}x{width}: {images_per_s:.0f} images/s on one core "
          f"({config.num_images} images)")
    small = SyntheticPersonConfig(num_identities=identities, images_per_identity=4, image_size=(96, 32))
    small_rate = _rate(small)
    print(f"generate_records 96x32: {small_rate:.0f} images/s")
    write_config = SyntheticPersonConfig(num_identities=max(10, identities // 4), images_per_identity=4,
                                         image_size=(height, width))
    webperson = _write_rate(write_webperson, write_config)
    cuhk = _write_rate(write_cuhk_pedes, write_config)
    print(f"write_webperson: {webperson:.0f} images/s, write_cuhk_pedes: {cuhk:.0f} images/s "
          f"({write_config.num_images} images, JPEG q{write_config.jpeg_quality})")
    print(json.dumps({
        "images_per_s": round(images_per_s, 1),
        "image_size": [height, width],
        "images": config.num_images,
        "images_per_s_96x32": round(small_rate, 1),
        "write_webperson_images_per_s": round(webperson, 1),
        "write_cuhk_pedes_images_per_s": round(cuhk, 1),
        "threads": 1,
    }))


if __name__ == "__main__":
    main()
