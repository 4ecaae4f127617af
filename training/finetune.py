"""Fine-tuning (IRRA recipe: SDM + identity loss + random MLM) on a text-to-person benchmark.

    accelerate launch training/finetune.py --config configs/finetune_cuhk_pedes.yaml \\
        --set model=path/to/gadms-pretrained --set data_root=data/CUHK-PEDES

Starts from a GA-DMS model directory, a hub id or a converted CLIP (`python -m modeling_gadms.convert`).
Checkpoints are selected on the validation split (ICFG-PEDES: carved from training identities), then the last
and the best are evaluated on test. `image_size: null` (the presets) takes the model's input size; without a
GPU mixed precision is turned off, and `num_workers` is capped at the CPU count.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.cli import build_parser, parse, run  # noqa: E402
from training.cli import preflight as run_preflight  # noqa: E402
from training.data import CaptionSamples, transform_for  # noqa: E402
from training.trainer import Trainer, TrainingSetupError, build_model  # noqa: E402



def preflight(config, cuda: bool | None = None) -> None:
    """Fine-tuning's checks before any data is read: `benchmark` must be a known one and `data_root` an existing
    folder; then the checks and settings of every run (`training.cli.preflight`: the model's input size, the
    machine).

    Raises:
        ValueError: with the problem, before any data or weights are loaded.
    """
    from evaluation.benchmarks import resolve_benchmark

    resolve_benchmark(config.benchmark)
    if not Path(config.data_root).is_dir():
        raise ValueError(f"data_root {config.data_root} is not a folder")
    run_preflight(config, cuda=cuda)


def main(argv=None) -> dict:
    from evaluation import evaluation_view, load_benchmark

    parser = build_parser(__doc__.splitlines()[0], "configs/finetune_cuhk_pedes.yaml")
    args, config = parse(parser, argv)
    if not config.benchmark or not config.data_root:
        parser.error("set `benchmark` (cuhk-pedes, icfg-pedes, rstpreid, ufine6926) and `data_root`")
    try:
        preflight(config)
    except ValueError as error:
        parser.error(str(error))
    splits = load_benchmark(config.benchmark, config.data_root)
    if config.data_split not in splits or len(splits[config.data_split]) == 0:
        parser.error(f"{config.benchmark} in {config.data_root} has no training records in split "
                     f"{config.data_split!r} (splits with records: {', '.join(sorted(splits)) or 'none'})")
    train = splits[config.data_split]
    if config.max_train_samples:
        train = train.select(range(min(config.max_train_samples, len(train))))
    samples = CaptionSamples(train, transform_for(config), caption_columns=("caption",), id_column="label",
                             seed=config.seed, image_cache_mb=config.image_cache_mb)
    captions = list(train["caption"]) if config.model == "tiny" else None
    model, processor = build_model(config, captions=captions, num_identities=max(samples.identities) + 1)
    eval_split = evaluation_view(splits["validation"]) if config.eval_split and "validation" in splits else None
    test_split = evaluation_view(splits["test"]) if config.test_split and "test" in splits else None
    try:
        trainer = Trainer(config, model, processor, samples, eval_split=eval_split, test_split=test_split)
    except TrainingSetupError as error:
        parser.error(str(error))
    return run(trainer, args.resume)


if __name__ == "__main__":
    main()
