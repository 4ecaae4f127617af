"""Command line of the WebPerson pipeline: ``python -m dataset_builders.webperson <stage> ...``.

Each subcommand lives in its own module of :mod:`.commands` (options and ``run``); this module puts them
together and maps errors to exit statuses.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from .commands import add_parsers
from .stage import format_summary

__all__ = ["build_parser", "main"]

_EPILOG = """\
stages, in order (each reads the previous one's shards in WORK, resumes after a kill, takes --shard i/n;
detect, pose, caption and filter also run on Ray: --engine ray, see docs/distributed.md):
  ingest     source images -> WORK/ingest          (folder, WebDataset tars, parquet, datasets, URL list)
  detect     person boxes and crops -> WORK/detect (transformers RT-DETR/DETR, or ultralytics YOLO11)
  pose       COCO-17 pose check -> WORK/pose       (transformers ViTPose, or ultralytics YOLO11-pose)
  caption    two VLM captions per crop -> WORK/caption (transformers, vLLM offline, OpenAI-compatible server)
  filter     caption rules -> WORK/filter          (length, speculation, background, meta talk, duplicates)
  export     WORK/filter -> OUT (parquet shards + README card + figures; datasets.load_dataset(OUT))
  publish    OUT -> the Hugging Face Hub (load_dataset("ORG/NAME"))
tools: templates-extract, templates-select (build a template bank), status (counts of every stage)

example:
  python -m dataset_builders.webperson ingest --work W --source tar --input 'pool/*.tar'
  python -m dataset_builders.webperson detect --work W \\
      --detector transformers=PekingU/rtdetr_r50vd_coco_o365,device=cuda
  python -m dataset_builders.webperson pose --work W \\
      --pose-model transformers=usyd-community/vitpose-base-simple,device=cuda
  python -m dataset_builders.webperson caption --work W \\
      --captioner openai=Qwen/Qwen2.5-VL-7B-Instruct,base_url=http://localhost:8000/v1,concurrency=64 \\
      --captioner openai=Qwen/Qwen2.5-VL-32B-Instruct,base_url=http://localhost:8001/v1,concurrency=32
  python -m dataset_builders.webperson filter --work W
  # on a Ray cluster (ray start --head / ray start --address HEAD:6379; W shared): one actor per GPU
  python -m dataset_builders.webperson caption --work W --engine ray --ray-address auto --ray-num-gpus 1 \\
      --captioner vllm=Qwen/Qwen2.5-VL-7B-Instruct,max_model_len=4096
  python -m dataset_builders.webperson export --work W --out webperson --license cc-by-4.0
  python -m dataset_builders.webperson publish --folder webperson --repo ORG/webperson
"""

def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one subcommand per stage (see :mod:`.commands`)."""
    parser = argparse.ArgumentParser(
        prog="python -m dataset_builders.webperson",
        description="WebPerson curation: web images -> person crops with two captions.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_parsers(parser.add_subparsers(dest="command", required=True, metavar="<stage>"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 on a usage or input error, with its message)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        manifest = args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError, KeyError, ImportError) as error:
        print(f"error ({args.command}): {error}", file=sys.stderr)
        return 2
    if isinstance(manifest, dict):
        print(format_summary(manifest))
        if manifest.get("pending_input"):
            print(f"  ({manifest['pending_input']} input shards not done yet: rerun when they are)")
    return 0
