"""Where a `make demo` training step goes: `torch.profiler` over the demo's GA-DMS step, part by part.

Builds the demo's model from `configs/demo_cpu.yaml` (the tiny towers, the GA-DMS objective) on a small synthetic
person set generated here (the demo's image size and caption noise), wraps it in the same `Trainer` the demo
runs, and profiles `--steps` training steps after `--warmup` untimed ones (which also fill the score bank, so
the masks come from real scores). Each part of the step is a `torch.profiler.record_function` range, timed on
the CPU (inclusive of what it calls):

- `data`: the next batch from the data loader (decode, transforms, tokenisation, collation);
- `vision tower`, `text tower (noise view)`, `text tower (MTP view)`: the encoders' forward passes;
- `dual masking`, `SDM loss`, `MTP decoder`, `GASS scores`: the rest of the objective's forward;
- `backward`, `optimizer`: `loss.backward()` and the Adam step (with the scheduler and `zero_grad`);
- `score bank`: reading the previous scores and writing the new ones.

Usage: python benchmarks/profile_demo_step.py [--steps 40] [--threads 2] [--config configs/demo_cpu.yaml]
                                              [--set KEY=VALUE ...]
The last line printed is a JSON object: {"ms_per_step": ..., "<part>": ms a step, ..., "threads": ...,
"load_avg": ...} (load_avg: the machine's 1-minute load average before profiling).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile, record_function  # noqa: E402

PARTS = ("data", "vision tower", "text tower (noise view)", "text tower (MTP view)", "dual masking", "SDM loss",
         "MTP decoder", "GASS scores", "backward", "optimizer", "score bank")


def _timed(label, function):
    def wrapped(*args, **kwargs):
        with record_function(label):
            return function(*args, **kwargs)
    return wrapped


def instrument(model) -> None:
    """Put each part of the GA-DMS forward in its own profiler range (the objective calls these by name)."""
    import modeling_gadms.objectives as objectives

    encoder = model.gadms
    encoder.encode_image = _timed("vision tower", encoder.encode_image)
    encode_text, calls = encoder.encode_text, {"n": 0}

    def text(*args, **kwargs):  # the objective encodes the noise view first, then the MTP view
        label = "text tower (noise view)" if calls["n"] % 2 == 0 else "text tower (MTP view)"
        calls["n"] += 1
        with record_function(label):
            return encode_text(*args, **kwargs)

    encoder.encode_text = text
    model.mtp_decoder.masked_token_loss = _timed("MTP decoder", model.mtp_decoder.masked_token_loss)
    objectives.dual_masking = _timed("dual masking", objectives.dual_masking)
    objectives.sdm_loss = _timed("SDM loss", objectives.sdm_loss)
    objectives.gass_scores = _timed("GASS scores", objectives.gass_scores)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs/demo_cpu.yaml"))
    parser.add_argument("--steps", type=int, default=40, help="profiled steps (default: 40)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first (default: 10)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: 2, as the demo)")
    parser.add_argument("--identities", type=int, default=400, help="synthetic persons generated (default: 400)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="training config override (e.g. num_workers=1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from accelerate.utils import set_seed

    from training.config import load_config
    from training.data import CaptionSamples, load_training_table, transform_for
    from training.trainer import Trainer, build_model

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        subprocess.run([sys.executable, "-m", "dataset_builders.synthetic", "--out", str(data), "--identities",
                        str(args.identities), "--images-per-identity", "4", "--image-size", "64x32", "--noise", "0.3",
                        "--split-fractions", "1,0,0", "--seed", "0", "--no-progress"], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL)
        config = load_config(args.config, [f"data={data}", f"output_dir={Path(tmp) / 'run'}", "eval_split=null",
                                           "test_split=null", *args.overrides])
        set_seed(config.seed)
        table = load_training_table(config.data, "train")
        samples = CaptionSamples(table, transform_for(config), seed=config.seed,
                                 image_cache_mb=config.image_cache_mb)
        model, processor = build_model(config, captions=list(table["caption1"]) + list(table["caption2"]))
        trainer = Trainer(config, model, processor, samples)
        instrument(trainer.base_model())
        batches = iter(())

        def step(number: int) -> None:
            nonlocal batches
            with record_function("data"):
                batch = next(batches, None)
                if batch is None:
                    trainer.set_epoch(number)
                    batches = iter(trainer.loader)
                    batch = next(batches)
            batch.pop("skipped")
            index = batch.pop("sample_index")
            with record_function("score bank"):
                previous = trainer.previous_scores(index)
            out = trainer.model(**batch, token_scores=previous, generator=trainer.masks.for_step(number))
            with record_function("score bank"):
                trainer.store_scores(index, out.token_scores)
            with record_function("backward"):
                out.loss.backward()
            with record_function("optimizer"):
                trainer.optimizer.step()
                trainer.scheduler.step()
                trainer.optimizer.zero_grad(set_to_none=True)

        trainer.model.train()
        for number in range(args.warmup):
            step(number)
        load = os.getloadavg()[0]
        started = time.perf_counter()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for number in range(args.warmup, args.warmup + args.steps):
                with record_function("step"):
                    step(number)
        wall = (time.perf_counter() - started) / args.steps

    totals = {event.key: event.cpu_time_total / 1000 / args.steps for event in prof.key_averages()}
    figures = {part: round(totals.get(part, 0.0), 1) for part in PARTS}
    step_ms = totals.get("step", wall * 1000)
    print(f"{config.batch_size} samples a step, {args.threads} thread(s), {args.steps} profiled steps "
          f"(load average {load:.2f}): {step_ms:.1f} ms a step under the profiler, {wall * 1000:.1f} ms wall")
    for part in PARTS:
        print(f"  {part:26s} {figures[part]:7.1f} ms  {100 * figures[part] / step_ms:5.1f}%")
    print(json.dumps({"ms_per_step": round(step_ms, 1), **figures, "threads": args.threads,
                      "batch_size": config.batch_size, "load_avg": round(load, 2)}))


if __name__ == "__main__":
    main()
