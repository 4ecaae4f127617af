"""HTML pages of retrieval output: the shared page skeleton and the search-results page.

- :func:`html_page`: a complete, self-contained HTML document around a body (used by ``gadms search --html``
  through :func:`render_hits_html`, and by ``gadms explain --html`` around
  :func:`retrieval.explain.render_html`'s fragment);
- :func:`render_hits_html`: the query and a grid of the hits' images (``gadms search --html``).

The search kernels live in :mod:`retrieval.search`; the explanation renderers (terminal, HTML fragment, PNG)
with the explanations in :mod:`retrieval.explain`.
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

if TYPE_CHECKING:  # pragma: no cover
    from .index import SearchHit

__all__ = ["HITS_STYLE", "html_page", "image_src", "render_hits_html"]

#: The style sheet of :func:`render_hits_html`'s page.
HITS_STYLE = (
    "body{font-family:sans-serif;margin:1.5em}h1{font-size:1.3em}"
    ".grid{display:flex;flex-wrap:wrap;gap:12px}"
    "figure{margin:0;width:140px;text-align:center;font-size:.85em;word-break:break-all}"
    "img{width:128px;height:256px;object-fit:contain;background:#eee;border:1px solid #ccc}"
)


def html_page(title: str, body: str, *, style: str | None = None) -> str:
    """A complete UTF-8 HTML document: ``title`` (plain text, escaped here), an optional inline style sheet
    and ``body`` (HTML, inserted as it is)."""
    sheet = f"<style>{style}</style>" if style else ""
    return (
        '<!doctype html>\n<html><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title>{sheet}</head>\n<body>{body}</body></html>\n"
    )


def image_src(path: Path, relative_to: str | os.PathLike | None = None) -> str:
    """The ``src`` of an image on a page: ``path`` relative to ``relative_to`` (the folder the page is saved
    in, URL-quoted) when given and possible, a ``file://`` URI otherwise."""
    if relative_to is not None:
        try:
            return quote(Path(os.path.relpath(path, relative_to)).as_posix())
        except ValueError:  # another drive (Windows)
            pass
    return path.resolve().as_uri()


def render_hits_html(
    hits: list[SearchHit], query: str, *, relative_to: str | os.PathLike | None = None
) -> str:
    """A self-contained HTML page: the query and a grid of the hits' images, each captioned with its rank,
    score and file name.

    Image sources are paths relative to ``relative_to`` (the folder the page will be saved in) when given
    and possible, ``file://`` URIs otherwise (see :func:`image_src`).
    """
    cells = []
    for hit in hits:
        cells.append(
            f'<figure><img src="{html.escape(image_src(hit.path, relative_to))}" '
            f'alt="{html.escape(hit.path.name)}" loading="lazy">'
            f"<figcaption><b>#{hit.rank}</b> {hit.score:.4f}<br>"
            f'<span title="{html.escape(str(hit.path))}">{html.escape(hit.path.name)}</span>'
            "</figcaption></figure>"
        )
    body = (
        f"<h1>{html.escape(query)}</h1><p>{len(hits)} results, best first (cosine similarity)</p>\n"
        f'<div class="grid">{"".join(cells)}</div>\n'
    )
    return html_page(f"gadms search: {query}", body, style=HITS_STYLE)
