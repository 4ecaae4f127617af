"""Loading the transformers models of the backends: a model id or folder, or a loaded model.

Every transformers backend (detector, pose estimator, captioner, text generator, text embedder)
takes ``model`` as an id / folder (loaded here with its processor or tokenizer) or as a loaded
model object (then its processor or tokenizer must be passed too), and runs it on ``device`` in eval
mode.
"""

from __future__ import annotations

from typing import Any

__all__ = ["load_pretrained", "model_name"]


def model_name(model: Any) -> str:
    """The name of ``model`` for records: the id or folder it is loaded from, else the loaded model's
    ``config._name_or_path`` (or its class name where that is empty)."""
    if isinstance(model, str):
        return model
    return getattr(model.config, "_name_or_path", "") or type(model).__name__


def load_pretrained(
    model: Any,
    companion: Any,
    model_class: Any,
    companion_class: Any,
    *,
    what: str,
    device: str,
    **from_pretrained: Any,
) -> tuple[Any, Any]:
    """``(model, companion)``: the model on ``device`` in eval mode, with its processor or tokenizer.

    A ``model`` given as an id or folder is loaded with ``model_class.from_pretrained(model,
    **from_pretrained)`` (e.g. ``dtype=``), and its companion, unless given, with
    ``companion_class.from_pretrained(model)``. ``what`` names the companion in the error raised when
    a model given as an object comes without it.
    """
    if isinstance(model, str):
        companion = companion or companion_class.from_pretrained(model)
        model = model_class.from_pretrained(model, **from_pretrained)
    if companion is None:
        raise ValueError(f"pass the {what} of a model given as an object")
    return model.to(device).eval(), companion
