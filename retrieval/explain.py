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

import html
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from evaluation.embedding import eval_mode, model_device, embed_images, embed_texts
from modeling_gadms.configuration_gadms import image_size_hw
from modeling_gadms.gass import eos_positions, gass_scores

__all__ = [
    "TokenScores",
    "explain",
    "neutral_image_embeds",
    "render_html",
    "render_terminal",
    "save_png",
    "score_rgb",
]

_LOW = (255, 255, 255)  # score 0: white
_HIGH = (255, 96, 0)  # score 1: orange-red


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
    """
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


def _ansi_background(rgb: tuple[int, int, int]) -> str:
    """The xterm-256 colour cube entry nearest ``rgb``, as a background escape (black text)."""
    r, g, b = (round(c / 255 * 5) for c in rgb)
    return f"\x1b[48;5;{16 + 36 * r + 6 * g + b}m\x1b[38;5;16m"


def render_terminal(ts: TokenScores, color: bool = True) -> str:
    """The caption with ANSI background colours by score (when ``color``), then a ``token score`` listing
    and the similarity when there is one."""
    lines = []
    if color:
        coloured = (f"{_ansi_background(score_rgb(s))}{t}\x1b[0m" for t, s in zip(ts.tokens, ts.scores))
        lines.append(" ".join(coloured))
        lines.append("")
    width = max((len(t) for t in ts.tokens), default=0)
    lines.extend(f"{t:<{width}}  {s:.3f}" for t, s in zip(ts.tokens, ts.scores))
    if ts.similarity is not None:
        lines.append(f"similarity  {ts.similarity:.4f}")
    return "\n".join(lines)


def render_html(ts: TokenScores) -> str:
    """An HTML fragment (no ``<html>`` wrapper): one ``<span class="gadms-token">`` per token, coloured by
    score, with the score as its tooltip, and the similarity when there is one."""
    spans = []
    for token, score in zip(ts.tokens, ts.scores):
        r, g, b = score_rgb(score)
        spans.append(
            f'<span class="gadms-token" title="{score:.3f}" data-score="{score:.4f}" '
            f'style="background-color:rgb({r},{g},{b});color:#000;padding:2px 4px;margin:1px;'
            f'border-radius:3px;display:inline-block">{html.escape(token)}</span>'
        )
    similarity = ""
    if ts.similarity is not None:
        similarity = f'<div class="gadms-similarity">similarity: {ts.similarity:.4f}</div>'
    return (
        '<div class="gadms-explain" style="font-family:sans-serif;line-height:1.9">'
        f'<div class="gadms-tokens">{" ".join(spans)}</div>{similarity}</div>'
    )


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the bitmap font, one size
        return ImageFont.load_default()


def save_png(ts: TokenScores, path: str | os.PathLike, *, width: int = 900, font_size: int = 20) -> None:
    """Draw the tokens as coloured boxes (wrapped to ``width`` pixels), the similarity below, into a PNG."""
    font = _font(font_size)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    pad, gap, line = 6, 4, font_size + 16
    boxes, x, y = [], gap, gap
    for token, score in zip(ts.tokens, ts.scores):
        bbox = measure.textbbox((0, 0), token, font=font)
        w = bbox[2] - bbox[0] + 2 * pad
        if x + w > width - gap and x > gap:
            x, y = gap, y + line + gap
        boxes.append((x, y, w, bbox, token, score))
        x += w + gap
    height = y + line + gap + (line if ts.similarity is not None else 0)
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    for x, y, w, (left, top, _, bottom), token, score in boxes:
        box = (x, y, x + w, y + line)
        draw.rounded_rectangle(box, radius=4, fill=score_rgb(score), outline=(200, 200, 200))
        draw.text((x + pad - left, y + (line - bottom - top) / 2), token, fill="black", font=font)
    if ts.similarity is not None:
        draw.text((gap, y + line + gap + 2), f"similarity: {ts.similarity:.4f}", fill="black", font=font)
    image.save(path, format="PNG")
