"""A gallery index: the normalised image embeddings of a folder of images, their paths, and the model's id.

On disk (``GalleryIndex.save``), an index folder holds

- ``embeddings.safetensors``: one tensor ``embeddings``, ``[N, D]`` float16, L2-normalised rows;
- ``index.json``: ``{"format", "version", "model", "root", "count", "dim", "paths"}``, where ``root`` is
  the absolute images folder and ``paths`` the images' paths relative to it (POSIX separators), in the order
  of the embedding rows (sorted).

``gadms index`` also writes ``skipped.txt`` there: the files it could not read, one ``path<TAB>reason`` a
line.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from evaluation.embedding import embed_images, open_image

from .search import build_faiss_index, exact_topk, faiss_topk, resolve_backend

__all__ = [
    "EMBEDDINGS_FILE",
    "IMAGE_EXTENSIONS",
    "INDEX_FILE",
    "SKIPPED_FILE",
    "GalleryIndex",
    "find_images",
    "normalise_model_id",
    "write_skipped",
]

#: Image files that ``find_images`` picks up (case-insensitive).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
EMBEDDINGS_FILE = "embeddings.safetensors"
INDEX_FILE = "index.json"
SKIPPED_FILE = "skipped.txt"
INDEX_FORMAT = "gadms-gallery-index"
INDEX_VERSION = 1
#: What reading an image can raise (``open_image`` turns decoder errors into ``OSError``).
_READ_ERRORS = (OSError, ValueError, Image.DecompressionBombError)


def find_images(images_dir: str | os.PathLike) -> list[str]:
    """Image files under ``images_dir`` (recursively; hidden files and folders skipped), as sorted POSIX
    paths relative to it."""
    root = Path(images_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"images folder not found: {root}")
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS):
                found.append((Path(folder) / name).relative_to(root).as_posix())
    return sorted(found)


def write_skipped(path: str | os.PathLike, skipped: Sequence[tuple[str, str]]) -> None:
    """Write ``skipped`` ``[(path, reason)]`` as ``path<TAB>reason`` lines (an empty file when none)."""
    lines = "".join(f"{p}\t{' '.join(str(reason).split())}\n" for p, reason in skipped)
    Path(path).write_text(lines, encoding="utf-8")


def normalise_model_id(name_or_path: str | os.PathLike) -> str:
    """A model folder as its absolute path (so the index works from any directory), a hub id as given."""
    path = Path(name_or_path).expanduser()
    return str(path.resolve()) if path.is_dir() else str(name_or_path)


def _embed_files(
    model: torch.nn.Module,
    processor: Any,
    root: Path,
    paths: Sequence[str],
    *,
    batch_size: int,
    precision: str,
    progress: bool,
) -> tuple[list[str], torch.Tensor, list[tuple[str, str]]]:
    """Read and embed ``paths`` (relative to ``root``) a batch at a time; unreadable files are skipped.

    Returns the embedded paths, their L2-normalised float32 embeddings ``[M, D]``, and ``[(path, reason)]``.
    """
    done: list[str] = []
    chunks: list[torch.Tensor] = []
    skipped: list[tuple[str, str]] = []

    def embed(batch: list[Image.Image]) -> torch.Tensor:
        out = embed_images(
            model, processor, batch, batch_size=batch_size, precision=precision, progress=False
        )
        return F.normalize(out.clone(), dim=-1)

    with tqdm(total=len(paths), desc="images", unit="img", disable=not progress) as bar:
        for start in range(0, len(paths), batch_size):
            names, images = [], []
            for name in paths[start : start + batch_size]:
                try:
                    images.append(open_image(root / name))
                    names.append(name)
                except _READ_ERRORS as err:
                    skipped.append((name, str(err)))
            if images:
                try:
                    chunks.append(embed(images))
                    done.extend(names)
                except Exception:  # one bad image fails its batch: embed the batch one image at a time
                    for name, image in zip(names, images):
                        try:
                            chunks.append(embed([image]))
                            done.append(name)
                        except Exception as err:  # noqa: BLE001 (report any failure as a skipped file)
                            skipped.append((name, f"{type(err).__name__}: {err}"))
            bar.update(len(paths[start : start + batch_size]))
    embeddings = torch.cat(chunks) if chunks else torch.empty(0, 0)
    return done, embeddings, skipped


@dataclass
class GalleryIndex:
    """Normalised image embeddings of a folder of images, with their paths and the model that made them.

    Attributes:
        embeddings: ``[N, D]`` float16, L2-normalised rows.
        paths: the images' paths relative to ``root`` (POSIX separators), one per row.
        root: the images folder (absolute).
        model: the model's hub id, or its folder's absolute path.

    Example::

        model, processor = load_model_and_processor("./gadms-vitb16")
        index, skipped = GalleryIndex.build(model, processor, "photos/", model_id="./gadms-vitb16")
        index.save("photos-index/")
        query = embed_texts(model, processor, ["a man in a black jacket"])
        scores, indices = GalleryIndex.load("photos-index/").search(query, k=10)
    """

    embeddings: torch.Tensor
    paths: list[str]
    root: str
    model: str
    _faiss_index: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.embeddings.dim() != 2 or len(self.embeddings) != len(self.paths):
            raise ValueError(
                f"embeddings of shape {tuple(self.embeddings.shape)} do not match {len(self.paths)} paths"
            )

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def dim(self) -> int:
        """The embedding dimension."""
        return self.embeddings.shape[1]

    def check_model(self, model_id: str) -> None:
        """Raise a ``ValueError`` unless ``model_id`` (a hub id or folder) is the model this index was built
        with: an update must embed new images in the same space as the kept ones."""
        model_id = normalise_model_id(model_id)
        if self.model != model_id:
            raise ValueError(
                f"the index was built with model {self.model!r}, not {model_id!r}; "
                "re-index into a new folder (or without --update) to switch models"
            )

    def image_path(self, i: int) -> Path:
        """The path of image ``i``: ``root / paths[i]``."""
        return Path(self.root) / self.paths[i]

    @classmethod
    def build(
        cls,
        model: torch.nn.Module,
        processor: Any,
        images_dir: str | os.PathLike,
        *,
        model_id: str,
        batch_size: int = 64,
        precision: str = "fp32",
        progress: bool = True,
        existing: GalleryIndex | None = None,
    ) -> tuple[GalleryIndex, list[tuple[str, str]]]:
        """Embed the images under ``images_dir`` (see :func:`find_images`) with ``model``'s image tower.

        Args:
            model, processor: the model (on its device) and its processor.
            images_dir: the folder to index, searched recursively.
            model_id: the model's hub id or folder, recorded in the index (folders as absolute paths).
            batch_size: images per forward pass.
            precision: ``fp32``, ``fp16`` or ``bf16`` (autocast).
            progress: show a progress bar.
            existing: an index of the same folder and model to update: only images it lacks are embedded,
                its rows for images that are gone are dropped, the others are kept as they are.

        Returns:
            ``(index, skipped)``: the index (rows sorted by path) and the unreadable files
            ``[(relative path, reason)]``, which are left out of it.

        Raises:
            FileNotFoundError: ``images_dir`` is not a folder.
            ValueError: ``existing`` was built with another model or from another folder.
        """
        model_id = normalise_model_id(model_id)
        root = Path(images_dir).expanduser().resolve()
        paths = find_images(root)
        kept: dict[str, torch.Tensor] = {}
        if existing is not None:
            existing.check_model(model_id)
            if Path(existing.root).resolve() != root:
                raise ValueError(f"the index was built from {existing.root}, not {root}")
            present = set(paths)
            kept = {p: existing.embeddings[i] for i, p in enumerate(existing.paths) if p in present}
        todo = [p for p in paths if p not in kept]
        done, embeddings, skipped = _embed_files(
            model, processor, root, todo, batch_size=batch_size, precision=precision, progress=progress
        )
        rows = dict(kept)
        rows.update(zip(done, embeddings.to(torch.float16)))
        order = sorted(rows)
        if order:
            stacked = torch.stack([rows[p] for p in order]).to(torch.float16)
        else:
            dim = existing.dim if existing is not None and len(existing) else 0
            stacked = torch.empty(0, dim, dtype=torch.float16)
        return cls(embeddings=stacked, paths=order, root=str(root), model=model_id), skipped

    def save(self, out_dir: str | os.PathLike) -> None:
        """Write ``embeddings.safetensors`` and ``index.json`` into ``out_dir`` (created if needed)."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        meta = {
            "format": INDEX_FORMAT,
            "version": INDEX_VERSION,
            "model": self.model,
            "root": self.root,
            "count": len(self),
            "dim": self.dim,
            "paths": self.paths,
        }
        tensors = {"embeddings": self.embeddings.detach().to("cpu", torch.float16).contiguous()}
        partial_embeddings, partial_meta = out / (EMBEDDINGS_FILE + ".tmp"), out / (INDEX_FILE + ".tmp")
        save_file(tensors, str(partial_embeddings), metadata={"format": INDEX_FORMAT, "model": self.model})
        partial_meta.write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
        os.replace(partial_embeddings, out / EMBEDDINGS_FILE)
        os.replace(partial_meta, out / INDEX_FILE)

    @classmethod
    def load(cls, index_dir: str | os.PathLike) -> GalleryIndex:
        """Read an index folder written by :meth:`save`."""
        folder = Path(index_dir)
        meta_path, tensor_path = folder / INDEX_FILE, folder / EMBEDDINGS_FILE
        if not meta_path.is_file() or not tensor_path.is_file():
            raise FileNotFoundError(
                f"no index at {folder} (expected {INDEX_FILE} and {EMBEDDINGS_FILE}; "
                "build one with `gadms index`)"
            )
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("format") != INDEX_FORMAT:
            raise ValueError(f"{meta_path} is not a GA-DMS gallery index (format {meta.get('format')!r})")
        if meta.get("version", 0) > INDEX_VERSION:
            raise ValueError(
                f"{meta_path} has index version {meta['version']}; this gadms reads up to {INDEX_VERSION}"
            )
        embeddings = load_file(str(tensor_path))["embeddings"]
        return cls(embeddings=embeddings, paths=list(meta["paths"]), root=meta["root"], model=meta["model"])

    def search(
        self, queries: torch.Tensor, k: int = 10, backend: str = "auto"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-``k`` gallery rows for each query by cosine similarity (queries are normalised here).

        Args:
            queries: ``[Q, D]`` (or ``[D]``) query embeddings, e.g. from ``embed_texts``.
            k: results per query; ``min(k, len(self))`` are returned.
            backend: ``torch``, ``faiss`` or ``auto`` (see :mod:`retrieval.search`); the same results
                either way. The FAISS index (exhaustive, float16 storage, sharded over threads: see
                :func:`~retrieval.search.build_faiss_index`) is built on the first FAISS search and kept.

        Returns:
            ``(scores, indices)``: ``[Q, k]`` float32 and int64, best first, ties broken by lower index.
        """
        if resolve_backend(backend, len(self)) == "faiss" and len(self):
            if self._faiss_index is None:
                self._faiss_index = build_faiss_index(self.embeddings)
            return faiss_topk(self.embeddings, queries, k, index=self._faiss_index)
        return exact_topk(self.embeddings, queries, k)
