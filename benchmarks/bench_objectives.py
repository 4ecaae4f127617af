"""One optimizer step of the `gadms` vs the `irra` recipe of `GADMSForPreTraining` on the same ViT-B/16 model.

Random weights, 384x128 input, batch 8, CPU, Adam. Both objectives run in one process with interleaved
repetitions (the order alternates); each figure is the median over repetitions after one warm-up step each.
`gass_share` is the share of the GA-DMS step spent computing GASS scores (timed around `gass_scores`).
The IRRA step here has no identity classifier (pretraining data has no closed identity set); it is
SDM + random-MLM through the same decoder. Target: gadms_over_irra <= 1.25.

Usage: python benchmarks/bench_objectives.py [--repeats N] [--batch B]
The last line printed is a JSON object: {"gadms_over_irra": ..., "gass_share": ..., ...}.
"""

import argparse
import json
import statistics
import time

import torch

import modeling_gadms.objectives as objectives
from modeling_gadms import GADMSConfig, GADMSForPreTraining, GADMSObjectiveConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()

    torch.manual_seed(0)
    model = GADMSForPreTraining(GADMSConfig()).train()  # ViT-B/16 at 384x128, CLIP text tower, 4-layer decoder
    recipes = {name: GADMSObjectiveConfig(recipe=name) for name in ("gadms", "irra")}
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-5, eps=1e-3, weight_decay=4e-5)
    batch = args.batch
    ids = torch.randint(1, 49405, (batch, 77))
    ids[:, 0] = 49406
    lengths = torch.randint(12, 60, (batch,))
    for row, eos in enumerate(lengths.tolist()):
        ids[row, eos], ids[row, eos + 1:] = 49407, 0
    mask = (torch.arange(77)[None] <= lengths[:, None]).long()
    pixels = torch.randn(batch, 3, 384, 128)
    person_ids = torch.arange(batch) // 2  # two captions per person, as in WebPerson

    gass_time = []
    original = objectives.gass_scores

    def timed_gass(*a, **k):
        start = time.perf_counter()
        out = original(*a, **k)
        gass_time.append(time.perf_counter() - start)
        return out

    objectives.gass_scores = timed_gass

    def step(objective: str) -> float:
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        model.objective = recipes[objective]
        out = model(input_ids=ids, pixel_values=pixels, attention_mask=mask, person_ids=person_ids)
        out.loss.backward()
        optimizer.step()
        return time.perf_counter() - start

    step("gadms"), step("irra")  # warm-up
    gass_time.clear()
    times = {"gadms": [], "irra": []}
    for repeat in range(args.repeats):
        for objective in (("gadms", "irra") if repeat % 2 == 0 else ("irra", "gadms")):
            times[objective].append(step(objective))
    objectives.gass_scores = original
    median = {k: statistics.median(v) for k, v in times.items()}
    gass = statistics.median(gass_time)
    for name, value in median.items():
        print(f"{name:6s} step median {value:7.2f} s  ({batch / value:5.2f} samples/s)")
    print(f"GASS   median {gass:7.2f} s")
    print(json.dumps({
        "gadms_over_irra": round(median["gadms"] / median["irra"], 4),
        "gass_share": round(gass / median["gadms"], 4),
        "gadms_step_s": round(median["gadms"], 3),
        "irra_step_s": round(median["irra"], 3),
        "batch": batch,
        "repeats": args.repeats,
        "threads": torch.get_num_threads(),
    }))


if __name__ == "__main__":
    main()
