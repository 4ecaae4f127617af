"""Figures of the data set card, drawn with PIL: a grid of sample crops with their captions and a
histogram of caption lengths (matplotlib is not a dependency)."""

from __future__ import annotations

import textwrap
from collections import Counter
from typing import Mapping, Sequence

from PIL import Image, ImageDraw, ImageFont

from .images import open_crop

__all__ = ["caption_length_histogram", "sample_grid"]


def _font() -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=11)
    except TypeError:  # old Pillow
        return ImageFont.load_default()


def sample_grid(
    crops: Sequence[bytes],
    captions: Sequence[tuple[str, str]],
    *,
    columns: int = 4,
    crop_height: int = 192,
    cell_width: int = 260,
    text_lines: int = 9,
) -> Image.Image:
    """A grid: per sample, the crop (``crop_height`` px high) and both captions wrapped below it."""
    if not crops:
        raise ValueError("sample_grid needs at least one crop")
    font = _font()
    line_height = 13
    cell_height = crop_height + 8 + text_lines * line_height + 8
    rows = -(-len(crops) // columns)
    grid = Image.new("RGB", (columns * cell_width, rows * cell_height), "white")
    draw = ImageDraw.Draw(grid)
    chars = max(10, cell_width // 6)
    for k, (data, (first, second)) in enumerate(zip(crops, captions)):
        x, y = (k % columns) * cell_width, (k // columns) * cell_height
        crop = open_crop(data)
        width = max(1, round(crop.width * crop_height / crop.height))
        if width > cell_width - 8:
            width = cell_width - 8
        crop = crop.resize((width, crop_height))
        grid.paste(crop, (x + (cell_width - width) // 2, y + 4))
        lines = textwrap.wrap("1: " + first, chars) + textwrap.wrap("2: " + second, chars)
        if len(lines) > text_lines:
            lines = lines[: text_lines - 1] + [lines[text_lines - 1][: chars - 3] + "..."]
        for n, line in enumerate(lines):
            draw.text((x + 4, y + crop_height + 8 + n * line_height), line, fill="black", font=font)
    return grid


def caption_length_histogram(
    lengths: Mapping[int, int] | Sequence[int],
    *,
    bins: int = 20,
    size: tuple[int, int] = (640, 320),
    title: str = "caption length (words)",
) -> Image.Image:
    """A bar chart of caption lengths in ``bins`` equal bins, with axis labels; ``lengths`` is a list
    of lengths or a ``{length: count}`` mapping (for millions of captions)."""
    counter = dict(lengths) if isinstance(lengths, Mapping) else dict(Counter(lengths))
    counter = {int(k): int(v) for k, v in counter.items() if v > 0}
    if not counter:
        raise ValueError("caption_length_histogram needs at least one length")
    low, high = min(counter), max(counter)
    total = sum(counter.values())
    mean = sum(k * v for k, v in counter.items()) / total
    span = max(1, high - low + 1)
    bins = max(1, min(bins, span))
    width_of_bin = span / bins
    counts = [0] * bins
    for value, count in counter.items():
        counts[min(bins - 1, int((value - low) / width_of_bin))] += count
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font = _font()
    left, right, top, bottom = 50, size[0] - 10, 24, size[1] - 30
    draw.text(
        (left, 4), f"{title}: n={total}, min={low}, max={high}, mean={mean:.1f}", fill="black", font=font
    )
    draw.line([(left, bottom), (right, bottom)], fill="black")
    draw.line([(left, top), (left, bottom)], fill="black")
    peak = max(counts)
    bar = (right - left) / bins
    for k, count in enumerate(counts):
        height = (bottom - top) * count / peak
        draw.rectangle(
            [left + k * bar + 1, bottom - height, left + (k + 1) * bar - 1, bottom], fill=(70, 110, 180)
        )
    for k in range(0, bins + 1, max(1, bins // 5)):
        value = low + k * width_of_bin
        draw.text((left + k * bar - 6, bottom + 4), f"{value:.0f}", fill="black", font=font)
    draw.text((4, top), str(peak), fill="black", font=font)
    draw.text((4, bottom - 12), "0", fill="black", font=font)
    return image
