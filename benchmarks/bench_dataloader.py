"""Training data path vs model step throughput at the CPU demo preset (target: data_over_model >= 2).

Data path: `CaptionSamples` over a WebPerson-format synthetic set (parquet with embedded JPEGs, loaded with
`training.data.load_training_table`) through a `torch.utils.data.DataLoader` built as `training/trainer.py`
builds it (`EpochSampler`, the project's `Collator`, `drop_last`, the preset's `batch_size` and
`num_workers`, its `image_cache_mb`): row read, JPEG decode and resize, torchvision v2 augmentation
(`transform_for(config)`), tokenization and collation with the batch's normalisation. With the preset's image
cache on (the demo's), the untimed warm-up epoch fills it and the timed epochs read prepared images from
memory, as the demo's second epoch does (its first decodes each picture once). Each repetition is one epoch of the loader (a new `set_epoch`): its first batch is not timed
(it includes starting the workers when `num_workers > 0`), the rest are; figure: images per second.

Model step: the preset's model, built by `training.trainer.build_model` from the same YAML (`load_config`),
with the trainer's score bank attached and its Adam optimizer; one step = `forward(...,
objective=config.objective)` (`gadms` in the demo preset) + backward + `optimizer.step()` on batches the
loader produced (collated before timing); figure: samples per second. accelerate's wrapper is left out (on
one CPU process without mixed precision it changes nothing in the step).

Both run in one process, interleaved (data epoch, model step, data epoch, ...), after one untimed warm-up of
each; figures are medians over `--repeats`. On a shared machine other load slows either side at times: the
median of the per-repeat (adjacent in time) ratios and the ratio of the best rates are printed too. The
synthetic set (`--identities` persons x 4 images, 80% of them in train, at the preset's `image_size`) is
generated in a temporary folder that is deleted afterwards, with its own `datasets` cache. With
`num_workers: 0` (the demo preset) loading is not overlapped with compute: the data path then takes 1 / (1 +
data_over_model) of a training step's time, which is also printed.

Usage: python benchmarks/bench_dataloader.py [--config configs/demo_cpu.yaml] [--repeats 5] [--num-workers N]
The last line printed is a JSON object: {"data_over_model", "data_images_per_s", "model_samples_per_s",
"batch", "num_workers", ...}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TARGET = 2.0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "demo_cpu.yaml"),
                        help="training preset (default: configs/demo_cpu.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a key of the preset, as training/pretrain.py --set does (repeatable)")
    parser.add_argument("--num-workers", type=int, default=None,
                        help="data-loader workers (default: the preset's num_workers)")
    parser.add_argument("--repeats", type=int, default=7, help="timed repetitions of each side (default: 7)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads for both sides (default: torch's, one per core)")
    parser.add_argument("--identities", type=int, default=120,
                        help="synthetic persons, 4 images each, 80%% in train (default: 120, 384 images)")
    return parser


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    if args.repeats < 1 or args.identities < 10:
        raise SystemExit("--repeats must be >= 1 and --identities >= 10")
    workdir = Path(tempfile.mkdtemp(prefix="bench_dataloader_"))
    os.environ["HF_DATASETS_CACHE"] = str(workdir / "cache")  # before datasets is imported: a throw-away one
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        return run(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def run(args, workdir: Path) -> dict:
    import datasets
    import torch
    from torch.utils.data import DataLoader

    from dataset_builders.synthetic import SyntheticPersonConfig, write_webperson
    from modeling_gadms import ScoreBank
    from training.config import load_config
    from training.data import CaptionSamples, Collator, EpochSampler, load_training_table, transform_for
    from training.trainer import build_model

    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = list(args.overrides)
    if args.num_workers is not None:
        overrides.append(f"num_workers={args.num_workers}")
    config = load_config(args.config, overrides)
    height, width = config.image_size

    datasets.disable_progress_bars()
    started = time.perf_counter()
    synthetic = SyntheticPersonConfig(num_identities=args.identities, images_per_identity=4,
                                      image_size=(height, width), noise_rate=0.3, seed=0)
    folder = write_webperson(synthetic, workdir / "data")
    table = load_training_table(str(folder), config.data_split)
    samples = CaptionSamples(table, transform_for(config), seed=config.seed, image_cache_mb=config.image_cache_mb)
    captions = list(table["caption1"]) + list(table["caption2"]) if config.model == "tiny" else None
    torch.manual_seed(config.seed)
    model, processor = build_model(config, captions=captions)
    print(f"{len(table)} train images ({len(samples)} samples) of {height}x{width} written and loaded, "
          f"model built in {time.perf_counter() - started:.1f} s", flush=True)

    sampler = EpochSampler(len(samples), seed=config.seed)
    loader = DataLoader(samples, batch_size=config.batch_size, sampler=sampler,
                        num_workers=config.num_workers,
                        collate_fn=Collator(processor, padding=config.text_padding,
                                            pixel_transform=samples.batch_transform),
                        drop_last=True,
                        generator=torch.Generator().manual_seed(config.seed), persistent_workers=False)
    if len(loader) < 2:
        raise SystemExit(f"{len(samples)} samples make {len(loader)} batch(es) of {config.batch_size}: "
                         "raise --identities")

    def data_epoch(epoch: int) -> float:
        """Images per second over one epoch of the loader, its first batch excluded."""
        sampler.set_epoch(epoch)
        samples.set_epoch(epoch)
        iterator = iter(loader)
        next(iterator)
        images, start = 0, time.perf_counter()
        for batch in iterator:
            images += batch["pixel_values"].shape[0]
        return images / (time.perf_counter() - start)

    model.train()
    bank = None
    if config.objective == "gadms":  # the trainer's bank, read before and written after each step
        bank = ScoreBank.from_config(model.config, num_samples=len(samples), objective=model.objective)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=config.learning_rate,
                                 betas=tuple(config.adam_betas), eps=config.adam_eps,
                                 weight_decay=config.weight_decay)
    masks = torch.Generator().manual_seed(config.seed)
    sampler.set_epoch(10_000)
    samples.set_epoch(10_000)
    batches = []
    for batch in loader:
        batch.pop("skipped")
        batches.append(batch)
        if len(batches) == args.repeats + 1:
            break

    def model_step(index: int) -> float:
        """Samples per second of one optimizer step."""
        batch = batches[index % len(batches)]
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        index = batch["sample_index"]
        inputs = {k: v for k, v in batch.items() if k != "sample_index"}
        out = model(**inputs, token_scores=bank.get(index) if bank is not None else None, generator=masks)
        if bank is not None:
            bank.update(index, bank.pad(out.token_scores))
        out.loss.backward()
        if config.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
        optimizer.step()
        return batch["input_ids"].shape[0] / (time.perf_counter() - start)

    data_epoch(0), model_step(0)  # warm-up
    data_rates, model_rates = [], []
    for repeat in range(args.repeats):
        data_rates.append(data_epoch(repeat + 1))
        model_rates.append(model_step(repeat + 1))
        print(f"repeat {repeat + 1}/{args.repeats}: data {data_rates[-1]:8.1f} images/s   "
              f"model ({config.objective}) {model_rates[-1]:7.1f} samples/s", flush=True)

    data_rate, model_rate = statistics.median(data_rates), statistics.median(model_rates)
    ratio = data_rate / model_rate
    paired = statistics.median(d / m for d, m in zip(data_rates, model_rates))
    best = max(data_rates) / max(model_rates)
    timed = (len(loader) - 1) * config.batch_size
    print(f"data path  median {data_rate:8.1f} images/s  ({timed} images per epoch timed, "
          f"num_workers={config.num_workers}, as in {Path(args.config).name})")
    print(f"model step median {model_rate:8.1f} samples/s  "
          f"(objective={config.objective}, batch {config.batch_size})")
    print(f"data / model = {ratio:.2f} (target >= {TARGET:g}: {'met' if ratio >= TARGET else 'NOT met'}); "
          f"median of the per-repeat ratios {paired:.2f}, ratio of the best rates {best:.2f}")
    if config.num_workers == 0:
        print(f"num_workers=0: loading is not overlapped with compute; the data path takes "
              f"{100 / (1 + ratio):.0f}% of each training step")
    result = {
        "data_over_model": round(ratio, 3),
        "data_images_per_s": round(data_rate, 1),
        "model_samples_per_s": round(model_rate, 1),
        "batch": config.batch_size,
        "num_workers": config.num_workers,
        "image_cache_mb": config.image_cache_mb,
        "target": TARGET,
        "meets_target": ratio >= TARGET,
        "data_over_model_paired_median": round(paired, 3),
        "data_over_model_best": round(best, 3),
        "data_images_per_s_best": round(max(data_rates), 1),
        "model_samples_per_s_best": round(max(model_rates), 1),
        "objective": config.objective,
        "image_size": [height, width],
        "repeats": args.repeats,
        "threads": torch.get_num_threads(),
        "config": Path(args.config).name,
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
