"""Does GA-DMS beat its baseline on captions with known noise? The ablation of docs/method.md section 13.

The same small model (the `make demo` preset, configs/demo_cpu.yaml) is pretrained from scratch on the same
synthetic person set, with the same seeds and the same number of steps, under three objectives:

- `irra`: SDM on the clean caption + MLM with random 15% masking (the baseline);
- `random`: GA-DMS with uninformative scores: the dual masking is driven by each caption's GASS scores shuffled
  among its tokens (`mask_scores: shuffled`: the same masking rates, no information on which token is noise),
  which isolates what GASS adds;
- `gadms`: GA-DMS (the paper's objective).

Caption noise 0.3 and 0.5 (the share of captions with recorded noise). For each arm, noise level and seed:
test R@1 / mAP over all queries and over the noisy queries alone, and the noise-token AUC
(`evaluation.noise_tokens`) of GASS (paper and released variants) and of leave-one-token-out occlusion (what
the model itself knows) on the noisy test captions.

Usage:
    python benchmarks/bench_method.py            # 3 seeds x 2 noise levels x 3 arms
    python benchmarks/bench_method.py --quick    # 1 seed, noise 0.5, half the persons (5 minutes on 2 cores)

A full run trains each arm exactly as `make demo` trains its model: 2 epochs on 9,600 training persons x 2
pictures (1,200 steps of 64; the second epoch's masks come from the first epoch's GASS scores), with the demo
preset's temperature annealing (0.6 to 0.1); 200 persons are held out for validation (unused) and 200 for
test. Runs go two at a time in worker processes of one thread each on 2 cores (`--jobs`): about 5 minutes
a run, about 45 minutes for the 18 (2,609 s and 2,703 s measured on two days). `--quick` trains on 4,600
persons (574 steps): a smoke run whose models have only just left the initial contrastive plateau.

Each `gadms` / `random` run also reports how its GASS score bank ranked the noise of the noisy training
captions after each epoch and how often each view masked noise vs clean tokens (the trainer's `bank_*`
records), and every run the noise-token AUC of two oracle scores on the test captions
(`noise_token_auc_ceiling`): the ceiling of any token score on this data.

The last line printed is one JSON object: {"gain_r1", "gain_r1_noisy", "gass_noise_auc", "occlusion_noise_auc",
"random_scores_gain_r1", "seeds", "noise", ...}, where `gain_r1` is mean(gadms) - mean(irra) test R@1 at the
highest noise level, `random_scores_gain_r1` is mean(gadms) - mean(random) there, and `gass_noise_auc` the paper
variant's AUC of the `gadms` models there.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ARMS = {
    "irra": ["objective=irra"],
    "random": ["objective=gadms", "objective_overrides.mask_scores=shuffled"],
    "gadms": ["objective=gadms"],
}


def make_data(folder: Path, noise: float, identities: int, fractions: tuple[float, float, float],
              images_per_identity: int = 2, seed: int = 0) -> Path:
    """The synthetic person set at one noise level (written once; the same persons and pictures at every level)."""
    from dataset_builders.synthetic import SyntheticPersonConfig, webperson_folder

    return webperson_folder(SyntheticPersonConfig(num_identities=identities, images_per_identity=images_per_identity,
                                                  image_size=(64, 32), noise_rate=noise, split_fractions=fractions,
                                                  seed=seed), folder)


def train(arm: str, data: Path, seed: int, out: Path, config: str, epochs: int, max_steps: int | None,
          extra: list[str]) -> Path:
    """Pretrain one arm through the training command line (in this process); returns its `last/` model folder."""
    from training import pretrain

    argv = ["--config", config, "--output-dir", str(out), "--set", f"data={data}", "--set", f"seed={seed}",
            "--set", f"epochs={epochs}", "--set", "eval_split=null", "--set", "test_split=null",
            "--set", "log_every_steps=1000"] + (["--max-steps", str(max_steps)] if max_steps else [])
    for item in ARMS[arm] + extra:
        argv += ["--set", item]
    with contextlib.redirect_stdout(io.StringIO()):  # the run's own JSON line is not this benchmark's
        pretrain.main(argv)
    return out / "last"


def bank_history(run_dir: Path) -> list[dict]:
    """Per epoch, how the run's GASS score bank ranked the noise of its noisy training captions and how often
    the noise view masked noise and clean tokens with it (the trainer's `bank_*` records; none for `irra`)."""
    records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    return [{key[len("bank_"):]: value for key, value in r.items() if key.startswith("bank_")}
            | {"epoch": r["epoch"]} for r in records if "bank_auc" in r]


def measure(model_dir: Path, data: Path) -> dict:
    """Test retrieval (all queries, noisy queries) and noise-token AUCs of a trained model."""
    import torch
    from transformers import AutoModel, AutoProcessor

    import modeling_gadms  # noqa: F401  (registers the Auto classes)
    from dataset_builders.synthetic import ATTRIBUTE_WORDS
    from evaluation import (embed_images, embed_texts, noise_token_auc_ceiling, noise_token_auc_of,
                            noisy_captions, per_query_retrieval)
    from evaluation.metrics import summarize_per_query
    from training.data import load_training_table

    model = AutoModel.from_pretrained(model_dir).eval()
    processor = AutoProcessor.from_pretrained(model_dir)
    test = load_training_table(str(data), "test")
    texts, ids, noisy = [], [], []
    for row in test.select_columns(["caption1", "caption2", "caption1_clean", "caption2_clean", "person_id"]):
        for key in ("caption1", "caption2"):
            texts.append(row[key])
            ids.append(row["person_id"])
            noisy.append(row[key] != row[f"{key}_clean"])
    with torch.no_grad():
        gallery = embed_images(model, processor, list(test["image"]), progress=False)
        queries = embed_texts(model, processor, texts, progress=False)
    per_query = per_query_retrieval(queries, gallery, ids, list(test["person_id"]))
    noisy = torch.tensor(noisy)
    subset = type(per_query)(*(getattr(per_query, f)[noisy] for f in per_query.__dataclass_fields__))
    result = {"all": summarize_per_query(per_query), "noisy": summarize_per_query(subset),
              "noisy_queries": int(noisy.sum())}
    noisy_test = noisy_captions(test)  # decoded once for the three methods
    for method in ("gass-paper", "gass-released", "occlusion"):
        result[f"auc_{method}"] = noise_token_auc_of(model, processor, *noisy_test, method=method).auc
    ceiling = noise_token_auc_ceiling(processor, *noisy_test[1:], ATTRIBUTE_WORDS)
    result["auc_ceiling_words"], result["auc_ceiling_image_aware"] = ceiling["words"], ceiling["image_aware"]
    return result


def run_one(arm: str, noise: float, seed: int, data: Path, out: Path, config: str, epochs: int,
            max_steps: int | None, extra: list[str], threads: int) -> dict:
    """Train and measure one (arm, noise, seed) run; in this process or in a worker of the pool."""
    import torch

    torch.set_num_threads(threads)
    started = time.time()
    figures = measure(train(arm, data, seed, out, config, epochs, max_steps, extra), data)
    return {"arm": arm, "noise": noise, "seed": seed, **figures, "bank": bank_history(out),
            "seconds": round(time.time() - started, 1)}


def report(row: dict) -> None:
    bank = row["bank"][-1] if row["bank"] else None
    masks = (f" | bank AUC {bank['auc']:.3f}, noise view masks {bank['noise_view_noise']:.3f} of noise / "
             f"{bank['noise_view_clean']:.3f} of clean tokens") if bank else ""
    print(f"noise {row['noise']} seed {row['seed']} {row['arm']:6s}: R@1 {row['all']['R1']:5.2f} mAP "
          f"{row['all']['mAP']:5.2f} | noisy queries R@1 {row['noisy']['R1']:5.2f} | AUC gass "
          f"{row['auc_gass-paper']:.3f} / released {row['auc_gass-released']:.3f} / occlusion "
          f"{row['auc_occlusion']:.3f}{masks} | {row['seconds']:.0f} s", flush=True)


def mean(values) -> float:
    values = list(values)
    return statistics.fmean(values) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, noise 0.5 only")
    parser.add_argument("--seeds", default=None, help="comma-separated seeds (default: 0,1,2; quick: 0)")
    parser.add_argument("--noise", default=None, help="comma-separated noise levels (default: 0.3,0.5; quick: 0.5)")
    parser.add_argument("--arms", default="irra,random,gadms", help="which arms (default: %(default)s)")
    parser.add_argument("--identities", type=int, default=None,
                        help="synthetic persons, of which --test-persons test and as many validation (unused) "
                             "persons, the rest for training (default: 10000, as the demo; quick: 5000)")
    parser.add_argument("--test-persons", type=int, default=200, help="test persons (default: %(default)s)")
    parser.add_argument("--images-per-identity", type=int, default=2, help="pictures of each person (default: 2)")
    parser.add_argument("--epochs", type=int, default=2, help="training epochs per run (default: %(default)s)")
    parser.add_argument("--max-steps", type=int, default=None, help="stop each run after this many steps")
    parser.add_argument("--config", default="configs/demo_cpu.yaml", help="training preset (default: %(default)s)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="further training overrides for every arm")
    parser.add_argument("--jobs", type=int, default=None,
                        help="runs trained at once, each in its own process with threads / jobs torch threads "
                             "(default: 2 on 2 or more cores: two 1-thread runs of this small model get more "
                             "out of 2 cores than one 2-thread run; 1 runs everything in this process)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads in all")
    parser.add_argument("--work", default="bench_output/method", help="data and runs (default: %(default)s)")
    args = parser.parse_args()
    seeds = [int(s) for s in (args.seeds or ("0" if args.quick else "0,1,2")).split(",")]
    noises = [float(n) for n in (args.noise or ("0.5" if args.quick else "0.3,0.5")).split(",")]
    arms = args.arms.split(",")
    unknown = sorted(set(arms) - set(ARMS))
    if unknown:
        parser.error(f"unknown arm(s) {unknown}; choose from {sorted(ARMS)}")
    epochs, max_steps = args.epochs, args.max_steps
    args.identities = args.identities or (5000 if args.quick else 10000)
    jobs = args.jobs or (2 if args.threads >= 2 else 1)
    if jobs < 1 or args.threads < 1:
        parser.error("--jobs and --threads must be at least 1")
    threads = max(args.threads // jobs, 1)
    work = Path(args.work)
    from dataset_builders.synthetic import held_out_fractions

    try:
        fractions = held_out_fractions(args.identities, args.test_persons)
    except ValueError as error:
        parser.error(f"--identities / --test-persons: {error}")
    started = time.time()
    runs = []
    for noise in noises:
        folder = work / f"data_noise{noise}_{args.identities}x{args.images_per_identity}"
        data = make_data(folder, noise, args.identities, fractions, args.images_per_identity)
        runs += [(arm, noise, seed, data, work / f"run_{arm}_noise{noise}_seed{seed}", args.config, epochs,
                  max_steps, args.overrides, threads) for seed in seeds for arm in arms]
    rows = []
    if jobs == 1:
        for run in runs:
            rows.append(run_one(*run))
            report(rows[-1])
    else:  # independent runs in worker processes (spawned: no forked torch thread pools)
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            for future in as_completed([pool.submit(run_one, *run) for run in runs]):
                rows.append(future.result())
                report(rows[-1])
    order = {(arm, noise, seed): i for i, (arm, noise, seed, *_) in enumerate(runs)}
    rows.sort(key=lambda row: order[(row["arm"], row["noise"], row["seed"])])

    print("\n| noise | arm | R@1 | mAP | R@1 noisy queries | mAP noisy | GASS AUC (paper / released) | occlusion AUC |")
    print("|---|---|---|---|---|---|---|---|")
    table = {}
    for noise in noises:
        for arm in arms:
            runs = [r for r in rows if r["arm"] == arm and r["noise"] == noise]
            cell = {
                "R1": mean(r["all"]["R1"] for r in runs), "mAP": mean(r["all"]["mAP"] for r in runs),
                "R1_noisy": mean(r["noisy"]["R1"] for r in runs), "mAP_noisy": mean(r["noisy"]["mAP"] for r in runs),
                "auc_paper": mean(r["auc_gass-paper"] for r in runs),
                "auc_released": mean(r["auc_gass-released"] for r in runs),
                "auc_occlusion": mean(r["auc_occlusion"] for r in runs),
                "auc_ceiling_words": mean(r["auc_ceiling_words"] for r in runs),
                "auc_ceiling_image_aware": mean(r["auc_ceiling_image_aware"] for r in runs),
                "R1_per_seed": [round(r["all"]["R1"], 2) for r in runs],
            }
            table[(noise, arm)] = cell
            print(f"| {noise} | {arm} | {cell['R1']:.2f} | {cell['mAP']:.2f} | {cell['R1_noisy']:.2f} | "
                  f"{cell['mAP_noisy']:.2f} | {cell['auc_paper']:.3f} / {cell['auc_released']:.3f} | "
                  f"{cell['auc_occlusion']:.3f} |")

    print("\nGASS score bank on the noisy training captions, per epoch (mean over seeds): noise-token AUC, "
          "and the chance that the noise view / the MTP view masks a noise token vs a clean token")
    print("| noise | arm | epoch | bank AUC | noise view: noise / clean | MTP view: noise / clean |")
    print("|---|---|---|---|---|---|")
    banks = {}
    for noise in noises:
        for arm in arms:
            histories = [r["bank"] for r in rows if r["arm"] == arm and r["noise"] == noise and r["bank"]]
            for epoch in range(min((len(h) for h in histories), default=0)):
                cell = {key: mean(h[epoch][key] for h in histories) for key in
                        ("auc", "noise_view_noise", "noise_view_clean", "mtp_view_noise", "mtp_view_clean")}
                banks.setdefault((noise, arm), []).append(cell)
                print(f"| {noise} | {arm} | {epoch + 1} | {cell['auc']:.3f} | "
                      f"{cell['noise_view_noise']:.3f} / {cell['noise_view_clean']:.3f} | "
                      f"{cell['mtp_view_noise']:.3f} / {cell['mtp_view_clean']:.3f} |")
    top = max(noises)
    ceiling = {key: round(mean(r[f"auc_ceiling_{key}"] for r in rows if r["noise"] == top), 4)
               for key in ("words", "image_aware")}
    print(f"\nNoise-token AUC of oracle scores on the noisy test captions at noise {top}: "
          f"{ceiling['words']:.3f} for scores that know which words describe the person, "
          f"{ceiling['image_aware']:.3f} if they also see which described colour is wrong "
          "(the ceiling of a token score; 0.5 is chance)")

    def gain(arm_a: str, arm_b: str, key: str = "R1") -> float | None:
        if (top, arm_a) not in table or (top, arm_b) not in table:
            return None
        return round(table[(top, arm_a)][key] - table[(top, arm_b)][key], 2)

    per_seed = {}
    if "gadms" in arms and "irra" in arms:
        for seed in seeds:
            r = {row["arm"]: row["all"]["R1"] for row in rows if row["noise"] == top and row["seed"] == seed}
            per_seed[seed] = round(r["gadms"] - r["irra"], 2)
    gadms = table.get((top, "gadms"), {})
    summary = {
        "gain_r1": gain("gadms", "irra"),
        "gain_r1_noisy": gain("gadms", "irra", "R1_noisy"),
        "gain_r1_per_seed": per_seed,
        "gain_same_sign_every_seed": bool(per_seed) and len({v > 0 for v in per_seed.values()}) == 1,
        "gass_noise_auc": round(gadms["auc_paper"], 4) if gadms else None,
        "gass_noise_auc_released": round(gadms["auc_released"], 4) if gadms else None,
        "occlusion_noise_auc": round(gadms["auc_occlusion"], 4) if gadms else None,
        "random_scores_gain_r1": gain("gadms", "random"),
        "noise_auc_ceiling": ceiling,
        "bank_noise_auc_per_epoch": [round(cell["auc"], 4) for cell in banks.get((top, "gadms"), [])],
        "noise_view_masks_noise_vs_clean": (
            [round(banks[(top, "gadms")][-1][key], 4) for key in ("noise_view_noise", "noise_view_clean")]
            if (top, "gadms") in banks else None),
        "seeds": seeds,
        "noise": noises,
        "epochs": epochs,
        "max_steps": max_steps,
        "runs": {f"{noise}/{arm}": {k: (round(v, 4) if isinstance(v, float) else v) for k, v in cell.items()}
                 for (noise, arm), cell in table.items()},
        "jobs": jobs,
        "threads_per_job": threads,
        "seconds": round(time.time() - started, 1),
        "load_avg": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(_json_safe(summary)))


def _json_safe(value):
    """`value` with every NaN (an AUC over no noisy caption, e.g. at noise 0) as null: strict JSON."""
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return None if isinstance(value, float) and math.isnan(value) else value


if __name__ == "__main__":
    main()
