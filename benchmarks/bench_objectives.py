"""One optimizer step of the `gadms` vs the `irra` recipe of `GADMSForPreTraining`, each as training runs it.

Random weights, ViT-B/16 at 384x128 with the CLIP text tower and the 4-layer MTP decoder, batch 8, captions
padded to 77 tokens (the training default, `text_padding: max_length`), CPU, Adam (the trainer's settings).
One model holds both heads; both recipes run in one process with interleaved repetitions (the order
alternates); each figure is the median over repetitions after one warm-up step each.

- `gadms` (pretraining) as `training/trainer.py` runs it: before the step the batch's GASS scores of its
  previous visit are read from a `ScoreBank` (`ScoreBank.from_config`, `bank.get(sample_index)`), they drive
  the dual masking, and after the forward the new scores are written back (`bank.pad`, `bank.update`); the
  masks draw from a per-step generator. The warm-up step fills the bank, so every timed step reads real
  scores (not the initial 0.85), and the bank's read and write are inside the timed step.
- `irra` (fine-tuning) as `training/finetune.py` runs it: the identity classifier is attached
  (`num_identities` = 11,003, the CUHK-PEDES training identities; `--num-identities` to change) and the
  identity loss is on with the preset's `id_loss_weight` (1.0 in both the paper and the released presets),
  with SDM on the clean caption and the random MLM through the decoder.

`gass_share` is the share of the GA-DMS step spent computing GASS scores (timed around `gass_scores`).
Target: gadms_over_irra <= 1.25.

Usage: python benchmarks/bench_objectives.py [--repeats N] [--batch B] [--preset paper|released]
The last line printed is a JSON object: {"gadms_over_irra": ..., "gass_share": ..., "score_bank": true,
"id_loss": true, ..., "load_avg": ...} (load_avg: the machine's 1-minute load average before the timing).
8 ViT-B/16 training steps: about 10 minutes on 2 CPU cores at a load average of ~7 (``--repeats 1``
for a shorter run).
"""

import argparse
import json
import os
import statistics
import time

import torch

import modeling_gadms.objectives as objectives
from modeling_gadms import GADMSConfig, GADMSForPreTraining, GADMSObjectiveConfig, ScoreBank

CUHK_PEDES_TRAIN_IDENTITIES = 11003


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--preset", default="paper", choices=["paper", "released"])
    parser.add_argument("--num-identities", type=int, default=CUHK_PEDES_TRAIN_IDENTITIES)
    args = parser.parse_args()

    torch.manual_seed(0)
    # ViT-B/16 at 384x128, CLIP text tower, 4-layer decoder, identity classifier
    model = GADMSForPreTraining(GADMSConfig(num_identities=args.num_identities)).train()
    recipes = {name: GADMSObjectiveConfig.from_preset(args.preset, recipe=name) for name in ("gadms", "irra")}
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-5, eps=1e-3, weight_decay=4e-5)
    batch = args.batch
    ids = torch.randint(1, 49405, (batch, 77))
    ids[:, 0] = 49406
    lengths = torch.randint(12, 60, (batch,))
    for row, eos in enumerate(lengths.tolist()):
        ids[row, eos], ids[row, eos + 1:] = 49407, 0
    mask = (torch.arange(77)[None] <= lengths[:, None]).long()
    pixels = torch.randn(batch, 3, 384, 128)
    # two captions per person (as in WebPerson and the benchmarks), ids spread over the classifier's range
    person_ids = (torch.arange(batch) // 2) * (args.num_identities // max(batch // 2, 1))
    sample_index = torch.arange(batch)
    bank = ScoreBank.from_config(model.config, num_samples=batch, objective=recipes["gadms"])

    gass_time = []
    original = objectives.gass_scores

    def timed_gass(*a, **k):
        start = time.perf_counter()
        out = original(*a, **k)
        gass_time.append(time.perf_counter() - start)
        return out

    objectives.gass_scores = timed_gass
    outputs = {}

    def step(objective: str, number: int) -> float:
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        model.objective = recipes[objective]
        if objective == "gadms":  # as the trainer: previous scores in, new scores out, masks from a step stream
            out = model(input_ids=ids, pixel_values=pixels, attention_mask=mask, person_ids=person_ids,
                        token_scores=bank.get(sample_index), generator=torch.Generator().manual_seed(number))
            bank.update(sample_index, bank.pad(out.token_scores))
        else:
            out = model(input_ids=ids, pixel_values=pixels, attention_mask=mask, person_ids=person_ids)
        out.loss.backward()
        optimizer.step()
        outputs[objective] = out
        return time.perf_counter() - start

    step("gadms", 0), step("irra", 0)  # warm-up; fills the score bank
    assert outputs["irra"].id_loss is not None and outputs["gadms"].token_scores is not None
    bank_filled = bool(bank.visited.all())
    gass_time.clear()
    load = os.getloadavg()[0]
    times = {"gadms": [], "irra": []}
    for repeat in range(args.repeats):
        for objective in (("gadms", "irra") if repeat % 2 == 0 else ("irra", "gadms")):
            times[objective].append(step(objective, repeat + 1))
    objectives.gass_scores = original
    median = {k: statistics.median(v) for k, v in times.items()}
    gass = statistics.median(gass_time)
    for name, value in median.items():
        print(f"{name:6s} step median {value:7.2f} s  ({batch / value:5.2f} samples/s)")
    print(f"GASS   median {gass:7.2f} s")
    terms = {name: {k: round(float(getattr(out, k)), 4) for k in ("sdm_loss", "mtp_loss", "id_loss", "mlm_loss")
                    if getattr(out, k) is not None} for name, out in outputs.items()}
    print(json.dumps({
        "gadms_over_irra": round(median["gadms"] / median["irra"], 4),
        "gass_share": round(gass / median["gadms"], 4),
        "gadms_step_s": round(median["gadms"], 3),
        "irra_step_s": round(median["irra"], 3),
        "score_bank": True,
        "score_bank_filled": bank_filled,
        "id_loss": True,
        "id_loss_weight": recipes["irra"].id_loss_weight,
        "num_identities": args.num_identities,
        "preset": args.preset,
        "loss_terms": terms,
        "batch": batch,
        "repeats": args.repeats,
        "threads": torch.get_num_threads(),
        "load_avg": round(load, 2),
    }))


if __name__ == "__main__":
    main()
