"""Stage 1, ingest: source images -> ``WORK/ingest`` shards of validated, content-addressed images.

The source is cut into chunks of ``shard_size`` items in its deterministic order; chunk ``k`` becomes
shard ``k``. Each image gets ``source_id`` = SHA-256 prefix of its bytes, so the same picture met twice
(in the pool or in a rerun) is kept once (reason ``duplicate``). The original bytes are stored; every
later stage decodes them with :func:`images.decode_rgb`.

By default an image is checked from its header (:func:`images.probe_image`: empty, not an image, too
large, too small) and decoded once, by the detect stage, which records truncated pixel data there;
``verify=True`` (``--verify``) decodes every image here already (about twice the decoding work).

A source item whose bytes cannot be had is rejected with its source's reason: ``download_failed``
(URL lists), ``unreadable`` (a file, tar or row that cannot be read; in a folder also one that cannot be
listed, a broken link), ``symlink_loop`` (a folder source's link that loops or leads back to a folder it
lies in: :func:`sources.folder_source`), so nothing under a source is dropped without a record.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from pathlib import Path
from typing import Any, Iterable, Iterator

import pyarrow as pa
from tqdm.auto import tqdm

from .images import BadImage, ImageLimits, content_id, decode_rgb, probe_image
from .settings import settings_dict
from .shards import ShardSelection, StageStore, shard_name
from .sources import DownloadError, SourceItem
from .stage import ShardOutput

__all__ = ["INGEST_SCHEMA", "ingest"]

INGEST_SCHEMA = pa.schema(
    [
        ("source_id", pa.string()),
        ("source_key", pa.string()),
        ("source_url", pa.string()),
        ("image", pa.binary()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("mode", pa.string()),
    ]
)


def _chunks(items: Iterable[SourceItem], size: int) -> Iterator[list[SourceItem]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def _keys_digest(chunk: list[SourceItem]) -> str:
    digest = hashlib.sha256()
    for item in chunk:
        digest.update(item.key.encode() + b"\0")
    return digest.hexdigest()[:16]


def _load(item: SourceItem) -> bytes | DownloadError:
    try:
        return item.load()
    except DownloadError as error:
        return error
    except Exception as error:  # a source loader must not stop the stage
        return DownloadError("unreadable", f"{item.key}: {type(error).__name__}: {error}")


def ingest_chunk(
    chunk: list[SourceItem],
    seen: set[str],
    limits: ImageLimits,
    pool: ThreadPoolExecutor | None,
    verify: bool = False,
) -> ShardOutput:
    """Load, hash, deduplicate and validate one chunk; ``seen`` (ids kept so far) is updated."""
    loaded = list(pool.map(_load, chunk)) if pool is not None else [_load(item) for item in chunk]
    rows: dict[str, list[Any]] = {name: [] for name in INGEST_SCHEMA.names}
    rejects: list[dict[str, Any]] = []
    modes: Counter = Counter()
    for item, data in zip(chunk, loaded):
        if isinstance(data, DownloadError):
            rejects.append({"id": item.key, "reason": data.reason, "detail": data.detail, "url": item.url})
            continue
        source_id = content_id(data) if data else ""
        if source_id and source_id in seen:
            rejects.append({"id": item.key, "reason": "duplicate", "detail": source_id, "url": item.url})
            continue
        try:
            if verify:
                image, mode = decode_rgb(data, limits)
                width, height = image.size
            else:
                width, height, mode = probe_image(data, limits)
        except BadImage as error:
            rejects.append({"id": item.key, "reason": error.reason, "detail": error.detail, "url": item.url})
            continue
        seen.add(source_id)
        if mode != "RGB":
            modes[f"converted_{mode}"] += 1
        for name, value in (
            ("source_id", source_id),
            ("source_key", item.key),
            ("source_url", item.url),
            ("image", data),
            ("width", width),
            ("height", height),
            ("mode", mode),
        ):
            rows[name].append(value)
    return ShardOutput(pa.table(rows, schema=INGEST_SCHEMA), rejects, len(chunk), dict(modes))


def ingest(
    items: Iterable[SourceItem],
    work: str | Path,
    *,
    shard_size: int = 1000,
    selection: ShardSelection = ShardSelection(),
    limits: ImageLimits = ImageLimits(),
    workers: int = 8,
    verify: bool = False,
    progress: bool = True,
    settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the ingest stage and return its manifest (see :mod:`shards` for the layout).

    Resuming: done chunks are skipped after checking that the source still lists the same keys there
    (a changed source raises :class:`ValueError` naming the shard); their ids are loaded so that later
    chunks still drop duplicates of them.
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    store = StageStore(work, "ingest")
    store.create(
        {
            "shard_size": shard_size,
            **settings_dict(limits),
            "verify": verify,
            **(settings or {}),
        }
    )
    seen: set[str] = set()
    processed = 0
    bar = tqdm(desc="ingest", unit="img", disable=not progress, dynamic_ncols=True)
    pool = ThreadPoolExecutor(max_workers=workers) if workers > 1 else None
    try:
        for number, chunk in enumerate(_chunks(items, shard_size)):
            name = shard_name(number)
            if not selection.takes(name):
                continue
            digest = _keys_digest(chunk)
            if store.is_done(name):
                marker = store.marker(name)
                if marker.get("keys_digest") != digest:
                    raise ValueError(
                        f"{store.done / (name + '.json')}: the source lists other items for shard {name} "
                        "than when it was ingested (files added or removed?); "
                        "ingest into a new work directory"
                    )
                seen.update(store.read(name, columns=["source_id"]).column("source_id").to_pylist())
                continue
            start = time.perf_counter()
            output = ingest_chunk(chunk, seen, limits, pool, verify)
            counts = output.counts(time.perf_counter() - start)
            counts["keys_digest"] = digest
            counts["first_key"], counts["last_key"] = chunk[0].key, chunk[-1].key
            store.commit(name, output.table, output.rejects, counts)
            processed += 1
            bar.update(len(chunk))
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown()
    manifest = store.write_manifest()
    manifest["processed_now"] = processed
    return manifest
