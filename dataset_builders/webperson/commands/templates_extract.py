"""``templates-extract``: benchmark captions -> caption templates (a text file), with an instruct LLM."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from gadms_utils.cli_types import positive_int

from .common import tool_parser

__all__ = ["add_parser", "read_captions", "run"]


def add_parser(subparsers: Any) -> None:
    """Register ``templates-extract``."""
    p = tool_parser(
        subparsers,
        "templates-extract",
        "LLM: benchmark captions -> templates (text file)",
        "Rewrite benchmark captions into templates with an instruct LLM.",
    )
    p.add_argument(
        "--captions",
        required=True,
        type=Path,
        help="a .txt (one caption a line), a JSON list of strings, or a benchmark JSON "
        "(records with 'captions')",
    )
    p.add_argument("--llm", required=True, help="openai=MODEL,base_url=... or transformers=MODEL")
    p.add_argument("--out", required=True, type=Path, help="text file of templates (one a line)")
    p.add_argument("--limit", type=positive_int, default=None, help="use the first N captions")
    p.add_argument("--batch-size", type=positive_int, default=64, help="prompts per LLM call")
    p.set_defaults(func=run)


def read_captions(path: Path) -> list[str]:
    """The captions of ``path``: a ``.txt`` file (one a line), a JSON list of strings, or a benchmark JSON
    (a list of records with ``captions``)."""
    if path.suffix == ".txt":
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    data = json.loads(path.read_text())
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list")
    captions: list[str] = []
    for number, item in enumerate(data):
        if isinstance(item, str):
            captions.append(item)
        elif isinstance(item, dict) and isinstance(item.get("captions"), list):
            captions += [str(c) for c in item["captions"]]
        else:
            raise ValueError(f"{path}: item {number} is neither a caption nor a record with 'captions'")
    return captions


def run(args: argparse.Namespace) -> None:
    """Run ``templates-extract`` and print how many templates it wrote."""
    from .. import backends
    from ..template_mining import extract_templates

    captions = read_captions(args.captions)[: args.limit]
    generate = backends.make_llm(backends.parse_spec(args.llm, "--llm"))
    templates, dropped = extract_templates(captions, generate, batch_size=args.batch_size)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(t + "\n" for t in templates))
    print(
        f"{len(templates)} templates from {len(captions)} captions -> {args.out}; "
        f"dropped: {dropped or 'none'}"
    )
