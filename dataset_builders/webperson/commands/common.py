"""What the WebPerson subcommands share: the stage options (``--work``, ``--shard i/n``, ``--max-shards``,
``--no-progress``, ``--retry-errors``), the engine options (``--engine local|ray``, ``--ray-*``), the
backend SPEC help, and the threshold options built from the settings dataclasses (:mod:`..settings`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, TypeVar

from gadms_utils.cli_types import non_negative_int, positive_int

from ..engines import ENGINES, Engine, RayOptions, make_engine
from ..settings import OPTION_KEY, option_fields
from ..shards import ShardSelection, parse_shard

__all__ = [
    "SPEC_HELP",
    "add_settings_options",
    "engine_from_args",
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
    subparsers: Any,
    name: str,
    help_text: str,
    description: str,
    *,
    retry_errors: bool = False,
    engine: str | None = None,
) -> argparse.ArgumentParser:
    """A stage subcommand with the options every stage takes; ``retry_errors``: also ``--retry-errors``
    (the stages that call a backend); ``engine``: also ``--engine`` and the ``--ray-*`` options, with
    ``"model"`` (shards on Ray actors that hold the backends) or ``"cpu"`` (shards as Ray tasks) in
    their help."""
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
    if engine is not None:
        add_engine_options(parser, engine)
    return parser


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def add_engine_options(parser: argparse.ArgumentParser, kind: str) -> None:
    """Add ``--engine`` and the ``--ray-*`` options; ``kind``: ``"model"`` or ``"cpu"`` (see
    :func:`stage_parser`)."""
    unit = "actor (each loads the backends once)" if kind == "model" else "task"
    group = parser.add_argument_group(
        "engine",
        "where the shards run: local (this process) or ray (Ray workers on this machine, or on a cluster "
        "started with `ray start`; needs pip install \"gadms[distributed]\" and WORK at the same path on "
        "every machine). Both write the same shards, markers and manifests.",
    )
    group.add_argument("--engine", choices=ENGINES, default="local", help="the engine that runs the shards")
    group.add_argument(
        "--ray-address",
        default=None,
        metavar="auto|HOST:PORT",
        help="join the Ray cluster there (auto: the one `ray start` started on this machine); "
        "None: start a local Ray instance for this run",
    )
    group.add_argument(
        "--ray-num-gpus", type=_non_negative_float,
        default=0.0,
        metavar="N",
        help=f"GPUs per Ray {unit} (0.5: two per GPU)",
    )
    group.add_argument(
        "--ray-num-cpus", type=_non_negative_float, default=1.0, metavar="N", help=f"CPUs per Ray {unit}"
    )
    if kind == "model":
        group.add_argument(
            "--ray-actors",
            type=positive_int,
            default=None,
            metavar="N",
            help="Ray actors (default: as many as the cluster's GPUs, or CPUs, fit; at most one per shard)",
        )
    group.add_argument(
        "--ray-max-retries",
        type=non_negative_int,
        default=3,
        metavar="N",
        help="times a shard whose Ray worker died is run again",
    )


def engine_from_args(args: argparse.Namespace) -> Engine:
    """The engine of ``--engine`` with the ``--ray-*`` options (use it as a context manager: a local Ray
    instance stops at its end).

    Raises:
        ValueError: a ``--ray-*`` option set with ``--engine local``, naming it.
    """
    if args.engine != "ray":
        for option, default in (
            ("ray_address", None),
            ("ray_num_gpus", 0.0),
            ("ray_num_cpus", 1.0),
            ("ray_actors", None),
            ("ray_max_retries", 3),
        ):
            if getattr(args, option, default) != default:
                raise ValueError(f"--{option.replace('_', '-')} needs --engine ray")
        return make_engine(args.engine)
    options = RayOptions(
        address=args.ray_address,
        num_cpus=args.ray_num_cpus,
        num_gpus=args.ray_num_gpus,
        actors=getattr(args, "ray_actors", None),
        max_retries=args.ray_max_retries,
    )
    return make_engine("ray", options)


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
