"""Image bytes in, RGB pictures out: content ids, robust decoding and JPEG encoding of crops.

Web pools hold every kind of broken or odd file. :func:`decode_rgb` turns each of them either into an
RGB picture or into a :class:`BadImage` whose ``reason`` is one short word for the stage summaries
(``empty``, ``undecodable``, ``truncated``, ``too_large``, ``too_small``); it never lets a decoder
error escape.
"""

from __future__ import annotations

import hashlib
import io
import re
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps

from gadms_utils.cli_types import positive_int
from gadms_utils.image_io import DEFAULT_MAX_PIXELS, to_rgb

from ..synthetic.schema import encode_jpeg
from .settings import option

__all__ = [
    "BadImage",
    "ImageLimits",
    "content_id",
    "decode_rgb",
    "encode_jpeg",
    "open_crop",
    "probe_image",
    "to_rgb",
]


class BadImage(ValueError):
    """An input image that cannot be used; ``reason`` is the short name counted in stage summaries."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class ImageLimits:
    """Size limits of source images.

    Attributes:
        min_side: images whose shorter side is below this many pixels cannot hold a usable person
            crop (the detector keeps boxes with a shorter side above 90 px) and are rejected.
        max_pixels: images with more pixels are rejected before decoding (decompression bombs,
            panoramas); by default ``gadms_utils.image_io.DEFAULT_MAX_PIXELS`` (64 megapixels), the
            limit every other reader of the project applies too.
    """

    min_side: int = option(90, "reject images with a shorter side below this", positive_int)
    max_pixels: int = option(DEFAULT_MAX_PIXELS, "reject images with more pixels", positive_int)


def content_id(data: bytes) -> str:
    """The stable id of a source image: the first 32 hex digits of the SHA-256 of its bytes."""
    return hashlib.sha256(data).hexdigest()[:32]


def open_crop(data: bytes) -> Image.Image:
    """An encoded crop (a stage's ``crop`` column: JPEG bytes written by the detect stage) as an RGB
    picture, converted by :func:`gadms_utils.image_io.to_rgb`; no checks (the detect stage made it)."""
    return to_rgb(Image.open(io.BytesIO(data)))


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+>")


def _stable(message: str) -> str:
    """``message`` without object addresses (``<_io.BytesIO object at 0x7f...>``), so a rerun records
    the same rejection details."""
    return _ADDRESS.sub(">", message)


def decode_rgb(data: bytes | None, limits: ImageLimits = ImageLimits()) -> tuple[Image.Image, str]:
    """Decode ``data`` into an RGB picture (EXIF orientation applied) and return it with the file's
    original mode (``"RGB"``, ``"CMYK"``, ``"RGBA"``, ...).

    Raises:
        BadImage: with reason ``empty`` (no bytes), ``too_large`` (over ``limits.max_pixels``),
            ``undecodable`` (not an image PIL reads), ``truncated`` (the data ends early) or
            ``too_small`` (shorter side under ``limits.min_side``).
    """
    if not data:
        raise BadImage("empty", "zero bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > limits.max_pixels:
                raise BadImage("too_large", f"{width}x{height} pixels > max_pixels {limits.max_pixels}")
            mode = image.mode
            image.load()
    except BadImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise BadImage("too_large", str(error)) from None
    except OSError as error:
        message = str(error)
        reason = "truncated" if "truncated" in message or "broken data stream" in message else "undecodable"
        raise BadImage(reason, _stable(message)) from None
    except Exception as error:  # PIL raises many types on malformed files (SyntaxError, ValueError, ...)
        raise BadImage("undecodable", _stable(f"{type(error).__name__}: {error}")) from None
    try:
        if image.getexif().get(0x0112, 1) != 1:  # exif_transpose copies even when nothing is to do
            image = ImageOps.exif_transpose(image)
    except Exception:  # a malformed EXIF block: keep the stored orientation
        pass
    image = to_rgb(image)
    if min(image.size) < limits.min_side:
        raise BadImage("too_small", f"{image.size[0]}x{image.size[1]}, shorter side < {limits.min_side}")
    return image, mode


_ROTATED = {5, 6, 7, 8}  # EXIF orientations that swap width and height


def probe_image(data: bytes | None, limits: ImageLimits = ImageLimits()) -> tuple[int, int, str]:
    """Check ``data`` from its header only (no pixel decoding): ``(width, height, mode)`` as
    :func:`decode_rgb` would see them (EXIF rotation applied to the size).

    Catches empty, non-image, too large and too small files; a truncated pixel stream is only found by
    :func:`decode_rgb` (the detect stage), which records it with reason ``truncated``.

    Raises:
        BadImage: reasons ``empty``, ``undecodable``, ``too_large``, ``too_small``.
    """
    if not data:
        raise BadImage("empty", "zero bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            mode = image.mode
            try:
                orientation = image.getexif().get(0x0112, 1)
            except Exception:
                orientation = 1
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise BadImage("too_large", str(error)) from None
    except Exception as error:
        raise BadImage("undecodable", _stable(f"{type(error).__name__}: {error}")) from None
    if width * height > limits.max_pixels:
        raise BadImage("too_large", f"{width}x{height} pixels > max_pixels {limits.max_pixels}")
    if orientation in _ROTATED:
        width, height = height, width
    if min(width, height) < limits.min_side:
        raise BadImage("too_small", f"{width}x{height}, shorter side < {limits.min_side}")
    return width, height, mode
