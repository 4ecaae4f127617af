"""Which words of a caption drive its match: GASS token scores, rendered for a terminal, HTML, or PNG.

The scores are GA-DMS's Gradient-Attention Similarity Scores (:func:`modeling_gadms.gass.gass_scores`, its
default variant unless one is given): for each caption token, in [0, 1], how much it drives the cosine
similarity of the caption's embedding with a target image embedding. The start-of-text, end-of-text and
padding positions score 0. The target is the given image; without one, a *neutral image*: the model's
embedding of all-zero ``pixel_values``, i.e. an image of the processor's mean colour everywhere (after
mean/std normalisation zero is the mean), so that the scores reflect the caption's own emphasis rather
than any particular photo.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from evaluation.embedding import eval_mode, model_device, embed_images, embed_texts
from gadms_utils.image_io import open_image
from modeling_gadms.configuration_gadms import GADMSConfig, image_size_hw
from modeling_gadms.gass import eos_positions, gass_scores
from modeling_gadms.modeling_gadms import GADMSModel

from .render import template, thumbnail_data_uri

__all__ = [
    "NotGADMSModelError",
    "TokenScores",
    "check_gadms_model",
    "explain",
    "neutral_image_embeds",
    "render_html",
    "render_terminal",
    "save_png",
    "score_rgb",
]

_LOW = (255, 255, 255)  # score 0: white
_HIGH = (255, 96, 0)  # score 1: orange-red
_CROP_SIDE = 192  # longest side of the target image drawn beside the tokens in the PNG


class NotGADMSModelError(TypeError):
    """GASS token scores were asked of a model that is not a GA-DMS model (e.g. a plain ``CLIPModel``)."""


def check_gadms_model(model_or_config: Any, name: str | os.PathLike | None = None) -> None:
    """Raise :class:`NotGADMSModelError` unless ``model_or_config`` is a ``GADMSModel`` or ``GADMSConfig``
    (``name``: the model folder or hub id, for the message)."""
    if isinstance(model_or_config, (GADMSModel, GADMSConfig)):
        return
    config = getattr(model_or_config, "config", model_or_config)
    kind = getattr(config, "model_type", None)
    if config is model_or_config:  # a config: name the model class it was saved from, when it says
        what = ", ".join(getattr(config, "architectures", None) or [type(config).__name__])
    else:
        what = type(model_or_config).__name__
    what += f", model_type {kind!r}" if kind else ""
    raise NotGADMSModelError(
        f"{name if name is not None else 'the model'} is not a GA-DMS model (GASS token scores need "
        f"GADMSModel, model_type 'gadms'; got {what})"
    )


@dataclass
class TokenScores:
    """GASS scores of one caption's tokens.

    Attributes:
        tokens: the caption's tokens as readable text, start- and end-of-text tokens included.
        scores: one score in [0, 1] per token (0 for the start- and end-of-text tokens).
        similarity: the caption-image cosine similarity when an image was given, else ``None``.
    """

    tokens: list[str]
    scores: list[float]
    similarity: float | None = None


def score_rgb(score: float) -> tuple[int, int, int]:
    """The background colour of a token with ``score`` (clipped to [0, 1]): white to orange-red."""
    t = min(max(float(score), 0.0), 1.0)
    return tuple(round(lo + (hi - lo) * t) for lo, hi in zip(_LOW, _HIGH))  # type: ignore[return-value]


def neutral_image_embeds(model: torch.nn.Module) -> torch.Tensor:
    """``[1, D]`` image features of all-zero ``pixel_values`` at the model's input size (the processor's mean
    colour everywhere): the GASS target when no image is given."""
    height, width = image_size_hw(model.config.vision_config.image_size)
    pixels = torch.zeros(1, 3, height, width, device=model_device(model))
    with torch.no_grad(), eval_mode(model):
        return model.get_image_features(pixel_values=pixels).float()


def _token_text(tokenizer: Any, token_id: int) -> str:
    return tokenizer.decode([token_id]).replace("</w>", "").strip()


def explain(
    model: torch.nn.Module, processor: Any, text: str, image: Any = None, *, variant: str | None = None
) -> TokenScores:
    """GASS token scores of ``text`` against ``image`` (or the neutral image, see the module docstring).

    Args:
        model: a GA-DMS model (``GADMSModel``), on its device.
        processor: its processor (tokenizer and image preprocessing).
        text: the caption (truncated to the model's context like any caption).
        image: a PIL image, an image path, or ``None`` for the neutral image.
        variant: ``"paper"`` or ``"released"`` GASS; default: :func:`~modeling_gadms.gass.gass_scores`' own.

    Returns:
        The tokens from start- to end-of-text with their scores, and the caption-image cosine similarity
        when an image was given.

    Raises:
        NotGADMSModelError: ``model`` is not a ``GADMSModel``.
    """
    check_gadms_model(model)
    device = model_device(model)
    input_ids = processor(text=[text], return_tensors="pt", truncation=True)["input_ids"].to(device)
    if image is None:
        image_embeds, similarity = neutral_image_embeds(model), None
    else:
        image_embeds = embed_images(model, processor, [image], progress=False).clone().to(device)
        text_embeds = embed_texts(model, processor, [text], progress=False)
        similarity = float(F.cosine_similarity(text_embeds, image_embeds.cpu(), dim=-1)[0])
    with eval_mode(model):
        options = {} if variant is None else {"variant": variant}  # None: gass_scores' own default
        scores = gass_scores(model, input_ids, image_embeds, **options)[0]
    end = int(eos_positions(input_ids, model.config.text_config.eos_token_id)[0]) + 1
    tokenizer = getattr(processor, "tokenizer", processor)
    ids = input_ids[0, :end].tolist()
    return TokenScores(
        tokens=[_token_text(tokenizer, i) for i in ids],
        scores=[float(s) for s in scores[:end].tolist()],
        similarity=similarity,
    )


# Plain ANSI escapes rather than `rich`: one background colour per token does not need a dependency, and
# whether to colour at all (a terminal, --no-color, NO_COLOR) is decided by the caller.
def _ansi_background(rgb: tuple[int, int, int]) -> str:
    """The xterm-256 colour cube entry nearest ``rgb``, as a background escape (black text)."""
    r, g, b = (round(c / 255 * 5) for c in rgb)
    return f"\x1b[48;5;{16 + 36 * r + 6 * g + b}m\x1b[38;5;16m"


def render_terminal(ts: TokenScores, color: bool = True) -> str:
    """The caption's tokens on one line, with ANSI background colours by score when ``color`` (plain
    otherwise), a blank line, a ``token score`` listing, and the similarity when there is one."""
    if color:
        caption = (f"{_ansi_background(score_rgb(s))}{t}\x1b[0m" for t, s in zip(ts.tokens, ts.scores))
    else:
        caption = iter(ts.tokens)
    lines = [" ".join(caption), ""]
    width = max((len(t) for t in ts.tokens), default=0)
    lines.extend(f"{t:<{width}}  {s:.3f}" for t, s in zip(ts.tokens, ts.scores))
    if ts.similarity is not None:
        lines.append(f"similarity  {ts.similarity:.4f}")
    return "\n".join(lines)


def _image_name(image: Any) -> str:
    if isinstance(image, (str, os.PathLike)):
        return os.path.basename(os.fspath(image))
    return os.path.basename(str(getattr(image, "filename", "") or "")) or "target image"


def render_html(ts: TokenScores, image: Any = None) -> str:
    """An HTML fragment (no ``<html>`` wrapper; template ``explain.html``): one ``<span class="gadms-token">``
    per token, coloured by score, with the score as its tooltip, and the similarity when there is one.

    With ``image`` (a path or PIL image: the target the scores were computed against), the fragment also
    holds the image as a small JPEG ``data:`` URI (``<img class="gadms-crop">``) beside the tokens.
    """
    tokens = [
        {"text": token, "score": score, "rgb": "rgb({},{},{})".format(*score_rgb(score))}
        for token, score in zip(ts.tokens, ts.scores)
    ]
    crop = None if image is None else thumbnail_data_uri(image)
    return template("explain.html").render(
        tokens=tokens, similarity=ts.similarity, crop=crop, crop_name=_image_name(image)
    ).strip()


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the bitmap font, one size
        return ImageFont.load_default()


def save_png(
    ts: TokenScores, path: str | os.PathLike, *, image: Any = None, width: int = 900, font_size: int = 20
) -> None:
    """Draw the tokens as coloured boxes (wrapped to ``width`` pixels), the similarity below, into a PNG.

    With ``image`` (a path or PIL image: the target the scores were computed against), the image, shrunk to
    at most 192 pixels on its long side, is drawn at the left and the tokens beside it.
    """
    font = _font(font_size)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    pad, gap, line = 6, 4, font_size + 16
    crop = None
    if image is not None:
        crop = open_image(image).convert("RGB")  # upright RGB, as the model saw it
        crop.thumbnail((_CROP_SIDE, _CROP_SIDE))
    start = gap if crop is None else crop.width + 4 * gap
    boxes, x, y = [], start, gap
    for token, score in zip(ts.tokens, ts.scores):
        bbox = measure.textbbox((0, 0), token, font=font)
        w = bbox[2] - bbox[0] + 2 * pad
        if x + w > width - gap and x > start:
            x, y = start, y + line + gap
        boxes.append((x, y, w, bbox, token, score))
        x += w + gap
    height = y + line + gap + (line if ts.similarity is not None else 0)
    if crop is not None:
        height = max(height, crop.height + 2 * gap)
    canvas = Image.new("RGB", (width, height), "white")
    if crop is not None:
        canvas.paste(crop, (gap, gap))
    draw = ImageDraw.Draw(canvas)
    for x, y, w, (left, top, _, bottom), token, score in boxes:
        box = (x, y, x + w, y + line)
        draw.rounded_rectangle(box, radius=4, fill=score_rgb(score), outline=(200, 200, 200))
        draw.text((x + pad - left, y + (line - bottom - top) / 2), token, fill="black", font=font)
    if ts.similarity is not None:
        draw.text((start, y + line + gap + 2), f"similarity: {ts.similarity:.4f}", fill="black", font=font)
    canvas.save(path, format="PNG")
