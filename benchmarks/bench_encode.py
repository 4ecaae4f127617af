"""Embedding throughput of GADMSModel vs transformers' CLIPModel with identical weights and resolution.

ViT-B/16 shape (random weights), 224x224 input for both (CLIPModel only takes square inputs without
re-interpolating its positions on every call), batch 8, CPU. The two models are timed in one process with
interleaved repetitions; each figure is the median over repetitions. Ratios are throughput ours / CLIP
(>= 0.95 is the target; 1.0 means equal speed).

Usage: python benchmarks/bench_encode.py [--repeats N] [--batch B]
The last line printed is a JSON object: {"image_ratio": ..., "text_ratio": ..., ...}.
"""

import argparse
import json
import statistics
import time

import torch
from transformers import CLIPConfig, CLIPModel

from modeling_gadms.convert import convert_clip_model


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()

    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={"eos_token_id": 49407, "bos_token_id": 49406},
        vision_config={"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                       "num_attention_heads": 12, "image_size": 224, "patch_size": 16},
        projection_dim=512,
    )
    clip = CLIPModel(config).eval()
    ours = convert_clip_model(clip, image_size=None).eval()
    assert clip.config._attn_implementation == ours.config._attn_implementation

    pixels = torch.randn(args.batch, 3, 224, 224)
    ids = torch.randint(1, 49404, (args.batch, 77))
    ids[:, 0], ids[:, 20], ids[:, 21:] = 49406, 49407, 0
    mask = (ids != 0).long()
    mask[:, 0] = 1

    with torch.inference_mode():
        diff_img = (clip.get_image_features(pixel_values=pixels).pooler_output - ours.get_image_features(pixels)).abs().max()
        diff_txt = (clip.get_text_features(input_ids=ids, attention_mask=mask).pooler_output
                    - ours.get_text_features(ids, mask)).abs().max()
        tasks = {
            "clip_image": lambda: clip.get_image_features(pixel_values=pixels),
            "ours_image": lambda: ours.get_image_features(pixels),
            "clip_text": lambda: clip.get_text_features(input_ids=ids, attention_mask=mask),
            "ours_text": lambda: ours.get_text_features(ids, mask),
        }
        for fn in tasks.values():  # warm-up
            fn()
        times = {name: [] for name in tasks}
        for repeat in range(args.repeats):
            order = list(tasks) if repeat % 2 == 0 else list(reversed(tasks))  # no systematic first/second bias
            for name in order:
                times[name].append(timed(tasks[name]))
    median = {name: statistics.median(values) for name, values in times.items()}
    for name, value in median.items():
        print(f"{name:11s} median {value * 1000:8.1f} ms  ({args.batch / value:7.1f} samples/s)")
    result = {
        "image_ratio": round(median["clip_image"] / median["ours_image"], 4),
        "text_ratio": round(median["clip_text"] / median["ours_text"], 4),
        "image_max_abs_diff": float(diff_img),
        "text_max_abs_diff": float(diff_txt),
        "batch": args.batch,
        "repeats": args.repeats,
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
