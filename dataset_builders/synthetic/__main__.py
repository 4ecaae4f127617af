"""Command line: ``python -m dataset_builders.synthetic --out DIR [options]`` (see ``--help``)."""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from gadms_utils.cli_types import non_negative_int, positive_int, rate
from .captions import NOISE_KINDS
from .config import SyntheticPersonConfig
from .writers import DEFAULT_SHARD_SIZE, write_cuhk_pedes, write_webperson

_EPILOG = """\
examples:
  python -m dataset_builders.synthetic --out data/synthetic --identities 500 --images-per-identity 4
  python -m dataset_builders.synthetic --out data/cuhk_like --format cuhk-pedes --noise 0
  python -m dataset_builders.synthetic --out demo --identities 60 --image-size 96x32

webperson:  DIR/README.md (card, YAML configs) + DIR/data/*.parquet; load with datasets.load_dataset(DIR)
cuhk-pedes: DIR/reid_raw.json + DIR/imgs/ (+ synthetic_attributes.json with attributes and noise)
"""


def _size(text: str) -> tuple[int, int]:
    parts = text.lower().replace("×", "x").split("x")
    try:
        height, width = (int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH such as 384x128, got {text!r}") from None
    return height, width


def _fractions(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(p) for p in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected TRAIN,VAL,TEST such as 0.8,0.1,0.1, got {text!r}") from None
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"expected three fractions TRAIN,VAL,TEST, got {text!r}")
    return values  # type: ignore[return-value]


def _kinds(text: str) -> tuple[str, ...]:
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    unknown = [k for k in kinds if k not in NOISE_KINDS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown noise kind(s) {unknown}; choose from {','.join(NOISE_KINDS)}")
    return kinds


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the CLI."""
    parser = argparse.ArgumentParser(
        prog="python -m dataset_builders.synthetic",
        description="Generate the synthetic person data set (procedural pedestrians with benchmark-style "
                    "captions and recorded caption noise), deterministic for a seed, with "
                    "identity-disjoint splits.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = SyntheticPersonConfig()
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (created; must be empty)")
    parser.add_argument("--format", choices=("webperson", "cuhk-pedes"), default="webperson",
                        help="webperson: parquet shards + card; cuhk-pedes: reid_raw.json + imgs/ "
                             "(default: %(default)s)")
    parser.add_argument("--identities", type=positive_int, default=defaults.num_identities, metavar="N",
                        help="number of persons (default: %(default)s)")
    parser.add_argument("--images-per-identity", type=positive_int, default=defaults.images_per_identity,
                        metavar="K", help="pictures per person (default: %(default)s)")
    parser.add_argument("--noise", type=rate, default=defaults.noise_rate, metavar="RATE",
                        help="probability that a caption gets noise, 0..1 (default: %(default)s)")
    parser.add_argument("--noise-kinds", type=_kinds, default=defaults.noise_kinds, metavar="K1,K2",
                        help=f"noise kinds to draw from (default: {','.join(NOISE_KINDS)})")
    parser.add_argument("--image-size", type=_size, default=defaults.image_size, metavar="HxW",
                        help="image height x width in pixels (default: 384x128)")
    parser.add_argument("--split-fractions", type=_fractions, default=defaults.split_fractions,
                        metavar="TR,VA,TE",
                        help="identity fractions of train,val,test (default: 0.8,0.1,0.1)")
    parser.add_argument("--seed", type=non_negative_int, default=defaults.seed,
                        help="random seed (default: %(default)s)")
    parser.add_argument("--jpeg-quality", type=positive_int, default=defaults.jpeg_quality, metavar="Q",
                        help="JPEG quality 1..95 (default: %(default)s)")
    parser.add_argument("--shard-size", type=positive_int, default=DEFAULT_SHARD_SIZE, metavar="ROWS",
                        help="rows per parquet shard, webperson only (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace DIR if it holds an earlier synthetic data set")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (argument errors exit with status 2 and a message)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = SyntheticPersonConfig(
            num_identities=args.identities, images_per_identity=args.images_per_identity,
            image_size=args.image_size, noise_rate=args.noise, noise_kinds=args.noise_kinds, seed=args.seed,
            split_fractions=args.split_fractions, jpeg_quality=args.jpeg_quality)
    except ValueError as error:
        parser.error(str(error))
    progress = not args.no_progress
    try:
        if args.format == "webperson":
            out = write_webperson(config, args.out, shard_size=args.shard_size, overwrite=args.overwrite,
                                  progress=progress)
        else:
            out = write_cuhk_pedes(config, args.out, overwrite=args.overwrite, progress=progress)
    except FileExistsError as error:
        parser.error(str(error))
    counts = ", ".join(f"{split} {len(ids)}" for split, ids in config.split_ids().items())
    print(f"wrote {config.num_images} images of {config.num_identities} identities ({counts}) "
          f"in the {args.format} format to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
