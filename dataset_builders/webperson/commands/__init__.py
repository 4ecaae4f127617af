"""The subcommands of ``python -m dataset_builders.webperson``, one module each.

Every module defines ``add_parser(subparsers)``, which registers its subcommand with
``set_defaults(func=run)``, and ``run(args)``, which returns a stage manifest (printed by
:func:`..cli.main`) or ``None``. What they share is in :mod:`.common`.
"""

from __future__ import annotations

from typing import Any

from . import (
    caption,
    detect,
    export,
    filter,
    ingest,
    pose,
    publish,
    status,
    templates_extract,
    templates_select,
)

__all__ = ["COMMANDS", "add_parsers"]

#: The subcommand modules, in the order ``--help`` lists them (the stages in pipeline order, then the tools).
COMMANDS = (
    ingest,
    detect,
    pose,
    caption,
    filter,
    export,
    publish,
    templates_extract,
    templates_select,
    status,
)


def add_parsers(subparsers: Any) -> None:
    """Register every subcommand."""
    for command in COMMANDS:
        command.add_parser(subparsers)
