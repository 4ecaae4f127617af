"""``publish``: upload an export folder to the Hugging Face Hub."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from .common import tool_parser

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> None:
    """Register ``publish``."""
    p = tool_parser(
        subparsers,
        "publish",
        "upload an export to the Hugging Face Hub",
        "Create the data set repo and upload the export (token: --token or HF_TOKEN).",
    )
    p.add_argument("--folder", required=True, type=Path, help="the export folder")
    p.add_argument("--repo", required=True, help="ORG/NAME of the data set repository")
    p.add_argument("--private", action="store_true", help="create the repository private")
    p.add_argument("--token", default=None, help="Hub token (default: HF_TOKEN or the saved login)")
    p.add_argument("--revision", default=None, help="branch to push to")
    p.add_argument("--large", action="store_true", help="use upload_large_folder (resumable, multi-commit)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    """Run ``publish`` and print where the data set went."""
    from ..publish import publish

    result = publish(
        args.folder,
        args.repo,
        token=args.token or os.environ.get("HF_TOKEN"),
        private=args.private,
        revision=args.revision,
        large=args.large,
    )
    print(f"published {args.folder} to https://huggingface.co/datasets/{args.repo} ({result})")
