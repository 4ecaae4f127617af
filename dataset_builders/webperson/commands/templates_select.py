"""``templates-select``: embed templates, k-means them and keep a versioned template bank."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from gadms_utils.cli_types import non_negative_int, positive_int

from .common import tool_parser

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> None:
    """Register ``templates-select``."""
    p = tool_parser(
        subparsers,
        "templates-select",
        "embed + k-means: templates -> a versioned bank",
        "Embed templates, k-means them, keep the nearest to each centroid plus N random.",
    )
    p.add_argument("--templates", required=True, type=Path, help="text file of templates (one a line)")
    p.add_argument("--embedder", required=True, help="clip=MODEL or sentence-transformers=MODEL")
    p.add_argument("--clusters", required=True, type=positive_int, help="k of k-means")
    p.add_argument(
        "--random-per-cluster", type=non_negative_int, default=5, help="random members kept per cluster"
    )
    p.add_argument("--seed", type=non_negative_int, default=0, help="k-means and random draws")
    p.add_argument("--name", required=True, help="bank name (file NAME_vVERSION.json)")
    p.add_argument("--version", required=True, type=positive_int, help="bank version")
    p.add_argument("--out-dir", required=True, type=Path, help="folder of the bank file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    """Run ``templates-select`` and print where the bank went."""
    from .. import backends
    from ..template_bank import TemplateBank, save_bank
    from ..template_mining import select_templates

    texts = [line.strip() for line in args.templates.read_text().splitlines() if line.strip()]
    embedder = backends.make_embedder(backends.parse_spec(args.embedder, "--embedder"))
    chosen, _ = select_templates(
        embedder(texts), args.clusters, per_cluster_random=args.random_per_cluster, seed=args.seed
    )
    bank = TemplateBank.from_texts(
        args.name,
        args.version,
        [texts[i] for i in chosen],
        {
            "source": str(args.templates),
            "embedder": args.embedder,
            "clusters": args.clusters,
            "random_per_cluster": args.random_per_cluster,
            "seed": args.seed,
            "candidates": len(texts),
        },
    )
    print(f"kept {len(chosen)} of {len(texts)} templates -> {save_bank(bank, args.out_dir)}")
