"""Command-line handling shared by `training/pretrain.py` and `training/finetune.py`."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from .config import load_config


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


def run(trainer, resume: str | None) -> dict:
    """Resume if asked, train, finish (save last/best, test), and print the results as JSON (main process)."""
    if resume:
        trainer.resume(resume)
    trainer.train()
    results = trainer.finish()
    if trainer.accelerator.is_main_process:
        print(json.dumps({"output_dir": str(Path(trainer.config.output_dir)), **results}), file=sys.stdout, flush=True)
    return results


__all__ = ["build_parser", "parse", "run"]
