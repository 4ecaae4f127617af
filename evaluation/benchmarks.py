"""The text-based person retrieval benchmarks as ``datasets`` objects, read from their official files.

==============  ===================================  =========  =======================================
name            annotation file                      image key  images under (default)
==============  ===================================  =========  =======================================
``cuhk-pedes``  ``reid_raw.json``                    file_path  ``<root>/imgs/``
``icfg-pedes``  ``ICFG-PEDES.json``                  file_path  ``<root>/imgs/``
``rstpreid``    ``data_captions.json``               img_path   ``<root>/imgs/``
``ufine6926``   ``UFine6926_Annotations_1024.json``  file_path  ``<root>/`` (paths read ``images/...``)
==============  ===================================  =========  =======================================

Every file is a JSON list of image records ``{"split", "id", <image key>, "captions": [...]}``.

- :func:`load_benchmark` returns a :class:`datasets.DatasetDict` of *samples*, one row per caption
  (splits ``train``, ``validation``, ``test``; the official ``val`` is renamed ``validation``), with the
  columns ``image`` (path-referenced, decoded on access), ``image_path`` (as in the file), ``caption``,
  ``person_id`` (the file's id), ``label`` (0..N-1 over the split's identities in ascending id order,
  for an identity classifier), ``image_index`` (the image record's position in its split) and
  ``caption_index``.
- :func:`evaluation_view` turns a split into the evaluation protocol's view
  (:class:`RetrievalSplit`): the *gallery*, one row per image record, and the *queries*, one row per
  caption; :func:`load_retrieval_split` does both steps.
- ICFG-PEDES has no validation split. One is carved from the training identities, deterministically:
  the training person ids are ordered by ``sha256(f"{seed}:{person_id}")`` (hex digest) and the first
  ``round(validation_fraction * number_of_ids)`` (at least 1) move, with all their images, from
  ``train`` to ``validation`` (defaults: fraction 0.1, seed 0, i.e. 310 of ICFG-PEDES' 3,102 training
  identities). This does not depend on any random number generator or library version.
- Errors name the file and the record: malformed JSON, a record that is not an object, a missing key,
  an unknown split, a bad id or caption list (:class:`BenchmarkFormatError`), a missing image
  (:class:`MissingImagesError`; with ``list_all_missing=True`` every missing image is listed at once).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import datasets

__all__ = [
    "BENCHMARKS",
    "BenchmarkSpec",
    "BenchmarkFormatError",
    "MissingImagesError",
    "SplitNotFoundError",
    "ImageRecord",
    "RetrievalSplit",
    "resolve_benchmark",
    "find_benchmark_root",
    "read_annotations",
    "load_benchmark",
    "evaluation_view",
    "load_retrieval_split",
    "SAMPLE_FEATURES",
]


@dataclass(frozen=True)
class BenchmarkSpec:
    """Where a benchmark keeps its annotations and images."""

    name: str  #: display name, also the conventional folder name of its root
    annotation_file: str  #: annotation file name inside the root
    path_key: str  #: record key of the image's relative path
    image_subdir: str  #: folder (relative to the root) that image paths are relative to
    validation_fraction: float | None = None  #: carve a validation split from train by default


BENCHMARKS: dict[str, BenchmarkSpec] = {
    "cuhk-pedes": BenchmarkSpec("CUHK-PEDES", "reid_raw.json", "file_path", "imgs"),
    "icfg-pedes": BenchmarkSpec(
        "ICFG-PEDES", "ICFG-PEDES.json", "file_path", "imgs", validation_fraction=0.1
    ),
    "rstpreid": BenchmarkSpec("RSTPReid", "data_captions.json", "img_path", "imgs"),
    "ufine6926": BenchmarkSpec("UFine6926", "UFine6926_Annotations_1024.json", "file_path", ""),
}
_ALIASES = {
    "cuhk": "cuhk-pedes",
    "icfg": "icfg-pedes",
    "rstp": "rstpreid",
    "rstp-reid": "rstpreid",
    "ufine": "ufine6926",
}
_SPLITS = {"train": "train", "val": "validation", "validation": "validation", "test": "test"}
_SPLIT_ORDER = ("train", "validation", "test")

SAMPLE_FEATURES = datasets.Features(
    {
        "image": datasets.Image(),
        "image_path": datasets.Value("string"),
        "caption": datasets.Value("string"),
        "person_id": datasets.Value("int64"),
        "label": datasets.Value("int64"),
        "image_index": datasets.Value("int64"),
        "caption_index": datasets.Value("int64"),
    }
)


class BenchmarkFormatError(ValueError):
    """An annotation file or one of its records does not follow the benchmark's format."""


class SplitNotFoundError(ValueError):
    """The requested split is not a split name, or the annotation file has no record of it."""


class MissingImagesError(FileNotFoundError):
    """Images referenced by an annotation file are not on disk. ``missing``: ``[(record, path), ...]``."""

    def __init__(self, annotation_file: str | os.PathLike, missing: list[tuple[int, str]], complete: bool):
        self.annotation_file = str(annotation_file)
        self.missing = missing
        lines = "\n".join(f"  record {index}: {path}" for index, path in missing)
        if complete:
            head = f"{len(missing)} image(s) referenced by {self.annotation_file} are missing:"
        else:
            head = (
                f"image referenced by {self.annotation_file} is missing (pass list_all_missing=True to list "
                "every missing image at once):"
            )
        super().__init__(f"{head}\n{lines}")


@dataclass(frozen=True)
class ImageRecord:
    """One validated image record of an annotation file."""

    record: int  #: position of the record in the file (0-based)
    split: str  #: ``train``, ``validation`` or ``test``
    person_id: int
    path: str  #: image path as written in the file
    captions: tuple[str, ...]


@dataclass
class RetrievalSplit:
    """The evaluation view of one split.

    Attributes:
        gallery: one row per image record: ``image``, ``image_path``, ``person_id``, ``image_index``.
        queries: one row per caption: ``caption``, ``person_id``, ``image_index``, ``caption_index``.
    """

    gallery: datasets.Dataset
    queries: datasets.Dataset

    @property
    def gallery_ids(self) -> list[int]:
        return list(self.gallery["person_id"])

    @property
    def query_ids(self) -> list[int]:
        return list(self.queries["person_id"])

    @property
    def captions(self) -> list[str]:
        return list(self.queries["caption"])

    def image_files(self) -> list[str]:
        """Absolute paths of the gallery images, in gallery order (nothing is decoded)."""
        undecoded = self.gallery.cast_column("image", datasets.Image(decode=False))
        return [item["path"] for item in undecoded["image"]]


# ------------------------------------------------------------------------------------------------
# names and paths


def resolve_benchmark(name: str) -> tuple[str, BenchmarkSpec]:
    """``("cuhk-pedes", spec)`` for any spelling: ``CUHK-PEDES``, ``cuhk_pedes``, ``cuhk``, ..."""
    key = name.strip().lower().replace("_", "-")
    key = _ALIASES.get(key, key)
    if key not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
    return key, BENCHMARKS[key]


def find_benchmark_root(name: str, data_root: str | os.PathLike) -> Path:
    """The folder holding the benchmark's annotation file: ``data_root`` itself, or its standard
    sub-folder (``data_root/CUHK-PEDES``, ``data_root/ICFG-PEDES``, ``data_root/RSTPReid``,
    ``data_root/UFine6926``) when several benchmarks share one parent folder."""
    _, spec = resolve_benchmark(name)
    root = Path(data_root)
    candidates = [root, root / spec.name]
    for candidate in candidates:
        if (candidate / spec.annotation_file).is_file():
            return candidate
    tried = ", ".join(str(c / spec.annotation_file) for c in candidates)
    raise FileNotFoundError(f"{spec.name} annotation file not found; looked for {tried}")


# ------------------------------------------------------------------------------------------------
# reading and validating


def _fail(path: Path, index: int, record: Any, spec: BenchmarkSpec, problem: str) -> BenchmarkFormatError:
    where = f"{path}: record {index}"
    if isinstance(record, dict) and isinstance(record.get(spec.path_key), str):
        where += f" ({spec.path_key}={record[spec.path_key]!r})"
    return BenchmarkFormatError(f"{where}: {problem}")


def _validate(path: Path, index: int, record: Any, spec: BenchmarkSpec) -> ImageRecord:
    if not isinstance(record, dict):
        raise _fail(path, index, record, spec, f"expected a JSON object, got {type(record).__name__}")
    for key in ("split", "id", spec.path_key, "captions"):
        if key not in record:
            raise _fail(path, index, record, spec, f"missing key {key!r}")
    split = record["split"]
    if not isinstance(split, str) or split.lower() not in _SPLITS:
        raise _fail(path, index, record, spec, f"unknown split {split!r} (expected train, val or test)")
    person_id = record["id"]
    if isinstance(person_id, str) and person_id.strip().lstrip("-").isdigit():
        person_id = int(person_id)
    if isinstance(person_id, bool) or not isinstance(person_id, int):
        raise _fail(path, index, record, spec, f"person id must be an integer, got {record['id']!r}")
    image_path = record[spec.path_key]
    if not isinstance(image_path, str) or not image_path:
        raise _fail(path, index, record, spec, f"{spec.path_key!r} must be a non-empty string")
    captions = record["captions"]
    if isinstance(captions, str) or not isinstance(captions, list) or not captions:
        raise _fail(path, index, record, spec, "'captions' must be a non-empty list of strings")
    for c, caption in enumerate(captions):
        if not isinstance(caption, str):
            raise _fail(path, index, record, spec, f"caption {c} is not a string ({type(caption).__name__})")
    return ImageRecord(index, _SPLITS[split.lower()], person_id, image_path, tuple(captions))


def read_annotations(
    name: str, data_root: str | os.PathLike, *, annotation_file: str | os.PathLike | None = None
) -> list[ImageRecord]:
    """Read and validate a benchmark's annotation file (no image is touched).

    Args:
        name: benchmark name (see :data:`BENCHMARKS`).
        data_root: the benchmark's folder.
        annotation_file: another file name or path (relative to ``data_root``) in the same format.

    Raises:
        FileNotFoundError: no annotation file.
        BenchmarkFormatError: malformed JSON or a malformed record (the message names file and record).
    """
    _, spec = resolve_benchmark(name)
    path = Path(data_root) / (annotation_file or spec.annotation_file)
    if not path.is_file():
        raise FileNotFoundError(f"{spec.name} annotation file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as err:
        raise BenchmarkFormatError(
            f"{path}: malformed JSON at line {err.lineno}, column {err.colno}: {err.msg}"
        ) from err
    except UnicodeDecodeError as err:
        raise BenchmarkFormatError(f"{path}: not UTF-8 text ({err})") from err
    if not isinstance(data, list):
        raise BenchmarkFormatError(
            f"{path}: expected a JSON list of image records, got {type(data).__name__}"
        )
    return [_validate(path, i, record, spec) for i, record in enumerate(data)]


def _carve_validation(records: list[ImageRecord], fraction: float, seed: int) -> list[ImageRecord]:
    if not 0 < fraction < 1:
        raise ValueError(f"validation_fraction must be in (0, 1), got {fraction}")
    train_ids = sorted({r.person_id for r in records if r.split == "train"})
    if len(train_ids) < 2:
        raise ValueError("cannot carve a validation split from fewer than 2 training identities")
    ranked = sorted(train_ids, key=lambda pid: hashlib.sha256(f"{seed}:{pid}".encode()).hexdigest())
    n_val = min(len(train_ids) - 1, max(1, round(fraction * len(train_ids))))
    chosen = set(ranked[:n_val])
    return [
        ImageRecord(r.record, "validation", r.person_id, r.path, r.captions)
        if r.split == "train" and r.person_id in chosen
        else r
        for r in records
    ]


def _check_images(records: Iterable[ImageRecord], image_dir: Path, annotation: Path, list_all: bool) -> None:
    missing: list[tuple[int, str]] = []
    for r in records:
        file = image_dir / r.path
        if not file.is_file():
            missing.append((r.record, str(file)))
            if not list_all:
                raise MissingImagesError(annotation, missing, complete=False)
    if missing:
        raise MissingImagesError(annotation, missing, complete=True)


# ------------------------------------------------------------------------------------------------
# datasets


def _samples(records: Sequence[ImageRecord], image_dir: Path, info: datasets.DatasetInfo) -> datasets.Dataset:
    labels = {pid: i for i, pid in enumerate(sorted({r.person_id for r in records}))}
    columns: dict[str, list] = {key: [] for key in SAMPLE_FEATURES}
    for image_index, r in enumerate(records):
        file = str((image_dir / r.path).resolve())
        for caption_index, caption in enumerate(r.captions):
            columns["image"].append(file)
            columns["image_path"].append(r.path)
            columns["caption"].append(caption)
            columns["person_id"].append(r.person_id)
            columns["label"].append(labels[r.person_id])
            columns["image_index"].append(image_index)
            columns["caption_index"].append(caption_index)
    return datasets.Dataset.from_dict(columns, features=SAMPLE_FEATURES, info=info)


def load_benchmark(
    name: str,
    data_root: str | os.PathLike,
    *,
    splits: Sequence[str] | None = None,
    image_dir: str | os.PathLike | None = None,
    annotation_file: str | os.PathLike | None = None,
    validation_fraction: float | None | str = "default",
    validation_seed: int = 0,
    check_images: bool = True,
    list_all_missing: bool = False,
) -> datasets.DatasetDict:
    """Load a benchmark as a ``DatasetDict`` of samples, one row per caption.

    Args:
        name: ``cuhk-pedes``, ``icfg-pedes``, ``rstpreid`` or ``ufine6926`` (any case; ``_`` or ``-``).
        data_root: the benchmark's folder (holding its annotation file).
        splits: the splits to return (default: all present; ``val`` and ``validation`` are the same).
        image_dir: folder the records' image paths are relative to. Default: ``<data_root>/imgs`` for
            CUHK-PEDES, ICFG-PEDES and RSTPReid; ``<data_root>`` for UFine6926, whose official paths
            already start with ``images/``.
        annotation_file: file name (or path relative to ``data_root``) replacing the official one.
        validation_fraction: fraction of training identities moved to a ``validation`` split when the
            file has none. ``"default"``: 0.1 for ICFG-PEDES, none for the others; ``None``: never.
        validation_seed: seed of the deterministic identity selection (see the module docstring).
        check_images: verify that every image of the returned splits exists.
        list_all_missing: collect every missing image and report them together instead of stopping
            at the first.

    Returns:
        ``DatasetDict`` with the columns of :data:`SAMPLE_FEATURES`, splits in the order train,
        validation, test.

    Raises:
        BenchmarkFormatError: malformed annotation file (names the file and the record).
        MissingImagesError: missing image(s) (names the file, the record(s) and the path(s)).
        SplitNotFoundError: an unknown split name, or a split the file has no record of (names the file).
    """
    key, spec = resolve_benchmark(name)
    data_root = Path(data_root)
    records = read_annotations(key, data_root, annotation_file=annotation_file)
    annotation_path = data_root / (annotation_file or spec.annotation_file)
    if validation_fraction == "default":
        validation_fraction = spec.validation_fraction
    if validation_fraction and not any(r.split == "validation" for r in records):
        records = _carve_validation(records, float(validation_fraction), validation_seed)
    present = [s for s in _SPLIT_ORDER if any(r.split == s for r in records)]
    if splits is None:
        wanted = present
    else:
        wanted = []
        for s in splits:
            if s.lower() not in _SPLITS:
                raise SplitNotFoundError(f"unknown split {s!r}; expected train, validation (val) or test")
            if _SPLITS[s.lower()] not in present:
                raise SplitNotFoundError(
                    f"{spec.name} has no {_SPLITS[s.lower()]!r} split in {annotation_path} "
                    f"(present: {', '.join(present) or 'none'})"
                )
            wanted.append(_SPLITS[s.lower()])
    image_dir = Path(image_dir) if image_dir is not None else data_root / spec.image_subdir
    by_split = {s: [r for r in records if r.split == s] for s in wanted}
    if check_images:
        _check_images((r for s in wanted for r in by_split[s]), image_dir, annotation_path, list_all_missing)
    out = datasets.DatasetDict()
    for s in wanted:
        info = datasets.DatasetInfo(
            description=f"{spec.name} {s} split: one row per caption, read from {spec.annotation_file}",
            features=SAMPLE_FEATURES,
        )
        out[s] = _samples(by_split[s], image_dir, info)
    return out


def evaluation_view(samples: datasets.Dataset) -> RetrievalSplit:
    """Gallery (one row per image, in image order) and queries (one row per caption) of a split
    returned by :func:`load_benchmark`."""
    image_index = list(samples["image_index"])
    first_rows: dict[int, int] = {}
    for row, index in enumerate(image_index):
        first_rows.setdefault(index, row)
    order = [first_rows[i] for i in sorted(first_rows)]
    gallery = samples.select(order).select_columns(["image", "image_path", "person_id", "image_index"])
    queries = samples.select_columns(["caption", "person_id", "image_index", "caption_index"])
    return RetrievalSplit(gallery=gallery, queries=queries)


def load_retrieval_split(
    name: str, data_root: str | os.PathLike, split: str = "test", **kwargs: Any
) -> RetrievalSplit:
    """The evaluation view of one split: ``evaluation_view(load_benchmark(..., splits=[split])[split])``.

    ``kwargs`` go to :func:`load_benchmark` (``image_dir``, ``list_all_missing``, ...).
    """
    split_key = _SPLITS.get(split.lower(), split)
    dataset = load_benchmark(name, data_root, splits=[split], **kwargs)
    return evaluation_view(dataset[split_key])
