"""The ``gadms`` command: index a folder of person images, search it by text, explain a caption's match.

Run ``gadms COMMAND --help`` for a command's options.

Examples::

    gadms index --model ./gadms-vitb16 --images photos/ --out photos-index/
    gadms index --model ./gadms-vitb16 --images photos/ --out photos-index/ --update   # new files only
    gadms search photos-index/ "a man in a black jacket" -k 10 --html results.html
    gadms search photos-index/ "a man in a black jacket" --backend faiss-ivf --nprobe 64   # approximate
    gadms explain --model ./gadms-vitb16 --text "a woman in a red coat" --image photos/0001.jpg --png why.png
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Sequence

import torch
from filelock import FileLock, Timeout

from gadms_utils.cli_types import positive_int
from evaluation.embedding import PRECISIONS, load_model_and_processor

from .explain import NotGADMSModelError, check_gadms_model, explain, render_html, render_terminal, save_png
from .index import (
    EMBEDDINGS_FILE,
    IMAGE_EXTENSIONS,
    INDEX_FILE,
    IVF_CHOICES,
    LEGACY_SKIPPED_FILE,
    LOCK_FILE,
    SKIPPED_FILE,
    DamagedIndexError,
    GalleryIndex,
    interrupted_save,
    search_text,
    write_skipped,
)
from .render import THUMBNAIL_SIDE, html_page, render_hits_html
from .search import BACKENDS, FAISS_THRESHOLD, IVF_THRESHOLD, import_faiss

__all__ = ["IndexBusyError", "build_parser", "main"]

#: ``main``'s exit status when another ``gadms index`` holds the index folder's lock (other errors: 1).
EXIT_BUSY = 2
#: ``main``'s exit status when ``gadms explain --model`` is not a GA-DMS model.
EXIT_NOT_GADMS = 2


class IndexBusyError(RuntimeError):
    """Another ``gadms index`` holds the lock of the index folder."""


def _device(name: str | None) -> torch.device:
    return torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))


def _add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device", default=None, help="torch device (default: cuda when available, else cpu)"
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``gadms`` and its subcommands."""
    formatter = argparse.HelpFormatter  # subcommands: wrapped descriptions
    parser = argparse.ArgumentParser(
        prog="gadms", description=__doc__.replace("``", "").replace("::", ":"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    index = commands.add_parser(
        "index", help="embed a folder of images into an index", formatter_class=formatter,
        description="Embed every image under --images (recursively: .jpg .jpeg .png .webp .bmp) with the "
        f"model's image tower and write the index to --out: {EMBEDDINGS_FILE} (the whole index: "
        "L2-normalised float16 embeddings, relative paths, model id, images folder; saved atomically), "
        f"{INDEX_FILE} (a human-readable copy) and {SKIPPED_FILE} (unreadable files, which are skipped and "
        'listed, one JSON object {"path", "reason"} a line). One run at a time per --out: a second one is '
        f"refused (exit status {EXIT_BUSY}) while the first holds {LOCK_FILE} there.",
    )  # fmt: skip
    index.add_argument("--model", required=True, help="model folder or Hugging Face hub id")
    index.add_argument("--images", required=True, help="folder of images to index (searched recursively)")
    index.add_argument("--out", required=True, help="index folder to write")
    index.add_argument(
        "--update", action="store_true",
        help="update the index in --out: embed only images it lacks, drop those whose files are gone "
        "(refused when --model differs from the index's model); an index left damaged by an interrupted "
        "save is recovered, or rebuilt when it cannot be read",
    )  # fmt: skip
    index.add_argument(
        "--batch-size", type=positive_int, default=64, help="images per forward pass (default: 64)"
    )
    _add_device(index)
    index.add_argument(
        "--precision", default="fp32", choices=list(PRECISIONS),
        help="inference precision via autocast (default: fp32)",
    )
    index.add_argument(
        "--ivf", default="auto", choices=IVF_CHOICES,
        help=f"also build and save a FAISS IVF index (approximate search for large galleries: `gadms search "
        f"--backend faiss-ivf`): auto (default) from {IVF_THRESHOLD:,} images when FAISS is installed, and "
        "whenever the updated index has one; always; never (drops it). --update adds the new images to the "
        "saved IVF and removes the gone ones without retraining, and retrains it once the gallery has about "
        "quadrupled",
    )  # fmt: skip
    index.add_argument("--no-progress", action="store_true", help="no progress bar")
    index.set_defaults(func=run_index)

    search = commands.add_parser(
        "search", help="search an index by text", formatter_class=formatter,
        description="Embed the caption with the index's model and print the best-matching images: rank, "
        "cosine similarity, path. Exact search: torch by default, FAISS (exhaustive float16 index) "
        f"automatically from {FAISS_THRESHOLD:,} images when installed (pip install \"gadms[search]\"); both "
        "give the same results (ties broken by path order). Approximate search (faiss-ivf): the IVF index "
        f"`gadms index` saves from {IVF_THRESHOLD:,} images, which auto then uses; exact scores, but a "
        "true match in a cell it does not visit is missed (measured recall@10 >= 0.99 at the default "
        "--nprobe on a clustered 1,000,000-image gallery).",
    )  # fmt: skip
    search.add_argument("index_dir", help="index folder written by `gadms index`")
    search.add_argument("text", help="the caption to search for")
    search.add_argument("-k", type=positive_int, default=10, help="number of results (default: 10)")
    search.add_argument(
        "--html", metavar="FILE",
        help=f"also write a self-contained HTML page of the results: each image embedded as a JPEG thumbnail "
        f"(at most {THUMBNAIL_SIDE} px) linking to its original file, with rank, score and path",
    )  # fmt: skip
    search.add_argument(
        "--backend", default="auto", choices=BACKENDS,
        help="search backend (default: auto: faiss-ivf when the index has an IVF index and at least "
        f"{IVF_THRESHOLD:,} images, faiss from {FAISS_THRESHOLD:,} images, else torch); faiss-ivf on an "
        "index without an IVF builds one in memory first (slow; `gadms index --update --ivf always` saves one)",
    )  # fmt: skip
    search.add_argument(
        "--nprobe", type=positive_int, default=None,
        help="faiss-ivf: IVF cells visited per query, 1 to the index's nlist (default: 30%% of nlist, at least 16); "
        "more is slower and misses fewer matches",
    )  # fmt: skip
    search.add_argument("--model", default=None, help="use this model instead of the one the index names")
    _add_device(search)
    search.set_defaults(func=run_search)

    explain_ = commands.add_parser(
        "explain", help="show which words of a caption drive its match (GASS token scores)",
        formatter_class=formatter,
        description="GASS token scores of a caption in [0, 1]: how much each token drives the caption's "
        "similarity with a target image (start/end-of-text tokens score 0). The target is --image; without "
        "it, a neutral image: the model's embedding of all-zero pixel values, i.e. the processor's mean "
        "colour everywhere. Printed as the caption's tokens, coloured by score (plain when stdout is not a "
        "terminal, with --no-color, or with the NO_COLOR environment variable set), and a `token score` "
        f"listing. A model that is not GA-DMS is refused (exit status {EXIT_NOT_GADMS}).",
    )  # fmt: skip
    explain_.add_argument("--model", required=True, help="GA-DMS model folder or Hugging Face hub id")
    explain_.add_argument("--text", required=True, help="the caption")
    explain_.add_argument(
        "--image", default=None, help="target image (also prints the caption-image similarity)"
    )
    explain_.add_argument(
        "--html", metavar="FILE",
        help="also write the coloured tokens as a self-contained HTML page (with --image: the image beside "
        "them)",
    )  # fmt: skip
    explain_.add_argument(
        "--png", metavar="FILE",
        help="also draw the coloured tokens into a PNG image (with --image: the image beside them)",
    )  # fmt: skip
    explain_.add_argument("--no-color", action="store_true", help="no ANSI colours in the terminal output")
    explain_.add_argument(
        "--variant", default=None, choices=["paper", "released"],
        help="GASS variant (default: that of modeling_gadms.gass.gass_scores)",
    )
    _add_device(explain_)
    explain_.set_defaults(func=run_explain)
    return parser


def run_index(args: argparse.Namespace) -> int:
    """``gadms index``: holds ``--out``'s lock file for the whole run (read, embed, save)."""
    images, out = Path(args.images), Path(args.out)
    if not images.is_dir():
        raise FileNotFoundError(f"images folder not found: {images}")
    out.mkdir(parents=True, exist_ok=True)
    lock = FileLock(out / LOCK_FILE, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise IndexBusyError(
            f"another `gadms index` is writing {out} (it holds the lock {out / LOCK_FILE}); wait for it to "
            "finish (if no such process runs, the lock is stale: delete that file)"
        ) from None
    try:
        return _index_locked(args, images, out)
    finally:
        lock.release()


def _show(path: str) -> str:
    """A file name for the terminal: as is, or JSON-quoted when it holds newlines or other controls."""
    return path if path.isprintable() else json.dumps(path)


def _index_locked(args: argparse.Namespace, images: Path, out: Path) -> int:
    existing = None
    if args.update:
        if (out / EMBEDDINGS_FILE).is_file():
            try:
                existing = GalleryIndex.load(out)
            except DamagedIndexError as err:
                print(f"cannot read the index in {out}, building a new one: {err}")
            else:
                existing.check_model(args.model)  # before loading the model
                notes = interrupted_save(out, existing)
                if notes:
                    print(
                        f"recovering {out} from an interrupted save ({'; '.join(notes)}): updating its last "
                        f"complete index ({len(existing)} images) and rewriting the files"
                    )
        else:
            print(f"no index in {out} yet: building a new one")
    model, processor = load_model_and_processor(args.model, device=_device(args.device))
    index, skipped = GalleryIndex.build(
        model, processor, images, model_id=args.model, batch_size=args.batch_size,
        precision=args.precision, progress=not args.no_progress, existing=existing, ivf=args.ivf,
    )  # fmt: skip
    index.save(out)
    write_skipped(out / SKIPPED_FILE, skipped)
    (out / LEGACY_SKIPPED_FILE).unlink(missing_ok=True)  # an older gadms's list, now out of date
    if existing is not None:
        kept = len(set(existing.paths) & set(index.paths))
        print(
            f"updated {out}: {len(index)} images ({len(index) - kept} new, {kept} kept, "
            f"{len(existing) - kept} removed) from {index.root}"
        )
    else:
        print(f"indexed {len(index)} images from {index.root} into {out}")
    if index.ivf is not None:
        print(f"saved an IVF index ({index.ivf_nlist} cells) for `gadms search --backend faiss-ivf`")
    if not len(index) and not skipped:
        print(f"no images found under {index.root} (looked for {', '.join(IMAGE_EXTENSIONS)})")
    if skipped:
        print(f"skipped {len(skipped)} unreadable files (listed in {out / SKIPPED_FILE}):")
        for path, reason in skipped:
            print(f"  {_show(path)}: {reason}")
    return 0


def run_search(args: argparse.Namespace) -> int:
    """``gadms search``."""
    if not args.text.strip():
        raise ValueError("the description to search for is empty")
    index = GalleryIndex.load(args.index_dir, ivf=args.backend in ("auto", "faiss-ivf"))
    if not len(index):
        print(f"the index in {args.index_dir} holds no images (built from {index.root})")
        return 0
    if args.nprobe is not None and index.ivf is not None and args.nprobe > index.ivf_nlist:
        raise ValueError(f"--nprobe must be at most the index's nlist={index.ivf_nlist}, got {args.nprobe}")
    if args.backend == "faiss-ivf" and index.ivf is None:
        print(
            f"the index in {args.index_dir} has no IVF index: building one in memory ({len(index)} images; "
            "`gadms index --update --ivf always` saves one)", file=sys.stderr,
        )  # fmt: skip
    if args.backend in ("faiss", "faiss-ivf"):
        import_faiss()  # before loading the model
    model, processor = load_model_and_processor(args.model or index.model, device=_device(args.device))
    hits = search_text(
        index, model, processor, args.text, k=args.k, backend=args.backend, nprobe=args.nprobe
    )
    width = len(str(len(hits)))
    for hit in hits:
        print(f"{hit.rank:>{width}}  {hit.score:.4f}  {hit.path}")
    if args.html:
        page = Path(args.html)
        page.parent.mkdir(parents=True, exist_ok=True)
        html = render_hits_html(hits, args.text)
        page.write_text(html, encoding="utf-8")
        print(f"wrote {page}")
    return 0


def _model_config(name: str) -> object:
    """The config of model ``name`` (GA-DMS classes registered), read without loading any weights."""
    import modeling_gadms  # noqa: F401  (registers model_type "gadms" with AutoConfig)
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(name)


def _color(args: argparse.Namespace) -> bool:
    """Colour the terminal output: stdout is a terminal, no --no-color, no NO_COLOR (https://no-color.org)."""
    return not args.no_color and not os.environ.get("NO_COLOR") and sys.stdout.isatty()


def run_explain(args: argparse.Namespace) -> int:
    """``gadms explain``: a model that is not GA-DMS is refused (:class:`NotGADMSModelError`) from its config,
    before any weights are loaded."""
    if args.image is not None and not Path(args.image).is_file():
        raise FileNotFoundError(f"image not found: {args.image}")
    check_gadms_model(_model_config(args.model), args.model)
    model, processor = load_model_and_processor(args.model, device=_device(args.device))
    scores = explain(model, processor, args.text, image=args.image, variant=args.variant)
    print(render_terminal(scores, color=_color(args)))
    if args.html:
        page = Path(args.html)
        page.parent.mkdir(parents=True, exist_ok=True)
        page.write_text(html_page("gadms explain", render_html(scores, image=args.image)), encoding="utf-8")
        print(f"wrote {page}")
    if args.png:
        Path(args.png).parent.mkdir(parents=True, exist_ok=True)
        save_png(scores, args.png, image=args.image)
        print(f"wrote {args.png}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``gadms`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit status (errors: 1; the
    index folder locked by another ``gadms index``, or ``gadms explain`` given a model that is not GA-DMS:
    2)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except IndexBusyError as err:
        print(f"gadms {args.command}: error: {err}", file=sys.stderr)
        return EXIT_BUSY
    except NotGADMSModelError as err:
        print(f"gadms {args.command}: error: {err}", file=sys.stderr)
        return EXIT_NOT_GADMS
    except (OSError, ValueError, ImportError) as err:
        print(f"gadms {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
