"""The one image reader of the project: training, evaluation and the gallery index all read through it.

:func:`open_image` takes a PIL image, a path, or a ``datasets`` undecoded image ``{"path", "bytes"}`` and
returns an RGB PIL image

- with its EXIF orientation applied (phone photos stand upright; the orientation tag is removed from the
  result, so it is applied once);
- converted by :func:`to_rgb` (alpha composited on white; CMYK, palette, grey and 16-bit grey converted);
- decoded only when its size is within a limit on decoded pixels. The limit is, in order of precedence,
  the ``max_pixels`` argument, the environment variable ``GADMS_MAX_IMAGE_PIXELS`` (read at every call;
  ``none`` or ``0`` for no limit) or the module attribute :data:`DEFAULT_MAX_PIXELS` (64 megapixels,
  the WebPerson builder's ``ImageLimits.max_pixels``). A larger JPEG (or JPEG 2000) is decoded at a
  reduced scale (1/2, 1/4 or 1/8, by ``Image.draft`` / the JPEG 2000 ``reduce`` factor) that fits the
  limit; any other larger image raises :class:`ImageTooLarge` (an ``OSError``) from its header alone,
  before a pixel is decoded. PIL's own decompression-bomb check is lifted while reading, so that this
  limit is the one in force (higher or lower than PIL's ``Image.MAX_IMAGE_PIXELS``).

Anything unreadable (a missing, empty or truncated file, not an image) raises :class:`UnreadableImage`,
an ``OSError`` naming the file, with a short ``reason``; callers that skip unreadable images catch
``OSError``.
"""

from __future__ import annotations

import io
import os
import threading
from contextlib import contextmanager
from typing import Any, Iterator

from PIL import Image, ImageFile, ImageOps

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "MAX_PIXELS_ENV",
    "ImageTooLarge",
    "UnreadableImage",
    "apply_exif_orientation",
    "max_image_pixels",
    "open_image",
    "to_rgb",
]

#: Default limit on the decoded pixels of one image (width x height), used when neither the
#: ``max_pixels`` argument nor ``GADMS_MAX_IMAGE_PIXELS`` is given; may be reassigned at run time.
DEFAULT_MAX_PIXELS = 64_000_000
#: Environment variable overriding :data:`DEFAULT_MAX_PIXELS` (an integer; ``none`` / ``0``: no limit).
MAX_PIXELS_ENV = "GADMS_MAX_IMAGE_PIXELS"

_EXIF_ORIENTATION = 0x0112
_NO_LIMIT = {"", "none", "off", "0", "-1", "unlimited"}

ImageLike = Any  # PIL image, a path, or a ``datasets`` undecoded image ``{"path": ..., "bytes": ...}``


class UnreadableImage(OSError):
    """An image that cannot be read. ``name``: the file (or ``<bytes>``); ``reason``: a short description.

    Constructed like any ``OSError`` from its message (so that it survives pickling and data-loader
    workers); :func:`open_image` fills in ``name`` and ``reason``.
    """

    def __init__(self, message: str, *, name: str = "", reason: str = "") -> None:
        super().__init__(message)
        self.name = name
        self.reason = reason or message

    @classmethod
    def of(cls, name: str, reason: str) -> "UnreadableImage":
        """``cannot read image <name>: <reason>``."""
        return cls(f"cannot read image {name}: {reason}", name=name, reason=reason)


class ImageTooLarge(UnreadableImage):
    """An image whose decoded size would exceed the pixel limit (raised before its pixels are decoded).

    Attributes:
        name: the file (or ``<bytes>``).
        reason: ``"too large: WxH = N pixels > limit L (...)"``.
        size: ``(width, height)`` as stored in the file.
        max_pixels: the limit in force.
    """

    def __init__(
        self, message: str, *, name: str = "", reason: str = "", size: tuple[int, int] = (0, 0),
        max_pixels: int = 0,
    ) -> None:  # fmt: skip
        super().__init__(message, name=name, reason=reason)
        self.size = tuple(size)
        self.max_pixels = max_pixels

    @classmethod
    def of_size(cls, name: str, size: tuple[int, int], max_pixels: int) -> "ImageTooLarge":
        """The error for image ``name`` of ``size`` (width, height) over ``max_pixels``."""
        width, height = size
        reason = (
            f"too large: {width}x{height} = {width * height:,} pixels > limit {max_pixels:,} "
            f"(raise it with {MAX_PIXELS_ENV} or max_pixels=)"
        )
        return cls(f"cannot read image {name}: {reason}", name=name, reason=reason, size=size,
                   max_pixels=max_pixels)  # fmt: skip


def max_image_pixels(max_pixels: int | None = None) -> int | None:
    """The pixel limit in force: ``max_pixels`` when given, else ``$GADMS_MAX_IMAGE_PIXELS``, else
    :data:`DEFAULT_MAX_PIXELS`. ``None`` means no limit (``max_pixels <= 0`` or the variable ``none``/``0``).

    Raises:
        ValueError: the environment variable is not an integer.
    """
    if max_pixels is not None:
        return int(max_pixels) if max_pixels > 0 else None
    value = os.environ.get(MAX_PIXELS_ENV)
    if value is None:
        return DEFAULT_MAX_PIXELS if DEFAULT_MAX_PIXELS and DEFAULT_MAX_PIXELS > 0 else None
    if value.strip().lower() in _NO_LIMIT:
        return None
    try:
        limit = int(value.strip())
    except ValueError:
        message = f"{MAX_PIXELS_ENV}={value!r} is not an integer number of pixels (or 'none')"
        raise ValueError(message) from None
    return limit if limit > 0 else None


def to_rgb(image: Image.Image) -> Image.Image:
    """``image`` as RGB: alpha is composited on white, CMYK / palette / grey / 16-bit are converted."""
    if image.mode == "RGB":
        return image
    palette_alpha = image.mode == "P" and ("transparency" in image.info or image.palette.mode == "RGBA")
    if image.mode in ("RGBA", "LA", "PA") or palette_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        image = image.point(lambda v: v / 256).convert("L")  # 16-bit grey to 8 bit
    return image.convert("RGB")


def _orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:  # a malformed EXIF block: keep the stored orientation
        return 1


def apply_exif_orientation(image: Image.Image) -> Image.Image:
    """``image`` turned upright by its EXIF orientation (tags 2-8), the tag removed; else ``image`` itself."""
    if _orientation(image) in (2, 3, 4, 5, 6, 7, 8):
        try:
            return ImageOps.exif_transpose(image)
        except Exception:  # a malformed EXIF block: keep the stored orientation
            return image
    return image


# PIL's decompression-bomb check (a warning above Image.MAX_IMAGE_PIXELS, an error above twice that) is
# lifted while this module reads: the limit here replaces it. Reference-counted, so that threads reading
# at the same time neither serialise nor restore the setting while another still reads.
_bomb_lock = threading.Lock()
_bomb_users = 0
_bomb_saved: int | None = None


@contextmanager
def _pil_bomb_check_lifted() -> Iterator[None]:
    global _bomb_users, _bomb_saved
    with _bomb_lock:
        if _bomb_users == 0:
            _bomb_saved = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
        _bomb_users += 1
    try:
        yield
    finally:
        with _bomb_lock:
            _bomb_users -= 1
            if _bomb_users == 0:
                Image.MAX_IMAGE_PIXELS = _bomb_saved


def _reduce_to_limit(image: Image.Image, name: str, limit: int) -> None:
    """Make ``image`` (opened, not loaded) decode within ``limit`` pixels, or raise :class:`ImageTooLarge`."""
    width, height = image.size
    if width * height <= limit:
        return
    for factor in (2, 4, 8):
        reduced = -(-width // factor) * -(-height // factor)
        if reduced <= limit:
            break
    else:
        raise ImageTooLarge.of_size(name, (width, height), limit)
    if image.format == "JPEG":
        image.draft(image.mode, (width // factor, height // factor))  # DCT scaling: 1/2, 1/4 or 1/8
        decoded = image.size  # draft() sets the size the decoder will produce (unchanged when it cannot)
    elif image.format == "JPEG2000":
        image.reduce = factor.bit_length() - 1  # decode at resolution level 1 / factor
        decoded = (int((width + factor // 2) / factor), int((height + factor // 2) / factor))
    else:
        raise ImageTooLarge.of_size(name, (width, height), limit)
    if decoded[0] * decoded[1] > limit:
        raise ImageTooLarge.of_size(name, (width, height), limit)


def open_image(item: ImageLike, max_pixels: int | None = None) -> Image.Image:
    """Read an image, given as PIL image, path, bytes or ``{"path", "bytes"}`` dict, as an upright RGB image.

    Args:
        item: a PIL image (oriented and converted; the limit applies when it is opened but not yet
            decoded), a path, the file's bytes, or a ``datasets`` undecoded image dict.
        max_pixels: limit on decoded pixels (default: ``$GADMS_MAX_IMAGE_PIXELS``, else
            :data:`DEFAULT_MAX_PIXELS`; ``0`` or negative: no limit). See the module docstring.

    Returns:
        An RGB image, fully decoded, EXIF orientation applied.

    Raises:
        ImageTooLarge: over the limit and not reducible at decode time (nothing decoded).
        UnreadableImage: the data cannot be read as an image (a missing, empty, truncated or non-image
            file). Both are ``OSError`` subclasses whose message names the file.
        ValueError: a dict with neither bytes nor path. TypeError: an unsupported ``item`` type.
    """
    if isinstance(item, Image.Image):
        if isinstance(item, ImageFile.ImageFile) and item.tile:  # opened, not decoded yet
            name = str(getattr(item, "filename", "") or "<image>")
            limit = max_image_pixels(max_pixels)
            try:
                if limit is not None:
                    _reduce_to_limit(item, name, limit)
                with _pil_bomb_check_lifted():
                    item.load()
            except (UnreadableImage, MemoryError):
                raise
            except Exception as err:
                raise UnreadableImage.of(name, _describe(err, None)) from err
        return to_rgb(apply_exif_orientation(item))
    if isinstance(item, dict):
        if item.get("bytes") is not None:
            source: Any = io.BytesIO(item["bytes"])
            name = str(item.get("path") or "<bytes>")
        elif item.get("path"):
            source = name = str(item["path"])
        else:
            raise ValueError(f"image entry has neither bytes nor path: {item!r}")
    elif isinstance(item, (str, os.PathLike)):
        source = name = os.fspath(item)
    elif isinstance(item, (bytes, bytearray)):
        source, name = io.BytesIO(item), "<bytes>"
    else:
        raise TypeError(f"cannot read an image from {type(item).__name__}")
    limit = max_image_pixels(max_pixels)
    try:
        with _pil_bomb_check_lifted(), Image.open(source) as image:
            if limit is not None:
                _reduce_to_limit(image, name, limit)
            image.load()
            upright = apply_exif_orientation(image)
            return to_rgb(upright)
    except (UnreadableImage, MemoryError):
        raise
    except Exception as err:  # PIL raises many types on malformed files (OSError, SyntaxError, ...)
        raise UnreadableImage.of(name, _describe(err, source)) from err


def _describe(err: Exception, source: Any) -> str:
    """The reason of a read error: ``empty file (0 bytes)`` when ``source`` holds nothing, else the error."""
    empty = False
    if source is None:
        pass
    elif isinstance(source, io.BytesIO):
        empty = not source.getbuffer().nbytes
    else:
        try:
            empty = os.path.getsize(source) == 0
        except OSError:
            pass
    if empty:
        return "empty file (0 bytes)"
    return str(err) if isinstance(err, OSError) else f"{type(err).__name__}: {err}"
