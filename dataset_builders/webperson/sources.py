"""Where source images come from: a folder, WebDataset tars, parquet shards, a ``datasets`` data set or
a URL list. Every source yields :class:`SourceItem` objects in a deterministic order.

URL lists: for real pools use img2dataset (``pip install img2dataset``, an optional extra that this
project does not install) through :func:`download_with_img2dataset`, which writes WebDataset tars that
:func:`tar_source` reads; :func:`url_source` is a small built-in downloader (threads, timeouts, retries)
for short lists and tests.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import tarfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import httpx
import pyarrow.parquet as pq

from .retry import TryAgain, retry_after, retry_call

__all__ = [
    "IMAGE_EXTENSIONS",
    "DownloadError",
    "SourceItem",
    "dataset_source",
    "download_with_img2dataset",
    "folder_source",
    "open_source",
    "parquet_source",
    "tar_source",
    "url_source",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


class DownloadError(OSError):
    """A source item whose bytes could not be fetched (network error, HTTP status, unreadable file)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class SourceItem:
    """One source image: a key unique within the source, its URL ('' when unknown) and a loader."""

    key: str
    url: str
    load: Callable[[], bytes]


def _failing(reason: str, detail: str) -> Callable[[], bytes]:
    def load() -> bytes:
        raise DownloadError(reason, detail)

    return load


def _read_file(path: Path) -> Callable[[], bytes]:
    def load() -> bytes:
        try:
            return path.read_bytes()
        except OSError as error:
            raise DownloadError("unreadable", f"{path}: {error}") from None

    return load


def _walk_folder(root: Path) -> Iterator[tuple[tuple[str, ...], SourceItem]]:
    """``(relative parts, item)`` for the image files under ``root``, and a failing item for each entry
    that hides files or cannot be read, so that nothing is dropped without a record:

    - ``symlink_loop``: a link (to a folder) that leads back to a folder it lies in, or a link that
      cannot be resolved because it loops (ELOOP);
    - ``unreadable``: a folder that cannot be listed, a broken link or a special file with an image
      extension, a folder or link that cannot be examined.

    Links to folders elsewhere are followed (their files are read once per path that reaches them;
    the ingest stage drops the second copy as ``duplicate``)."""

    def record(parts: tuple[str, ...], reason: str, detail: str) -> tuple[tuple[str, ...], SourceItem]:
        key = "/".join(parts)
        return parts, SourceItem(key, "", _failing(reason, f"{key}: {detail}"))

    def target(path: Path) -> str:
        try:
            return f" -> {os.readlink(path)}"
        except OSError:
            return ""

    def visit(
        folder: Path, parts: tuple[str, ...], ancestors: dict[tuple[int, int], str]
    ) -> Iterator[tuple[tuple[str, ...], SourceItem]]:
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda entry: entry.name)
        except OSError as error:
            if not parts:
                raise
            yield record(parts, "unreadable", f"folder cannot be listed: {error.strerror or error}")
            return
        for entry in entries:
            path, here = Path(entry.path), (*parts, entry.name)
            is_image = Path(entry.name).suffix.lower() in IMAGE_EXTENSIONS
            try:
                if entry.is_symlink():
                    info = os.stat(path)  # follows the link
                elif entry.is_dir(follow_symlinks=False):
                    info = entry.stat(follow_symlinks=False)
                else:
                    if entry.is_file(follow_symlinks=False) and is_image:
                        yield here, SourceItem("/".join(here), "", _read_file(path))
                    elif is_image:
                        yield record(here, "unreadable", "not a regular file")
                    continue
            except OSError as error:
                if error.errno == errno.ELOOP:
                    yield record(here, "symlink_loop", f"the link loops{target(path)}")
                elif is_image or not isinstance(error, FileNotFoundError):
                    what = "broken link" if isinstance(error, FileNotFoundError) else "cannot be examined"
                    yield record(here, "unreadable", f"{what}{target(path)}: {error.strerror or error}")
                continue
            if stat.S_ISDIR(info.st_mode):
                identity = (info.st_dev, info.st_ino)
                if identity in ancestors:
                    inside = ancestors[identity] or "the source folder"
                    yield record(here, "symlink_loop", f"leads back to {inside}{target(path)}")
                else:
                    yield from visit(path, here, {**ancestors, identity: "/".join(here)})
            elif stat.S_ISREG(info.st_mode) and is_image:
                yield here, SourceItem("/".join(here), "", _read_file(path))
            elif is_image:
                yield record(here, "unreadable", f"not a regular file{target(path)}")

    info = root.stat()
    yield from visit(root, (), {(info.st_dev, info.st_ino): ""})


def folder_source(folder: str | Path) -> Iterator[SourceItem]:
    """Image files under ``folder`` (recursively, by extension, following links to folders), sorted by
    relative path. What cannot be listed or read comes as items that fail when loaded (reasons
    ``symlink_loop``, ``unreadable``: see :func:`_walk_folder`), so the ingest stage records them."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist")
    for _, item in sorted(_walk_folder(root), key=lambda found: found[0]):  # path order, by components
        yield item


def _expand(patterns: Sequence[str | Path], suffixes: tuple[str, ...]) -> list[Path]:
    files: list[Path] = []
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.name.endswith(suffixes))
        elif any(ch in str(pattern) for ch in "*?["):
            files += sorted(Path(p) for p in _glob(str(pattern)))
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"source {pattern} matches no file")
    return files


def _glob(pattern: str) -> list[str]:
    import glob

    return glob.glob(pattern, recursive=True)


def _read_range(path: Path, offset: int, size: int) -> Callable[[], bytes]:
    def load() -> bytes:
        try:
            with open(path, "rb") as handle:
                handle.seek(offset)
                data = handle.read(size)
        except OSError as error:
            raise DownloadError("unreadable", f"{path}: {error}") from None
        if len(data) != size:
            raise DownloadError("unreadable", f"{path}: member at byte {offset} is cut short")
        return data

    return load


def tar_source(patterns: Sequence[str | Path]) -> Iterator[SourceItem]:
    """WebDataset tars (img2dataset's output): members grouped by key; the image member
    (``.jpg``/``.png``/``.webp``...) is the image, ``KEY.json``'s ``url`` the URL.

    Listing reads only the tar headers and the small ``.json`` members; an image's bytes are read when
    its shard is processed, so workers skipping shards (``--shard i/n``) do not read them. A corrupt tar
    yields one failing item (reason ``unreadable``) and the source goes on with the next tar."""
    for path in _expand(patterns, (".tar",)):
        samples: dict[str, dict[str, Any]] = {}
        order: list[str] = []
        try:
            with tarfile.open(path, "r:") as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    stem, dot, ext = member.name.rpartition(".")
                    if not dot:
                        continue
                    ext = ext.lower()
                    if stem not in samples:
                        samples[stem] = {}
                        order.append(stem)
                    if ext == "json":
                        handle = tar.extractfile(member)
                        samples[stem][ext] = handle.read() if handle is not None else b""
                    else:
                        samples[stem][ext] = (member.offset_data, member.size)
        except (tarfile.TarError, OSError, EOFError) as error:
            yield SourceItem(f"{path.name}:<tar error>", "", _failing("unreadable", f"{path}: {error}"))
        for stem in order:
            sample = samples[stem]
            image_ext = next((e for e in sample if f".{e}" in IMAGE_EXTENSIONS), None)
            if image_ext is None:
                continue
            url = ""
            if "json" in sample:
                try:
                    url = str(json.loads(sample["json"]).get("url") or "")
                except (ValueError, AttributeError):
                    url = ""
            offset, size = sample[image_ext]
            yield SourceItem(f"{path.name}:{stem}", url, _read_range(path, offset, size))


def _cell_bytes(cell: Any, where: str) -> bytes:
    if isinstance(cell, dict):
        data = cell.get("bytes")
        if data is None and cell.get("path"):
            try:
                return Path(cell["path"]).read_bytes()
            except OSError as error:
                raise DownloadError("unreadable", f"{where}: {error}") from None
        return data or b""
    return cell or b""


class _RowGroupReader:
    """Reads one column of a parquet file a row group at a time, keeping the last group (thread-safe):
    the items of a shard are consecutive rows, so each group is read once."""

    def __init__(self, path: Path, column: str) -> None:
        self.path = path
        self.column = column
        self.lock = threading.Lock()
        self.group: int | None = None
        self.values: list[Any] = []

    def load(self, group: int, index: int, row: int) -> Callable[[], bytes]:
        def read() -> bytes:
            with self.lock:
                if self.group != group:
                    table = pq.ParquetFile(self.path).read_row_group(group, columns=[self.column])
                    self.values = table.column(self.column).to_pylist()
                    self.group = group
                cell = self.values[index]
            return _cell_bytes(cell, f"{self.path} row {row}")

        return read


def parquet_source(
    patterns: Sequence[str | Path], image_column: str = "image", url_column: str | None = "url"
) -> Iterator[SourceItem]:
    """Rows of parquet files; ``image_column`` holds bytes or a ``{"bytes", "path"}`` struct (the
    ``datasets`` Image layout); ``url_column`` (optional) the URL.

    Listing reads only the URL column; image bytes are read a row group at a time when their shard is
    processed, so workers skipping shards (``--shard i/n``) do not read them."""
    for path in _expand(patterns, (".parquet",)):
        file = pq.ParquetFile(path)
        names = file.schema_arrow.names
        if image_column not in names:
            raise KeyError(f"{path}: no column {image_column!r} (columns: {names}); set --image-column")
        has_url = bool(url_column) and url_column in names
        reader = _RowGroupReader(path, image_column)
        row = 0
        for group in range(file.num_row_groups):
            size = file.metadata.row_group(group).num_rows
            urls = (
                file.read_row_group(group, columns=[url_column]).column(url_column).to_pylist()
                if has_url
                else [""] * size
            )
            for index in range(size):
                yield SourceItem(f"{path.name}:{row}", str(urls[index] or ""), reader.load(group, index, row))
                row += 1


def dataset_source(
    name_or_path: str, split: str = "train", image_column: str = "image", url_column: str | None = "url"
) -> Iterator[SourceItem]:
    """Rows of a ``datasets`` data set: a folder saved with ``save_to_disk``, or anything
    ``load_dataset`` takes (a local folder or a hub id in the local cache). Image bytes are read
    (from the memory-mapped arrow files) when their shard is processed."""
    import datasets

    path = Path(name_or_path)
    if (path / "state.json").is_file() or (path / "dataset_dict.json").is_file():
        loaded = datasets.load_from_disk(str(path))
        ds = loaded[split] if isinstance(loaded, datasets.DatasetDict) else loaded
    else:
        ds = datasets.load_dataset(name_or_path, split=split)
    if image_column not in ds.column_names:
        raise KeyError(f"data set {name_or_path}: no column {image_column!r} (columns: {ds.column_names})")
    if isinstance(ds.features[image_column], datasets.Image):
        ds = ds.cast_column(image_column, datasets.Image(decode=False))
    images = ds.select_columns([image_column])
    urls = ds[url_column] if bool(url_column) and url_column in ds.column_names else [""] * len(ds)

    def load(index: int) -> Callable[[], bytes]:
        return lambda: _cell_bytes(images[index][image_column], f"{name_or_path} {split} row {index}")

    for index, url in enumerate(urls):
        yield SourceItem(f"{split}:{index}", str(url or ""), load(index))


def _fetch(url: str, timeout: float, retries: int, user_agent: str) -> bytes:
    """The bytes at ``url`` (redirects followed), retried on timeouts, connection errors, HTTP 429 and
    5xx (waiting what ``Retry-After`` asks, at most 2 s); any failure raises ``download_failed``."""

    def attempt(_number: int) -> bytes:
        headers = {"User-Agent": user_agent}
        try:
            response = httpx.get(url, headers=headers, timeout=timeout, follow_redirects=True)
        except (httpx.RequestError, httpx.InvalidURL, OSError) as error:
            failure = DownloadError("download_failed", f"{url}: {type(error).__name__}: {error}")
            if isinstance(error, (httpx.InvalidURL, httpx.UnsupportedProtocol)):  # not a URL: no retry
                raise failure from None
            raise TryAgain(failure) from None
        if response.is_success:
            return response.content
        failure = DownloadError("download_failed", f"{url}: HTTP {response.status_code}")
        if response.status_code < 500 and response.status_code != 429:
            raise failure
        raise TryAgain(failure, retry_after(response.headers.get("Retry-After")))

    return retry_call(attempt, retries=retries, backoff=0.2, max_backoff=2.0)


def url_source(
    url_file: str | Path, timeout: float = 10.0, retries: int = 1, user_agent: str = "webperson-curation/0.1"
) -> Iterator[SourceItem]:
    """URLs of a text file (one per line; ``#`` comments and blank lines skipped), fetched lazily
    (the ingest stage fetches a shard's URLs with a thread pool). Failures become ``download_failed``."""
    path = Path(url_file)
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        url = line.strip()
        if not url or url.startswith("#"):
            continue
        yield SourceItem(
            f"{path.name}:{number}", url, lambda url=url: _fetch(url, timeout, retries, user_agent)
        )


def download_with_img2dataset(
    url_file: str | Path, output_folder: str | Path, *, processes: int = 8, threads: int = 64, **options: Any
) -> list[Path]:
    """Download a URL list with img2dataset (WebDataset output, original image size kept) and return
    the written tars; feed them to :func:`tar_source`. img2dataset is an optional extra.

    Raises:
        ImportError: when img2dataset is not installed, with the pip command.
    """
    try:
        from img2dataset import download
    except ImportError:
        raise ImportError(
            "URL lists at scale need img2dataset: pip install img2dataset "
            "(or use the built-in downloader for short lists: --downloader builtin)"
        ) from None
    out = Path(output_folder)
    download(
        url_list=str(url_file),
        output_folder=str(out),
        output_format="webdataset",
        resize_mode="no",
        processes_count=processes,
        thread_count=threads,
        **options,
    )
    return sorted(out.glob("*.tar"))


def open_source(kind: str, location: Sequence[str], **options: Any) -> Iterable[SourceItem]:
    """The source of ``kind`` (``folder``, ``tar``, ``parquet``, ``dataset``, ``urls``) at ``location``."""
    if kind == "folder":
        if len(location) != 1:
            raise ValueError("--source folder takes exactly one folder")
        return folder_source(location[0])
    if kind == "tar":
        return tar_source(location)
    if kind == "parquet":
        return parquet_source(
            location, options.get("image_column", "image"), options.get("url_column", "url")
        )
    if kind == "dataset":
        return dataset_source(
            location[0],
            options.get("split", "train"),
            options.get("image_column", "image"),
            options.get("url_column", "url"),
        )
    if kind == "urls":
        if options.get("downloader", "builtin") == "img2dataset":
            tars = download_with_img2dataset(location[0], options["download_dir"])
            return tar_source(tars)
        return url_source(location[0], options.get("timeout", 10.0), options.get("retries", 1))
    raise ValueError(f"unknown source kind {kind!r}; use folder, tar, parquet, dataset or urls")
