"""Search a folder of person images by text with a GA-DMS model: gallery index, search, explanations.

- :mod:`retrieval.index`: :class:`GalleryIndex`, the embeddings of a folder of images (build, save, load,
  search, :func:`search_text` for a caption);
- :mod:`retrieval.search`: exact top-k search with torch or FAISS (identical results);
- :mod:`retrieval.ann`: approximate search for large galleries (a FAISS IVF index, candidates rescored
  exactly), saved with the index;
- :mod:`retrieval.render`: HTML pages of the results (:func:`render_hits_html`) and the shared page skeleton;
- :mod:`retrieval.explain`: GASS token scores of a caption, rendered for a terminal, HTML or PNG;
- :mod:`retrieval.cli`: the ``gadms`` command (``index``, ``search``, ``explain``).
"""

from .explain import TokenScores, explain, render_html, render_terminal, save_png
from .index import GalleryIndex, SearchHit, search_text
from .render import render_hits_html
from .search import exact_topk, faiss_topk

__all__ = [
    "GalleryIndex",
    "SearchHit",
    "TokenScores",
    "exact_topk",
    "explain",
    "faiss_topk",
    "render_hits_html",
    "render_html",
    "render_terminal",
    "save_png",
    "search_text",
]
