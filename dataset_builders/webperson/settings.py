"""Declarative stage settings: the dataclass fields that are command-line options, and their JSON form.

The thresholds of a stage (:class:`~.images.ImageLimits`, :class:`~.detection.DetectionThresholds`,
:class:`~.pose.PoseThresholds`, :class:`~.caption_filter.FilterRules`) are frozen dataclasses. A field
made with :func:`option` is also a command-line option of its stage (field ``min_score``: option
``--min-score``) with the field's default and the help and argparse type given to :func:`option`; the
command line builds its options and the dataclass from the same fields (:func:`option_fields`), so
adding a threshold is adding one field. :func:`settings_dict` is the JSON form that a stage records in
its ``settings.json``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

__all__ = ["OPTION_KEY", "option", "option_fields", "settings_dict"]

#: The key of a field's ``metadata`` that holds its ``argparse.add_argument`` keywords.
OPTION_KEY = "cli_option"


def option(default: Any, help: str, type: Callable[[str], Any], **argparse_options: Any) -> Any:
    """A dataclass field with ``default`` that is also a command-line option.

    Args:
        default: the field's default, also the option's (a tuple is given to argparse as a list).
        help: the option's help text.
        type: the option's argparse type (``float``, ``gadms_utils.cli_types.positive_int``, ...).
        argparse_options: further ``add_argument`` keywords (e.g. ``nargs="+"``).
    """
    return dataclasses.field(
        default=default, metadata={OPTION_KEY: {"help": help, "type": type, **argparse_options}}
    )


def option_fields(settings_class: type) -> list[dataclasses.Field]:
    """The fields of ``settings_class`` made with :func:`option`, in declaration order."""
    return [f for f in dataclasses.fields(settings_class) if OPTION_KEY in f.metadata]


def settings_dict(settings: Any) -> dict[str, Any]:
    """The JSON-friendly dict of a settings dataclass instance (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(settings).items()}
