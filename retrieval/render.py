"""HTML pages of retrieval output, from the jinja2 templates in ``retrieval/templates/`` (autoescaped).

- :func:`html_page`: a complete HTML document around a body (``page.html``; used by ``gadms explain --html``
  around :func:`retrieval.explain.render_html`'s fragment);
- :func:`render_hits_html`: the query and a grid of the hits' thumbnails (``search.html``, which extends
  ``page.html``; ``gadms search --html``);
- :func:`thumbnail_data_uri`: an image as a small JPEG ``data:`` URI, so that pages carry their images and
  still show them after being moved, mailed or opened on another machine.

The search kernels live in :mod:`retrieval.search`; the explanation renderers (terminal, HTML fragment, PNG)
with the explanations in :mod:`retrieval.explain`.
"""

from __future__ import annotations

import base64
import io
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
from markupsafe import Markup
from PIL import Image

from gadms_utils.image_io import open_image

if TYPE_CHECKING:  # pragma: no cover
    from .index import SearchHit

__all__ = ["HITS_STYLE", "THUMBNAIL_SIDE", "html_page", "render_hits_html", "template", "thumbnail_data_uri"]

#: The style sheet of :func:`render_hits_html`'s page.
HITS_STYLE = (
    "body{font-family:sans-serif;margin:1.5em}h1{font-size:1.3em}"
    ".grid{display:flex;flex-wrap:wrap;gap:12px}"
    "figure{margin:0;width:140px;text-align:center;font-size:.85em;word-break:break-all}"
    "img,.missing{width:128px;height:256px;object-fit:contain;background:#eee;border:1px solid #ccc}"
    ".missing{display:inline-flex;align-items:center;justify-content:center;color:#666}"
)

#: The longest side, in pixels, of the thumbnails embedded in pages (twice the page's display size).
THUMBNAIL_SIDE = 256

_THUMBNAIL_ERRORS = (OSError, ValueError, Image.DecompressionBombError)


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("retrieval", "templates"),
        autoescape=True,  # every value is text unless passed as markupsafe.Markup
        trim_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )


def template(name: str) -> jinja2.Template:
    """The template ``retrieval/templates/<name>`` (package data), in an autoescaping environment."""
    return _environment().get_template(name)


def html_page(title: str, body: str, *, style: str | None = None) -> str:
    """A complete UTF-8 HTML document: ``title`` (plain text, escaped here), an optional inline style sheet
    (trusted CSS) and ``body`` (HTML, inserted as it is)."""
    return template("page.html").render(title=title, style=Markup(style or ""), body=Markup(body))


def thumbnail_data_uri(image: Any, max_side: int = THUMBNAIL_SIDE, *, quality: int = 85) -> str | None:
    """``image`` (a path or PIL image) shrunk to at most ``max_side`` pixels on its long side, upright, as a
    ``data:image/jpeg;base64,...`` URI; ``None`` when it cannot be read (e.g. deleted since indexing)."""
    try:
        picture = open_image(image).convert("RGB")  # upright RGB, like the images the index embedded
    except _THUMBNAIL_ERRORS:
        return None
    picture.thumbnail((max_side, max_side))
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def render_hits_html(hits: list[SearchHit], query: str, *, thumbnail_side: int = THUMBNAIL_SIDE) -> str:
    """A self-contained HTML page: the query and a grid of the hits, each a thumbnail embedded as a JPEG
    ``data:`` URI (at most ``thumbnail_side`` pixels on the long side) linking to the original file (an
    absolute ``file://`` URL), captioned with its rank, score and file name (the full path as its tooltip).

    The page shows its images wherever it is moved; the links to the originals work on the machine that
    holds them. A hit whose file cannot be read shows "image unreadable" in place of its thumbnail.
    """
    rows = []
    for hit in hits:
        path = Path(hit.path).resolve()
        rows.append(
            {"rank": hit.rank, "score": hit.score, "path": str(path), "name": path.name,
             "href": path.as_uri(), "thumbnail": thumbnail_data_uri(path, thumbnail_side)}
        )  # fmt: skip
    return template("search.html").render(
        title=f"gadms search: {query}", style=Markup(HITS_STYLE), query=query, hits=rows
    )
