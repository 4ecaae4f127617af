"""Embedding throughput of GADMSModel vs transformers' CLIPModel doing the same work, at 224x224 and 384x128.

ViT-B/16 shape (random weights; ``--vision-layers`` sets the depth, 12 by default as ViT-B/16), CLIP text
tower, batch 8, CPU, float32, the same threads. Per resolution the two models hold the same weights and
get the same inputs (the outputs are checked equal, ``*_max_abs_diff``):

- 224x224: a ``CLIPModel`` and ``convert_clip_model`` of it.
- 384x128 (height x width, the resolution GA-DMS runs at): ``convert_clip_model(..., image_size=(384, 128))``
  (its position table is resized once to the 24 x 8 patch grid), and a copy of the ``CLIPModel`` holding
  that same 193-entry position table. transformers' CLIP cannot take a non-square input without
  ``interpolate_pos_encoding=True``, which resizes its square table on every call; so that the two do the
  same work, the copy's ``interpolate_pos_encoding`` is replaced by the plain table lookup (everything else
  in its forward is transformers' own). What the per-call interpolation would cost CLIP is timed as well
  (``clip_interpolation_ms``: transformers' bicubic resize of a 14 x 14 table to 24 x 8, once per call).
- Text: the same captions through the text towers of each pair (the text tower does not depend on the
  image size; it is timed with both pairs).

All tasks are timed in one process with interleaved repetitions (the order alternates); each figure is
the median over repetitions after a warm-up. A ratio is CLIP time / ours time (>= 1.0: ours is not
slower; target >= 0.98).

Usage: python benchmarks/bench_encode.py [--repeats N] [--batch B] [--vision-layers L] [--quick]
The last line printed is a JSON object: {"image_ratio_224", "text_ratio_224", "image_ratio_384x128",
"text_ratio_384x128", ..., "load_avg"} (load_avg: the machine's 1-minute load average before the timing).
About 2-3 minutes on 2 idle CPU cores, 11 minutes at a load average of 9 (``--quick``: 6 vision
layers, 5 repeats).
"""

import argparse
import copy
import json
import os
import statistics
import time

import torch
from transformers import CLIPConfig, CLIPModel

from modeling_gadms.convert import convert_clip_model


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def clip_with_table(clip: CLIPModel, table: torch.Tensor) -> CLIPModel:
    """A copy of `clip` whose vision position table is `table` (1 + patches rows), looked up as is."""
    other = copy.deepcopy(clip)
    embeddings = other.vision_model.embeddings
    embeddings.position_embedding = torch.nn.Embedding.from_pretrained(table.detach().clone(), freeze=False)
    embeddings.num_positions = embeddings.num_patches = table.shape[0]
    embeddings.register_buffer("position_ids", torch.arange(table.shape[0]).expand((1, -1)), persistent=False)
    # transformers resizes the table on every call of a non-square input; here it is already the grid's
    embeddings.interpolate_pos_encoding = lambda embeds, height, width: embeddings.position_embedding(
        embeddings.position_ids
    )
    return other


def interpolation_cost(clip: CLIPModel, height: int, width: int, repeats: int) -> float:
    """Median seconds of transformers' own per-call resize of CLIP's square table to a height x width grid."""
    embeddings = clip.vision_model.embeddings
    tokens = torch.zeros(1, 1 + (height // 16) * (width // 16), embeddings.embed_dim)
    with torch.inference_mode():
        runs = [timed(lambda: embeddings.interpolate_pos_encoding(tokens, height, width)) for _ in range(repeats)]
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--vision-layers", type=int, default=12)
    parser.add_argument("--quick", action="store_true", help="6 vision layers, 5 repeats")
    args = parser.parse_args()
    if args.quick:
        args.vision_layers, args.repeats = 6, 5

    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={"eos_token_id": 49407, "bos_token_id": 49406},
        vision_config={"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": args.vision_layers,
                       "num_attention_heads": 12, "image_size": 224, "patch_size": 16},
        projection_dim=512,
    )
    clip = CLIPModel(config).eval()
    ours = {"224": convert_clip_model(clip, image_size=None).eval(),
            "384x128": convert_clip_model(clip, image_size=(384, 128)).eval()}
    table = ours["384x128"].vision_model.embeddings.position_embedding.weight
    clips = {"224": clip, "384x128": clip_with_table(clip, table).eval()}
    for model in (*ours.values(), *clips.values()):
        assert model.config._attn_implementation == clip.config._attn_implementation

    pixels = {"224": torch.randn(args.batch, 3, 224, 224), "384x128": torch.randn(args.batch, 3, 384, 128)}
    interpolate = {"224": False, "384x128": True}
    ids = torch.randint(1, 49404, (args.batch, 77))
    ids[:, 0], ids[:, 20], ids[:, 21:] = 49406, 49407, 0
    mask = (ids != 0).long()
    mask[:, 0] = 1

    def clip_image(size):
        return lambda: clips[size].get_image_features(
            pixel_values=pixels[size], interpolate_pos_encoding=interpolate[size]).pooler_output

    def ours_image(size):
        return lambda: ours[size].get_image_features(pixels[size])

    def clip_text(size):
        return lambda: clips[size].get_text_features(input_ids=ids, attention_mask=mask).pooler_output

    def ours_text(size):
        return lambda: ours[size].get_text_features(ids, mask)

    tasks, diffs = {}, {}
    with torch.inference_mode():
        for size in ("224", "384x128"):
            tasks.update({f"clip_image_{size}": clip_image(size), f"ours_image_{size}": ours_image(size),
                          f"clip_text_{size}": clip_text(size), f"ours_text_{size}": ours_text(size)})
            diffs[f"image_max_abs_diff_{size}"] = float((clip_image(size)() - ours_image(size)()).abs().max())
            diffs[f"text_max_abs_diff_{size}"] = float((clip_text(size)() - ours_text(size)()).abs().max())
        load = os.getloadavg()[0]
        for fn in tasks.values():  # warm-up
            fn()
        times = {name: [] for name in tasks}
        for repeat in range(args.repeats):
            order = list(tasks) if repeat % 2 == 0 else list(reversed(tasks))  # no systematic order bias
            for name in order:
                times[name].append(timed(tasks[name]))
    interp = interpolation_cost(clip, 384, 128, 25)
    median = {name: statistics.median(values) for name, values in times.items()}
    for name, value in median.items():
        print(f"{name:22s} median {value * 1000:8.1f} ms  ({args.batch / value:7.1f} samples/s)")
    print(f"transformers' per-call position interpolation (14x14 -> 24x8): {interp * 1000:.2f} ms")
    result = {}
    for size in ("224", "384x128"):
        for kind in ("image", "text"):
            result[f"{kind}_ratio_{size}"] = round(median[f"clip_{kind}_{size}"] / median[f"ours_{kind}_{size}"], 4)
    result.update({
        **diffs,
        **{f"{name}_ms": round(value * 1000, 2) for name, value in median.items()},
        "clip_interpolation_ms": round(interp * 1000, 3),
        "batch": args.batch,
        "repeats": args.repeats,
        "vision_layers": args.vision_layers,
        "threads": torch.get_num_threads(),
        "load_avg": round(load, 2),
    })
    print(json.dumps(result))


if __name__ == "__main__":
    main()
