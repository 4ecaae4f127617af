"""A gallery index: the normalised image embeddings of a folder of images, their paths, and the model's id.

On disk (``GalleryIndex.save``, format version 2), an index folder holds

- ``embeddings.safetensors``, the whole index in one file: the tensor ``embeddings`` (``[N, D]`` float16,
  L2-normalised rows), the tensor ``paths`` (uint8: the UTF-8 JSON list of the images' paths relative to
  ``root``, POSIX separators, in the order of the rows, sorted) and, in the safetensors header's
  ``metadata``, ``index``: the JSON of ``{"format", "version", "model", "root", "count", "dim"}``, where
  ``root`` is the absolute images folder, plus ``ivf`` when the file holds an IVF index. A large gallery
  (``gadms index --ivf``, by default from :data:`~retrieval.search.IVF_THRESHOLD` images) also stores its
  FAISS IVF index there (:class:`~retrieval.ann.IVFIndex`): the uint8 tensor ``ivf``
  (``faiss.serialize_index``) and the int64 tensor ``ivf_rows`` (the gallery row of each IVF id), with
  ``meta["ivf"] = {"nlist", "rows", "codes"}``. The IVF and the embeddings are thus committed together and
  cannot disagree (a reader still checks that the IVF indexes every row once, and drops one that does not;
  older readers ignore these entries). A save writes it to a temporary file and commits it with one
  ``os.replace``, so a reader sees the old index or the new one, never a mix, even after a crash;
- ``index.json``: a human-readable copy, ``{"format", "version", "model", "root", "count", "dim",
  "paths"}``, written after the commit and never read back (an interrupted save can leave it stale).

Version 1 indexes (the metadata in ``index.json`` only) are still read, including one whose save was
interrupted between its two renames (:meth:`GalleryIndex.load`).

``gadms index`` also writes ``skipped.jsonl`` there: the files it could not read, one JSON object
``{"path", "reason"}`` a line (:func:`write_skipped`, :func:`read_skipped`), and holds ``.lock`` while it
writes (:data:`LOCK_FILE`).
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from PIL import Image
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

from evaluation.embedding import embed_images, embed_texts
from gadms_utils.image_io import open_image

from .ann import IVFIndex, build_ivf, ivf_topk, needs_retrain, remap_ivf
from . import search as _search
from .search import _faiss_available, build_faiss_index, import_faiss, exact_topk, faiss_topk, resolve_backend

__all__ = [
    "SearchHit",
    "EMBEDDINGS_FILE",
    "IMAGE_EXTENSIONS",
    "INDEX_FILE",
    "IVF_CHOICES",
    "LOCK_FILE",
    "SKIPPED_FILE",
    "DamagedIndexError",
    "GalleryIndex",
    "find_images",
    "interrupted_save",
    "normalise_model_id",
    "search_text",
    "read_skipped",
    "write_skipped",
]

#: Image files that ``find_images`` picks up (case-insensitive).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
#: The index itself (embeddings, paths and metadata): the file a save commits.
EMBEDDINGS_FILE = "embeddings.safetensors"
#: A human-readable copy of the metadata and paths (version 1 indexes: the metadata itself).
INDEX_FILE = "index.json"
#: The files ``gadms index`` could not read, as JSON lines ``{"path", "reason"}``.
SKIPPED_FILE = "skipped.jsonl"
#: What ``gadms index`` wrote there up to index version 1 (``path<TAB>reason`` lines); removed on a rewrite.
LEGACY_SKIPPED_FILE = "skipped.txt"
#: The lock file ``gadms index`` holds in the index folder while it reads, embeds and writes.
LOCK_FILE = ".lock"
INDEX_FORMAT = "gadms-gallery-index"
INDEX_VERSION = 2
#: A save writes ``NAME`` as ``NAME + TMP_SUFFIX`` first, then renames it.
TMP_SUFFIX = ".tmp"
#: ``GalleryIndex.build``'s ``ivf`` (``gadms index --ivf``) choices: ``auto`` builds an IVF index for a
#: gallery of at least :data:`~retrieval.search.IVF_THRESHOLD` images (when FAISS is installed) and keeps one
#: the updated index already has; ``always`` builds one for any non-empty gallery; ``never`` drops it.
IVF_CHOICES = ("auto", "always", "never")
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


def _fsync(path: Path) -> None:
    """Flush ``path`` (a file, or a folder's entries) to disk; folders that cannot be opened are left."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # a folder on Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems do not sync folders
        pass
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and one rename: all of it, or nothing."""
    partial = path.with_name(path.name + TMP_SUFFIX)
    partial.write_bytes(data)
    _fsync(partial)
    os.replace(partial, path)
    _fsync(path.parent)


def write_skipped(path: str | os.PathLike, skipped: Sequence[tuple[str, str]]) -> None:
    """Write ``skipped`` ``[(path, reason)]`` as JSON lines ``{"path": ..., "reason": ...}`` (an empty file
    when none), atomically. Any file name survives, newlines and tabs included."""
    lines = "".join(json.dumps({"path": p, "reason": str(reason)}) + "\n" for p, reason in skipped)
    _write_atomic(Path(path), lines.encode("utf-8"))


def read_skipped(path: str | os.PathLike) -> list[tuple[str, str]]:
    """The ``[(path, reason)]`` that :func:`write_skipped` wrote to ``path``."""
    rows = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").split("\n") if line]
    return [(row["path"], row["reason"]) for row in rows]


def normalise_model_id(name_or_path: str | os.PathLike) -> str:
    """A model folder as its absolute path (so the index works from any directory), a hub id as given."""
    path = Path(name_or_path).expanduser()
    return str(path.resolve()) if path.is_dir() else str(name_or_path)


class DamagedIndexError(ValueError):
    """An index folder whose files are unreadable or do not fit together (``gadms index --update``
    rebuilds such an index instead of updating it)."""


def _check_version(meta: dict[str, Any], where: Path) -> None:
    version = meta.get("version", 0)
    if not isinstance(version, int) or version > INDEX_VERSION:
        raise ValueError(f"{where} has index version {version!r}; this gadms reads up to {INDEX_VERSION}")


def interrupted_save(index_dir: str | os.PathLike, index: GalleryIndex) -> list[str]:
    """What an interrupted save left in ``index_dir`` beside ``index``, the committed index that
    :meth:`GalleryIndex.load` read there: temporary files, an ``index.json`` that does not describe it
    (one note each; empty when nothing). The next `gadms index` run replaces them all."""
    folder = Path(index_dir)
    notes = []
    leftovers = [
        name + TMP_SUFFIX
        for name in (EMBEDDINGS_FILE, INDEX_FILE, SKIPPED_FILE)
        if (folder / (name + TMP_SUFFIX)).exists()
    ]
    if leftovers:
        notes.append(f"temporary files left: {', '.join(leftovers)}")
    try:
        meta = json.loads((folder / INDEX_FILE).read_text(encoding="utf-8"))
        same = isinstance(meta, dict) and [meta.get(key) for key in ("model", "root", "paths")] == [
            index.model, index.root, index.paths
        ]  # fmt: skip
    except (OSError, ValueError):  # missing, unreadable or cut short
        same = False
    if not same:
        notes.append(f"{INDEX_FILE} does not describe {EMBEDDINGS_FILE}")
    return notes


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
                except (MemoryError, torch.OutOfMemoryError):
                    raise  # the machine's problem, not a file's: stop (nothing is saved over the index)
                except Exception:  # one bad image fails its batch: embed the batch one image at a time
                    failures = []
                    for name, image in zip(names, images):
                        try:
                            chunks.append(embed([image]))
                            done.append(name)
                        except (MemoryError, torch.OutOfMemoryError):
                            raise
                        except Exception as err:  # noqa: BLE001 (a file the model cannot take is skipped)
                            failures.append((name, f"{type(err).__name__}: {err}"))
                    reasons = {reason for _, reason in failures}
                    if len(failures) == len(names) and (not done or (len(names) > 1 and len(reasons) == 1)):
                        # every picture fails the same way (or none was ever embedded): the model or its
                        # processor is at fault, not the files; stop rather than index nothing
                        raise ValueError(f"the model cannot embed these images ({failures[0][1]}); "
                                           f"check --model and its processor (first file: {failures[0][0]})")
                    skipped.extend(failures)
            bar.update(len(paths[start : start + batch_size]))
    embeddings = torch.cat(chunks) if chunks else torch.empty(0, 0)
    return done, embeddings, skipped


def _readable_as_the_umask_allows(path: Path) -> None:
    """Give `path` the mode a newly created file gets (0666 less the umask), as `open` would."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


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
    _ivf: Any = field(default=None, init=False, repr=False, compare=False)

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

    @property
    def ivf(self) -> IVFIndex | None:
        """The IVF index of the embeddings (:class:`retrieval.ann.IVFIndex`), or ``None``: saved with the
        index, searched by the ``faiss-ivf`` backend."""
        return self._ivf

    @property
    def ivf_nlist(self) -> int | None:
        """The IVF index's number of cells, or ``None`` without one."""
        return None if self._ivf is None else self._ivf.nlist

    def build_ivf(self, *, nlist: int | None = None) -> IVFIndex:
        """Build (or rebuild) the IVF index of the embeddings (:func:`retrieval.ann.build_ivf`), keep it
        (:meth:`save` stores it) and return it."""
        self._ivf = build_ivf(self.embeddings, nlist=nlist)
        return self._ivf

    def drop_ivf(self) -> None:
        """Forget the IVF index (the next :meth:`save` writes none)."""
        self._ivf = None

    def _set_ivf(self, ivf: IVFIndex | None) -> None:
        if ivf is not None and not ivf.fits(self.embeddings):
            raise ValueError(
                f"an IVF index of {ivf.ntotal} x {ivf.d} does not fit the gallery's {len(self)} x {self.dim}"
            )
        self._ivf = ivf

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
        ivf: str = "auto",
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
                its rows for images that are gone are dropped, the others are kept as they are. Its IVF
                index, if any, is carried over (and taken from it): the kept rows' codes renumbered, the
                dropped ones removed, the new images added to the trained cells; it is retrained instead
                when the gallery outgrew it (:func:`retrieval.ann.needs_retrain`).
            ivf: one of :data:`IVF_CHOICES`: whether the index gets an IVF index (``auto``: from
                :data:`~retrieval.search.IVF_THRESHOLD` images, or when ``existing`` has one).

        Returns:
            ``(index, skipped)``: the index (rows sorted by path) and the unreadable files
            ``[(relative path, reason)]``, which are left out of it.

        Raises:
            FileNotFoundError: ``images_dir`` is not a folder.
            ValueError: ``existing`` was built with another model or from another folder, or ``ivf`` is
                not one of :data:`IVF_CHOICES`.
            ImportError: ``ivf="always"`` without FAISS installed.
        """
        if ivf not in IVF_CHOICES:
            raise ValueError(f"ivf (--ivf) must be one of {', '.join(IVF_CHOICES)}, got {ivf!r}")
        if ivf == "always":
            import_faiss()  # before the embedding, which a missing package would otherwise throw away
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
        index = cls(embeddings=stacked, paths=order, root=str(root), model=model_id)
        old_ivf = existing._ivf if existing is not None else None
        if existing is not None:
            existing._ivf = None  # taken over (and changed in place) below, or dropped
        wanted = ivf == "always" or (
            ivf == "auto" and (old_ivf is not None or (len(index) >= _search.IVF_THRESHOLD and _faiss_available()))
        )
        if wanted and len(index):
            if old_ivf is not None and not needs_retrain(old_ivf, len(index)):
                position = {p: i for i, p in enumerate(order)}
                new_row = torch.tensor([position.get(p, -1) for p in existing.paths], dtype=torch.long)
                added = torch.tensor([position[p] for p in order if p not in kept], dtype=torch.long)
                if progress:
                    print(f"updating the IVF index: {len(added)} images to add", flush=True)
                index._set_ivf(remap_ivf(old_ivf, new_row, stacked, added))
            else:
                if progress:
                    print(f"building the IVF index of {len(index)} images", flush=True)
                index.build_ivf()
        return index, skipped

    def _metadata(self) -> dict[str, Any]:
        meta = {
            "format": INDEX_FORMAT,
            "version": INDEX_VERSION,
            "model": self.model,
            "root": self.root,
            "count": len(self),
            "dim": self.dim,
        }
        if self._ivf is not None:
            kind = type(import_faiss().downcast_index(self._ivf.index)).__name__
            meta["ivf"] = {"nlist": self.ivf_nlist, "rows": int(self._ivf.ntotal), "codes": kind}
        return meta

    def save(self, out_dir: str | os.PathLike) -> None:
        """Write the index into ``out_dir`` (created if needed), atomically: ``embeddings.safetensors``
        holds all of it and is committed by one rename; the ``index.json`` copy is written after it.

        A crash leaves either the previous index or this one (and perhaps a stale ``index.json`` or
        ``*.tmp`` files, which :meth:`load` ignores and the next save replaces). Two processes must not
        save into one folder at once: ``gadms index`` holds :data:`LOCK_FILE` for that.
        """
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        meta = self._metadata()
        paths = json.dumps(self.paths).encode("utf-8")  # ASCII: any file name (even undecodable) survives
        tensors = {
            "embeddings": self.embeddings.detach().to("cpu", torch.float16).contiguous(),
            "paths": torch.frombuffer(bytearray(paths), dtype=torch.uint8),
        }
        if self._ivf is not None:
            self._set_ivf(self._ivf)  # still fits the embeddings
            tensors.update(self._ivf.to_tensors())
        header = {"format": INDEX_FORMAT, "version": str(INDEX_VERSION), "index": json.dumps(meta)}
        partial = out / (EMBEDDINGS_FILE + TMP_SUFFIX)
        save_file(tensors, str(partial), metadata=header)
        _readable_as_the_umask_allows(partial)  # safetensors writes 0600; index.json gets the umask's mode
        _fsync(partial)
        os.replace(partial, out / EMBEDDINGS_FILE)  # the commit
        _fsync(out)
        copy = {**meta, "note": f"a copy of what {EMBEDDINGS_FILE} holds, which is what gadms reads",
                "paths": self.paths}  # fmt: skip
        _write_atomic(out / INDEX_FILE, (json.dumps(copy, indent=1) + "\n").encode("utf-8"))

    @classmethod
    def load(cls, index_dir: str | os.PathLike, *, ivf: bool = True) -> GalleryIndex:
        """Read an index folder written by :meth:`save` (version 2), or by an older gadms (version 1).

        ``ivf``: also read the IVF index the file holds, if any (needs FAISS; without it, or with
        ``ivf=False``, the IVF is not read, and a later :meth:`save` writes none). An IVF whose row count or
        dimension does not match the embeddings is dropped with a warning (``gadms index --update``
        rebuilds it).

        Whatever an interrupted save left there, this reads the last committed index: version 2 from
        ``embeddings.safetensors`` alone; version 1 from it and ``index.json``, or ``index.json.tmp`` when
        the save was cut between its two renames (``embeddings.safetensors.tmp`` gone, the metadata not yet
        renamed).

        Raises:
            FileNotFoundError: no ``embeddings.safetensors`` in ``index_dir``.
            ValueError: not a GA-DMS index, or a newer version than this gadms reads.
            DamagedIndexError: (a ``ValueError``) the files are unreadable or do not fit together.
        """
        folder = Path(index_dir)
        tensor_path = folder / EMBEDDINGS_FILE
        if not tensor_path.is_file():
            raise FileNotFoundError(
                f"no index at {folder} (expected {EMBEDDINGS_FILE}; build one with `gadms index`)"
            )
        try:
            with safe_open(str(tensor_path), framework="pt") as handle:  # one open: one committed file
                header = handle.metadata() or {}
                if header.get("format") != INDEX_FORMAT:
                    raise ValueError(
                        f"{tensor_path} is not a GA-DMS gallery index (format {header.get('format')!r})"
                    )
                embeddings = handle.get_tensor("embeddings")
                if "index" not in header:  # version 1: the metadata is in index.json
                    return cls._load_version_1(folder, embeddings, header)
                meta = json.loads(header["index"])
                if not isinstance(meta, dict):
                    raise KeyError("index")
                _check_version(meta, tensor_path)
                paths = json.loads(bytes(handle.get_tensor("paths").numpy()).decode("utf-8"))
                ivf_data = None
                if ivf and {"ivf", "ivf_rows"} <= set(handle.keys()) and _faiss_available():
                    ivf_data = handle.get_tensor("ivf"), handle.get_tensor("ivf_rows")
        except (SafetensorError, UnicodeDecodeError, json.JSONDecodeError, KeyError) as err:
            raise DamagedIndexError(
                f"{tensor_path} is unreadable ({type(err).__name__}: {err}); rebuild it with `gadms index`"
            ) from None
        if not (len(paths) == meta.get("count") == len(embeddings)):
            raise DamagedIndexError(
                f"{tensor_path} holds {len(embeddings)} rows, {len(paths)} paths and count "
                f"{meta.get('count')}; rebuild it with `gadms index`"
            )
        index = cls(embeddings=embeddings, paths=paths, root=meta["root"], model=meta["model"])
        if ivf_data is not None:
            try:
                index._set_ivf(IVFIndex.from_tensors(*ivf_data))
            except (RuntimeError, TypeError, ValueError) as err:
                warnings.warn(
                    f"{tensor_path}: ignoring its IVF index ({err}); `gadms index --update` rebuilds it",
                    stacklevel=2,
                )
        return index

    @classmethod
    def _load_version_1(cls, folder: Path, embeddings: torch.Tensor, header: dict[str, str]) -> GalleryIndex:
        """A version 1 index: ``embeddings`` from ``embeddings.safetensors``, the rest from ``index.json``.

        Its save wrote ``embeddings.safetensors.tmp`` and ``index.json.tmp``, then renamed them in that
        order: with the first still there, nothing was renamed (``index.json`` belongs to the embeddings);
        with only the second, the embeddings were renamed and the metadata was not (``index.json.tmp``
        belongs to them).
        """
        meta_path = folder / INDEX_FILE
        partial_meta = folder / (INDEX_FILE + TMP_SUFFIX)
        if not (folder / (EMBEDDINGS_FILE + TMP_SUFFIX)).exists() and partial_meta.is_file():
            meta_path = partial_meta
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise DamagedIndexError(
                f"{folder} holds a version 1 index whose {meta_path.name} is missing or unreadable ({err}); "
                "rebuild it with `gadms index`"
            ) from None
        if not isinstance(meta, dict) or meta.get("format") != INDEX_FORMAT:
            raise ValueError(f"{meta_path} is not a GA-DMS gallery index")
        _check_version(meta, meta_path)
        paths = meta.get("paths")
        same_model = "model" not in header or meta.get("model") == header["model"]
        if not isinstance(paths, list) or len(paths) != len(embeddings) or not same_model:
            raise DamagedIndexError(
                f"{meta_path} does not describe {folder / EMBEDDINGS_FILE} ({len(embeddings)} rows; a save "
                "was interrupted?); rebuild the index with `gadms index`"
            )
        return cls(embeddings=embeddings, paths=list(paths), root=meta["root"], model=meta["model"])

    def search(
        self, queries: torch.Tensor, k: int = 10, backend: str = "auto", *, nprobe: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-``k`` gallery rows for each query by cosine similarity (queries are normalised here).

        Args:
            queries: ``[Q, D]`` (or ``[D]``) query embeddings, e.g. from ``embed_texts``.
            k: results per query; ``min(k, len(self))`` are returned.
            backend: ``torch``, ``faiss``, ``faiss-ivf`` or ``auto`` (see :mod:`retrieval.search`). The exact
                ones give the same results. The FAISS index (exhaustive, float16 storage, sharded over
                threads: see :func:`~retrieval.search.build_faiss_index`) is built on the first FAISS search
                and kept. ``faiss-ivf`` is approximate (exact scores, but a true top-k row can be missed)
                and searches :attr:`ivf`, built here (and kept, not saved) when the index has none;
                ``auto`` picks it for a gallery of at least :data:`~retrieval.search.IVF_THRESHOLD` images
                that has one.
            nprobe: IVF cells visited per query (``faiss-ivf`` only; default:
                :func:`retrieval.ann.default_nprobe`).

        Returns:
            ``(scores, indices)``: ``[Q, k]`` float32 and int64, best first, ties broken by lower index.
        """
        chosen = resolve_backend(backend, len(self), has_ivf=self._ivf is not None)
        if chosen == "faiss-ivf" and len(self):
            if self._ivf is None:
                self.build_ivf()
            return ivf_topk(self.embeddings, queries, k, index=self._ivf, nprobe=nprobe)
        if chosen == "faiss" and len(self):
            if self._faiss_index is None:
                self._faiss_index = build_faiss_index(self.embeddings)
            return faiss_topk(self.embeddings, queries, k, index=self._faiss_index)
        return exact_topk(self.embeddings, queries, k)


@dataclass
class SearchHit:
    """One search result: its rank (1-based), cosine similarity and the image's absolute path."""

    rank: int
    score: float
    path: Path


def search_text(
    index: GalleryIndex,
    model: torch.nn.Module,
    processor: Any,
    text: str,
    k: int = 10,
    backend: str = "auto",
    *,
    nprobe: int | None = None,
) -> list[SearchHit]:
    """The ``k`` gallery images (all, when fewer) that best match the caption ``text``, best first.

    ``model`` and ``processor`` should be the ones that built ``index`` (``index.model``); ``backend`` and
    ``nprobe``: see :meth:`GalleryIndex.search`.
    """
    query = embed_texts(model, processor, [text], progress=False)
    scores, indices = index.search(query, k=k, backend=backend, nprobe=nprobe)
    return [
        SearchHit(rank=rank, score=float(score), path=index.image_path(int(i)).resolve())
        for rank, (score, i) in enumerate(zip(scores[0].tolist(), indices[0].tolist()), start=1)
    ]
