"""GA-DMS person search demo: type a description, see the best gallery matches and the GASS token scores.

A Gradio app (the Hugging Face Spaces convention: ``app.py`` at the repository root). It searches a gallery
index (``retrieval.index.GalleryIndex``) with a GA-DMS model and shows

- the top-k images of the gallery with their cosine scores (``#1 0.734 path``), and
- the query's tokens coloured by their GASS scores against the best image (``retrieval.explain``).

Run ``make demo`` once (it trains the small demo model into ``demo_output/run``), then ``python app.py``:
without ``--index`` the app generates a small synthetic gallery of unseen persons
(``dataset_builders.synthetic``) and indexes it, both once, cached under ``--workdir``. ``python app.py
--index INDEX_DIR`` searches your own images (``gadms index --model ... --images DIR --out INDEX_DIR``
writes the index folder) with the index's model, or ``--model DIR_OR_HUB_ID``. Nothing is sent anywhere:
analytics off, no share link, the page's fonts are Gradio's bundled ones.

For tests: ``build_demo(index, model, processor, k=...)`` returns the ``gr.Blocks`` without launching it, and
``run_query`` is the search callback.
"""
from __future__ import annotations

import argparse
import hashlib
import html
import os
import sys
from pathlib import Path
from typing import Any, Sequence

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported

import gradio as gr  # noqa: E402

from evaluation.embedding import load_model_and_processor  # noqa: E402
from retrieval.explain import NotGADMSModelError, explain, render_html  # noqa: E402
from retrieval.index import EMBEDDINGS_FILE, GalleryIndex, normalise_model_id, search_text  # noqa: E402

ROOT = Path(__file__).resolve().parent
#: Where ``make demo`` (scripts/demo.py, configs/demo_cpu.yaml) saves its model: best validation R@1, last.
DEMO_MODELS: tuple[Path, ...] = (ROOT / "demo_output" / "run" / "best", ROOT / "demo_output" / "run" / "last")
DEFAULT_WORKDIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "gadms" / "app"
DEFAULT_K = 10
MAX_K = 50
#: The synthetic gallery: persons drawn with another seed than ``make demo``'s training data (seed 0).
GALLERY_SEED = 1
GALLERY_IDENTITIES = 50
GALLERY_IMAGES_PER_IDENTITY = 4
#: Example queries in the synthetic captions' vocabulary (dataset_builders/synthetic/captions.py).
EXAMPLE_QUERIES: tuple[str, ...] = (
    "A young woman with long blonde hair wears a pink coat and gray jeans.",
    "A man in a green coat and purple pants carries a red backpack.",
    "The slim man has short black hair and wears a white t-shirt, blue jeans and red sandals.",
    "A woman in an orange tank top, a beige skirt and brown sandals.",
)
EMPTY_QUERY_MESSAGE = "Type a description of a person, for example: " + EXAMPLE_QUERIES[0]


def _message(text: str) -> str:
    """A short notice for the token-score panel."""
    return f'<p class="gadms-message">{html.escape(text)}</p>'


def run_query(index: GalleryIndex, model: Any, processor: Any, query: str | None,
              k: int | float = DEFAULT_K) -> tuple[list[tuple[str, str]], str]:
    """The app's search callback: the top-k gallery items and the token-score HTML of ``query``.

    Returns ``(items, html)``: ``items`` are ``(image file, "#rank score path")`` pairs for ``gr.Gallery`` and
    ``html`` shows the query's GASS token scores against the best image. An empty query gives no items and a
    message saying what to type.
    """
    text = (query or "").strip()
    if not text:
        return [], _message(EMPTY_QUERY_MESSAGE)
    k = max(1, min(int(k), len(index)))
    hits = search_text(index, model, processor, text, k=k)
    items = [(str(hit.path), f"#{hit.rank} {hit.score:.3f} {_relative(hit.path, index.root)}")
             for hit in hits]
    if not hits:
        return [], _message("The gallery is empty.")
    try:
        scores = explain(model, processor, text, image=hits[0].path)
    except NotGADMSModelError:  # any model searches; token scores are GA-DMS's alone
        return items, _message("Token scores need a GA-DMS model; this index was made with another.")
    header = (f'<p class="gadms-token-header">GASS token scores of the query against #1 '
              f"({html.escape(_relative(hits[0].path, index.root))})</p>")
    return items, header + render_html(scores)


def _relative(path: Path | str, root: Path | str) -> str:
    """``path`` relative to the gallery root when it lies under it, else as given."""
    try:
        return Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        return str(path)


def build_demo(index: GalleryIndex, model: Any, processor: Any, *, k: int = DEFAULT_K,
               examples: Sequence[str] = EXAMPLE_QUERIES) -> gr.Blocks:
    """The search page for ``index`` searched with ``model`` / ``processor``; call ``.launch()`` on it.

    The gallery folder (``index.root``) is registered as a Gradio static path, so result images are served
    from it directly (not copied into Gradio's cache); every file under it is readable through the app.
    """
    if len(index) == 0:
        raise ValueError("the gallery index is empty")
    gr.set_static_paths([str(index.root)])
    top_k = max(1, min(k, len(index), MAX_K))
    with gr.Blocks(title="GA-DMS person search", analytics_enabled=False) as demo:
        gr.Markdown(
            "## GA-DMS text-to-person search\n"
            f"Describe a person; the {len(index)} gallery images of `{index.root}` are ranked by cosine "
            f"similarity with the model `{index.model}`. Token colours are the query's GASS scores against "
            "the best image (how much each word drives the match).")
        with gr.Row():
            query = gr.Textbox(label="Description", placeholder=EMPTY_QUERY_MESSAGE, lines=1, max_lines=4,
                               scale=5, elem_id="gadms-query")
            k_slider = gr.Slider(1, min(len(index), MAX_K), value=top_k, step=1, label="Results (k)", scale=1,
                                 elem_id="gadms-k")
        button = gr.Button("Search", variant="primary", elem_id="gadms-search")
        if examples:
            gr.Examples(examples=[[e] for e in examples], inputs=[query], label="Example queries",
                        cache_examples=False)
        gallery = gr.Gallery(label="Top-k images", columns=5, height="auto", object_fit="contain",
                             elem_id="gadms-results")
        tokens = gr.HTML(_message(EMPTY_QUERY_MESSAGE), elem_id="gadms-token-scores")

        def callback(text: str, k_value: float) -> tuple[list[tuple[str, str]], str]:
            return run_query(index, model, processor, text, k_value)

        for trigger in (query.submit, button.click):
            trigger(callback, inputs=[query, k_slider], outputs=[gallery, tokens], api_name=False)
    return demo


def default_model() -> str:
    """``$GADMS_MODEL``, else the model ``make demo`` saved; else a ``SystemExit`` saying what to do."""
    if os.environ.get("GADMS_MODEL"):
        return os.environ["GADMS_MODEL"]
    for path in DEMO_MODELS:
        if (path / "config.json").is_file():
            return str(path)
    raise SystemExit(
        "app.py: no model. Run `make demo` first (it trains the demo model into demo_output/run/best), "
        "or pass --model DIR_OR_HUB_ID (or set GADMS_MODEL).")


def choose_model(model: str | None, index: GalleryIndex | None = None) -> str:
    """The model to load: ``model`` (``--model``), else ``$GADMS_MODEL``, else ``index``'s own model (other
    weights would embed the queries in another space), else :func:`default_model`; a folder as its absolute
    path."""
    chosen = model or os.environ.get("GADMS_MODEL") or (index.model if index is not None else None) \
        or default_model()
    return normalise_model_id(chosen)


def _model_fingerprint(model_id: str) -> str:
    """A short key of the model: its id, and for a local folder the files' sizes and modification times."""
    digest = hashlib.sha1(model_id.encode())
    folder = Path(model_id)
    if folder.is_dir():
        for file in sorted(folder.iterdir()):
            if file.is_file():
                stat = file.stat()
                digest.update(f"{file.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:12]


def _gallery_image_size(processor: Any) -> tuple[int, int]:
    """(height, width) of the model's input images, so that the synthetic persons are drawn at that size."""
    size = getattr(getattr(processor, "image_processor", None), "size", None) or {}
    height, width = size.get("height", 384), size.get("width", 128)
    return max(int(height), 24), max(int(width), 8)


def synthetic_gallery(workdir: Path, image_size: tuple[int, int], *,
                      identities: int = GALLERY_IDENTITIES) -> Path:
    """The images folder of the app's synthetic gallery under ``workdir``, generated on first use."""
    from dataset_builders.synthetic import SyntheticPersonConfig, write_cuhk_pedes

    height, width = image_size
    folder = workdir / f"synthetic-{height}x{width}-n{identities}-seed{GALLERY_SEED}"
    if not (folder / "reid_raw.json").is_file():
        print(f"app.py: drawing a synthetic gallery of {identities} persons into {folder}", flush=True)
        config = SyntheticPersonConfig(num_identities=identities,
                                       images_per_identity=GALLERY_IMAGES_PER_IDENTITY,
                                       image_size=image_size, seed=GALLERY_SEED,
                                       split_fractions=(1.0, 0.0, 0.0))  # one split: the app shows them all
        write_cuhk_pedes(config, folder, overwrite=True)
    return folder / "imgs"


def synthetic_index(model: Any, processor: Any, model_id: str, workdir: Path, *,
                    identities: int = GALLERY_IDENTITIES) -> GalleryIndex:
    """The index of the synthetic gallery for this model, built once and cached under ``workdir``."""
    images = synthetic_gallery(workdir, _gallery_image_size(processor), identities=identities)
    index_dir = images.parent / f"index-{_model_fingerprint(model_id)}"
    if (index_dir / EMBEDDINGS_FILE).is_file():  # a complete index (saves are atomic)
        return GalleryIndex.load(index_dir)
    print(f"app.py: indexing {images} with {model_id}", flush=True)
    index, _skipped = GalleryIndex.build(model, processor, images, model_id=model_id)
    index.save(index_dir)
    return index


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (``python app.py --help``)."""
    parser = argparse.ArgumentParser(
        description="GA-DMS text-to-person search in the browser (Gradio): type a description, see the top-k "
                    "gallery images with scores and the query's GASS token scores.",
        epilog="examples:\n"
               "  make demo && python app.py        # the demo model on a synthetic gallery\n"
               "  gadms index --model demo_output/run/best --images photos/ --out photos_index\n"
               "  python app.py --index photos_index --port 7860   # your images, the index's model",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None,
                        help="GA-DMS model folder or hub id (default: $GADMS_MODEL, else the model of "
                             "--index, else make demo's demo_output/run/best)")
    parser.add_argument("--index", default=None, metavar="DIR",
                        help="gallery index folder (GalleryIndex.save / gadms index); default: a synthetic "
                             "gallery, generated and indexed once under --workdir")
    parser.add_argument("-k", type=int, default=DEFAULT_K, help=f"results shown (default: {DEFAULT_K})")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: 127.0.0.1; 0.0.0.0 to serve the network)")
    parser.add_argument("--port", type=int, default=None,
                        help="port (default: $GRADIO_SERVER_PORT or the first free one from 7860)")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR,
                        help=f"cache of the synthetic gallery and its index (default: {DEFAULT_WORKDIR})")
    parser.add_argument("--device", default="cpu", help="torch device of the model (default: cpu)")
    args = parser.parse_args(argv)
    if args.k < 1:
        parser.error("-k must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    """Load the model and the index (or make the synthetic one), then serve the app until interrupted."""
    args = parse_args(argv)
    index = GalleryIndex.load(args.index) if args.index else None
    model_id = choose_model(args.model, index)
    model, processor = load_model_and_processor(model_id, device=args.device)
    if index is None:
        index = synthetic_index(model, processor, model_id, args.workdir)
    elif index.model != model_id:
        print(f"app.py: note: the index was built with {index.model}, searching with {model_id}",
              file=sys.stderr)
    build_demo(index, model, processor, k=args.k).launch(server_name=args.host, server_port=args.port,
                                                         share=False)


if __name__ == "__main__":
    main()
