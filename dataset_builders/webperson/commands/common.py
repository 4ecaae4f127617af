"""What the WebPerson subcommands share: the stage options (``--work``, ``--shard i/n``, ``--max-shards``,
``--no-progress``, ``--retry-errors``), the backend SPEC help, and the threshold options built from the
settings dataclasses (:mod:`..settings`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, TypeVar

from gadms_utils.cli_types import positive_int

from ..settings import OPTION_KEY, option_fields
from ..shards import ShardSelection, parse_shard

__all__ = [
    "SPEC_HELP",
    "add_settings_options",
    "settings_from_args",
    "shard_type",
    "stage_options",
    "stage_parser",
    "tool_parser",
]

#: Help of the backend options (``--detector``, ``--pose-model``, ``--captioner``).
SPEC_HELP = "KIND=MODEL[,key=value...]; keys: device, dtype, batch_size, ... (see backends.py)"

S = TypeVar("S")


def shard_type(text: str) -> ShardSelection:
    """The argparse type of ``--shard``: ``"i/n"`` as a :class:`~..shards.ShardSelection`."""
    try:
        return parse_shard(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def tool_parser(
    subparsers: Any,
    name: str,
    help_text: str,
    description: str,
    formatter_class: type[argparse.HelpFormatter] | None = argparse.ArgumentDefaultsHelpFormatter,
) -> argparse.ArgumentParser:
    """A subcommand without the stage options (defaults shown in its help unless ``formatter_class`` is
    ``None``)."""
    options: dict[str, Any] = {"help": help_text, "description": description}
    if formatter_class is not None:
        options["formatter_class"] = formatter_class
    return subparsers.add_parser(name, **options)


def stage_parser(
    subparsers: Any, name: str, help_text: str, description: str, *, retry_errors: bool = False
) -> argparse.ArgumentParser:
    """A stage subcommand with the options every stage takes; ``retry_errors``: also ``--retry-errors``
    (the stages that call a backend)."""
    parser = tool_parser(subparsers, name, help_text, description)
    parser.add_argument("--work", required=True, type=Path, help="the work directory shared by all stages")
    parser.add_argument(
        "--shard",
        type=shard_type,
        default="0/1",
        metavar="i/n",
        help="take only shards whose number %% n == i (split work over processes/machines)",
    )
    parser.add_argument("--max-shards", type=positive_int, default=None, help="stop after this many shards")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    if retry_errors:
        parser.add_argument(
            "--retry-errors",
            action="store_true",
            help="also redo the items of done shards that failed with a backend error "
            "(detector_error / pose_error / caption_error)",
        )
    return parser


def stage_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keywords of a ``pipeline.run_*`` call that come from the stage options: ``selection``,
    ``progress``, ``max_shards`` and, where the stage has ``--retry-errors``, ``retry_errors``."""
    options = {"selection": args.shard, "progress": not args.no_progress, "max_shards": args.max_shards}
    if hasattr(args, "retry_errors"):
        options["retry_errors"] = args.retry_errors
    return options


def add_settings_options(parser: argparse.ArgumentParser, settings_class: type) -> None:
    """Add an option per field of ``settings_class`` made with :func:`..settings.option`
    (``--min-score`` for ``min_score``), with the field's default (a tuple as a list)."""
    for field in option_fields(settings_class):
        default = list(field.default) if isinstance(field.default, tuple) else field.default
        name = "--" + field.name.replace("_", "-")
        parser.add_argument(name, default=default, **field.metadata[OPTION_KEY])


def settings_from_args(settings_class: type[S], args: argparse.Namespace) -> S:
    """``settings_class`` made from the options that :func:`add_settings_options` added."""
    values = {field.name: getattr(args, field.name) for field in option_fields(settings_class)}
    return settings_class(**values)
