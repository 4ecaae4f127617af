"""Command-line handling shared by `training/pretrain.py` and `training/finetune.py`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from .config import load_config

logger = logging.getLogger("training")


def build_parser(description: str, default_config: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", default=default_config,
                        help=f"YAML preset in configs/ (default: {default_config})")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, value parsed as YAML (repeatable), e.g. --set learning_rate=1e-4")
    parser.add_argument("--output-dir", help="where checkpoints, logs and the saved models go")
    parser.add_argument("--resume", metavar="latest|PATH",
                        help="continue from the newest checkpoint or a given one (its optimizer, RNG and counter "
                             "states are pickles that accelerate loads with weights_only=False: resume only from "
                             "checkpoint folders you trust, such as your own runs)")
    parser.add_argument("--max-steps", type=int, help="stop after this many optimizer steps")
    parser.add_argument("--lora", action="store_true", default=None, help="train LoRA adapters (peft) instead of all weights")
    parser.add_argument("--merge-lora", action="store_true", default=None, help="also export a merged model directory")
    parser.add_argument("--push-to-hub", metavar="ORG/NAME", help="upload the final model directory to the Hub")
    parser.add_argument("--mixed-precision", choices=["no", "bf16", "fp16"], help="override mixed precision")
    return parser


def parse(parser: argparse.ArgumentParser, argv=None):
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config, args.overrides, output_dir=args.output_dir, max_steps=args.max_steps,
                             lora=args.lora, merge_lora=args.merge_lora, push_to_hub=args.push_to_hub,
                             mixed_precision=args.mixed_precision)
    except (ValueError, FileNotFoundError) as error:
        parser.error(str(error))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from accelerate.utils import set_seed

    set_seed(config.seed)  # before the model is built: a fresh model's initialisation is part of the run
    return args, config


def preflight(config, cuda: bool | None = None) -> None:
    """Check what can be checked before any data is read, and settle the settings that depend on the model and
    the machine (in place, so that `training_config.yaml` records what was run).

    - `image_size: null` means the model's input size, read from its `config.json` (with `model_overrides`);
      a size set by the user must be the model's (`model: tiny`, built from scratch, needs one);
    - without a GPU (`cuda` False; default: `torch.cuda.is_available()`) mixed precision is turned off;
    - `num_workers` is capped at the number of CPUs;
    - LoRA adapters to be pushed to the hub need a base model that is on the hub.

    Raises:
        ValueError: with the problem, before any data or weights are loaded.
    """
    if config.model == "tiny":
        if config.image_size is None:
            raise ValueError("model: tiny is built from scratch: set image_size ([height, width])")
    else:
        import modeling_gadms  # noqa: F401  (registers the GA-DMS config class)
        from transformers import AutoConfig

        try:
            model_config = AutoConfig.from_pretrained(config.model)
        except (OSError, ValueError) as error:
            raise ValueError(f"cannot read the model config of {config.model}: {error}") from None
        vision = dict((config.model_overrides or {}).get("vision_config") or {})
        size = tuple(vision.get("image_size") or model_config.image_size)
        if config.image_size is None:
            config.image_size = list(size)
            logger.info("image_size: %s, the input size of %s", config.image_size, config.model)
        elif tuple(config.image_size) != size:
            raise ValueError(f"{config.model} takes {size} inputs but image_size is {config.image_size}; "
                             "set image_size to the model's (or null) or convert the model at that size")
    if config.push_to_hub and config.lora and Path(config.model).exists():
        raise ValueError(f"push_to_hub with lora: the adapters' base {config.model} is a local folder, which "
                         "nobody could load from the hub; push the base first and set model to its hub id")
    if cuda is None:
        import torch

        cuda = torch.cuda.is_available()
    if not cuda and config.mixed_precision != "no":
        logger.info("no GPU: mixed_precision %s -> no (full precision on CPU)", config.mixed_precision)
        config.mixed_precision = "no"
    cpus = os.cpu_count() or 1
    if config.num_workers > cpus:
        logger.info("num_workers %d -> %d (the CPUs of this machine)", config.num_workers, cpus)
        config.num_workers = cpus


def run(trainer, resume: str | None) -> dict:
    """Resume if asked, train, finish (save last/best, test), and print the results as JSON (main process)."""
    if resume:
        trainer.resume(resume)
    trainer.train()
    results = trainer.finish()
    if trainer.accelerator.is_main_process:
        print(json.dumps({"output_dir": str(Path(trainer.config.output_dir)), **results}), file=sys.stdout, flush=True)
    return results


__all__ = ["build_parser", "parse", "preflight", "run"]
