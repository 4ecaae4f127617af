"""GA-DMS pretraining on data in the WebPerson schema (image, caption1, caption2; optional person_id).

    accelerate launch training/pretrain.py --config configs/pretrain_paper.yaml --set data=org/webperson

Each image gives two samples (one per caption) of the same identity. Evaluation each epoch on the data's
`validation` split (or on a benchmark's validation split with `benchmark` / `data_root`), never on test.
`objective: irra` pretrains the baseline of the ablation (benchmarks/bench_method.py) the same way: SDM on the
clean caption and random MLM.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # `python training/pretrain.py` / `accelerate launch training/pretrain.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.cli import build_parser, parse, preflight, run  # noqa: E402
from training.data import CaptionSamples, has_split, load_training_table, transform_for  # noqa: E402
from training.trainer import Trainer, TrainingSetupError, build_model  # noqa: E402
from training.validation import webperson_view  # noqa: E402


def retrieval_split(config, split: str | None):
    """The evaluation view of a split: the WebPerson data's own, or a benchmark's when `benchmark` is set.

    `None` when `split` is unset, or when the WebPerson data has no such split (see `training.data.has_split`:
    parquet files hold only `train`); data that cannot be read raises its own error."""
    if not split:
        return None
    if config.benchmark:
        from evaluation import load_retrieval_split

        return load_retrieval_split(config.benchmark, config.data_root, split=split)
    if not has_split(config.data, split):  # e.g. no `validation` split: train without that evaluation
        return None
    return webperson_view(load_training_table(config.data, split))


def main(argv=None) -> dict:
    parser = build_parser(__doc__.splitlines()[0], "configs/pretrain_paper.yaml")
    args, config = parse(parser, argv)
    if config.objective not in ("gadms", "irra"):
        parser.error("pretrain.py trains the GA-DMS objective (objective: gadms) or, as its baseline, the IRRA "
                     "objective (objective: irra)")
    if not config.data:
        parser.error("no training data: set `data` (hub id, folder or parquet files), e.g. --set data=org/webperson")
    try:
        preflight(config)  # the model's input size and the machine's settings, before any data is read
    except ValueError as error:
        parser.error(str(error))
    table = load_training_table(config.data, config.data_split)
    if config.max_train_samples:
        table = table.select(range(min(config.max_train_samples, len(table))))
    samples = CaptionSamples(table, transform_for(config), seed=config.seed, image_cache_mb=config.image_cache_mb)
    captions = list(table["caption1"]) + list(table["caption2"]) if config.model == "tiny" else None
    model, processor = build_model(config, captions=captions)
    try:
        trainer = Trainer(config, model, processor, samples, eval_split=retrieval_split(config, config.eval_split),
                          test_split=retrieval_split(config, config.test_split))
    except TrainingSetupError as error:
        parser.error(str(error))
    return run(trainer, args.resume)


if __name__ == "__main__":
    main()
