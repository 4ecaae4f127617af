"""`make demo`: the project's main job on its embedded default data, on CPU.

1. generate the synthetic person set (WebPerson format, identity-disjoint train / validation / test);
2. pretrain a small GA-DMS from scratch with the GA-DMS objective: `accelerate launch training/pretrain.py
   --config configs/demo_cpu.yaml` (validation each epoch, best checkpoint on validation R@1);
3. reload the saved model with `AutoModel.from_pretrained`, show a text search over the test gallery, and print
   the test metrics of the final model.

4. measure whether the model's GASS token scores find the caption noise the synthetic set records: the
   noise-token AUC on the noisy test captions (docs/method.md section 13; 0.5 is chance).

The last line printed is a JSON object: {"R1", "R5", "R10", "mAP", "mINP", "gass_noise_auc", "seconds"}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(command: list[str]) -> None:
    print("$ " + " ".join(command), flush=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    subprocess.run(command, cwd=ROOT, env=env, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo_output", help="working folder (default: demo_output)")
    parser.add_argument("--identities", type=int, default=10000,
                        help="synthetic persons (default: 10000: 9,600 for training, 200 for validation, 200 for test)")
    parser.add_argument("--images-per-identity", type=int, default=2, help="pictures of each person (default: 2)")
    parser.add_argument("--test-persons", type=int, default=200,
                        help="held-out test persons, and as many validation persons (default: 200)")
    parser.add_argument("--config", default="configs/demo_cpu.yaml", help="training preset")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads for training")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="training config override, passed to pretrain.py")
    args = parser.parse_args()
    started = time.time()
    out = Path(args.out)
    data, run_dir = out / "data", out / "run"
    bin_dir = Path(sys.executable).parent

    from dataset_builders.synthetic import SyntheticPersonConfig, held_out_fractions, webperson_folder

    try:
        fractions = held_out_fractions(args.identities, args.test_persons)
    except ValueError as error:
        parser.error(f"--identities / --test-persons: {error}")
    synthetic = SyntheticPersonConfig(num_identities=args.identities, images_per_identity=args.images_per_identity,
                                      image_size=(64, 32), noise_rate=0.3, split_fractions=fractions, seed=0)
    print(f"synthetic person set ({args.identities} persons x {args.images_per_identity} pictures, 30% of "
          f"captions noisy) in {data}", flush=True)
    webperson_folder(synthetic, data)  # reused when it is already there
    shutil.rmtree(run_dir, ignore_errors=True)
    overrides = [item for o in args.overrides for item in ("--set", o)]
    run([str(bin_dir / "accelerate"), "launch", "--cpu", "--num_processes", "1", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", "--num_cpu_threads_per_process", str(args.threads),
         "training/pretrain.py", "--config", args.config, "--set", f"data={data}", "--output-dir", str(run_dir),
         *overrides])

    import torch
    from transformers import AutoModel, AutoProcessor

    import modeling_gadms  # noqa: F401
    from training.data import load_training_table

    model = AutoModel.from_pretrained(run_dir / "last").eval()
    processor = AutoProcessor.from_pretrained(run_dir / "last")
    test = load_training_table(str(data), "test")
    query = test[0]["caption1"]
    with torch.no_grad():
        gallery = model.get_image_features(processor(images=list(test["image"]))["pixel_values"], normalize=True)
        text = processor(text=[query])
        scores = (model.get_text_features(text["input_ids"], text["attention_mask"], normalize=True) @ gallery.t())[0]
    top = scores.topk(5)
    print(f"\nreloaded {run_dir / 'last'} with AutoModel; query: {query!r} (person {test[0]['person_id']})")
    for rank, (score, index) in enumerate(zip(top.values.tolist(), top.indices.tolist()), start=1):
        hit = "*" if test[index]["person_id"] == test[0]["person_id"] else " "
        print(f"  {rank}. person {test[index]['person_id']:4d} {hit} cosine {score:+.3f}")

    from evaluation import noise_token_auc_on_split

    auc = noise_token_auc_on_split(model, processor, test, method="gass-paper")
    print(f"\nGASS noise-token AUC on the {auc.captions} noisy test captions: {auc.auc:.3f} (0.5 is chance; "
          f"{auc.noise_tokens} noise vs {auc.clean_tokens} clean tokens)")

    results = json.loads((run_dir / "results.json").read_text())
    metrics = results["last"]
    print(f"\ntest identities: {len(set(test['person_id']))}, gallery {len(test)} images, "
          f"{2 * len(test)} caption queries; best validation epoch {results['best_epoch']}")
    print("  ".join(f"{k} {metrics[k]:6.2f}" for k in ("R1", "R5", "R10", "mAP", "mINP")))
    print(json.dumps({**{k: round(metrics[k], 2) for k in ("R1", "R5", "R10", "mAP", "mINP")},
                      "gass_noise_auc": round(auc.auc, 4), "seconds": round(time.time() - started, 1)}))


if __name__ == "__main__":
    main()
