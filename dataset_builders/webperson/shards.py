"""Sharded, resumable stage storage: parquet shards, rejection logs, done markers and a manifest.

Every stage writes into its own folder of the work directory::

    WORK/<stage>/settings.json          the settings the stage runs with (checked on resume)
    WORK/<stage>/shards/NNNNN.parquet   kept items of input shard NNNNN
    WORK/<stage>/rejects/NNNNN.jsonl    one {"id", "reason", "detail"} line per rejected item
    WORK/<stage>/done/NNNNN.json        the commit marker: counts of shard NNNNN (written last)
    WORK/<stage>/manifest.json          totals over the done shards (rewritten after each run)

A shard counts as done only when its marker exists, and the marker is written after the shard and its
rejection log have been renamed into place, so a stage killed at any moment resumes by redoing the
shards without a marker: nothing is duplicated and nothing is lost. The shard and the marker are
flushed to the disk (fsync) before their renames, so a power loss cannot leave a marker whose shard
is incomplete either. Shard names are carried from stage
to stage (detect shard 00007 holds the crops of ingest shard 00007), so ``--shard i/n`` splits every
stage the same way across machines that share the work directory.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["STAGES", "ShardSelection", "StageStore", "atomic_write_bytes", "parse_shard"]

#: The stages that keep shards in the work directory, in pipeline order (``export`` writes a data set
#: folder after them).
STAGES = ("ingest", "detect", "pose", "caption", "filter")

_NAME = re.compile(r"^\d{5,}$")


@dataclass(frozen=True)
class ShardSelection:
    """Which shards this worker takes: those whose number modulo ``count`` equals ``index``."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"--shard must be i/n with 0 <= i < n, got {self.index}/{self.count}")

    def takes(self, name: str) -> bool:
        """Whether the shard called ``name`` (``"00007"``) belongs to this worker."""
        return int(name) % self.count == self.index


def parse_shard(text: str) -> ShardSelection:
    """Parse ``"i/n"`` (``"0/1"``: everything) into a :class:`ShardSelection`."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like i/n (e.g. 0/4), got {text!r}") from None
    return ShardSelection(index, count)


def shard_name(number: int) -> str:
    """The file stem of shard ``number``: five digits or more (``00007``)."""
    return f"{number:05d}"


def atomic_write_bytes(path: Path, data: bytes, *, sync: bool = False) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename (never a half-written file);
    ``sync`` also flushes it to the disk before the rename (survives a power loss, not just a kill)."""
    tmp = path.with_name(f".{path.name}.tmp{uuid.uuid4().hex[:12]}")
    with open(tmp, "wb") as handle:
        handle.write(data)
        if sync:
            handle.flush()
            os.fsync(handle.fileno())
    os.replace(tmp, path)


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


class StageStore:
    """The folder of one stage in the work directory (see the module docstring for the layout)."""

    def __init__(self, work: str | Path, stage: str) -> None:
        self.stage = stage
        self.root = Path(work) / stage
        self.shards = self.root / "shards"
        self.rejects = self.root / "rejects"
        self.done = self.root / "done"

    def create(self, settings: Mapping[str, Any]) -> None:
        """Make the folders and record ``settings``; refuse to resume with different settings.

        Raises:
            ValueError: when ``settings.json`` exists and differs, naming the differing keys.
        """
        for folder in (self.shards, self.rejects, self.done):
            folder.mkdir(parents=True, exist_ok=True)
        path = self.root / "settings.json"
        settings = json.loads(json.dumps(dict(settings)))  # normalise tuples to lists
        if path.is_file():
            old = json.loads(path.read_text())
            if old != settings and any(self.done.iterdir()):
                keys = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
                raise ValueError(
                    f"{path}: stage {self.stage!r} already has done shards made with other settings "
                    f"(differing: {', '.join(keys)}); use a new work directory or the same settings"
                )
        atomic_write_bytes(path, (json.dumps(settings, indent=2, sort_keys=True) + "\n").encode())

    def settings(self) -> dict[str, Any]:
        path = self.root / "settings.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    # ----- shards -----------------------------------------------------------------------------------
    def done_names(self) -> list[str]:
        """Names of the shards whose marker exists, sorted."""
        if not self.done.is_dir():
            return []
        return sorted(p.stem for p in self.done.glob("*.json") if _NAME.match(p.stem))

    def is_done(self, name: str) -> bool:
        return (self.done / f"{name}.json").is_file()

    def shard_path(self, name: str) -> Path:
        return self.shards / f"{name}.parquet"

    def read(self, name: str, columns: list[str] | None = None) -> pa.Table:
        """The kept items of shard ``name``."""
        path = self.shard_path(name)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: shard {name} of stage {self.stage!r} is missing")
        return pq.read_table(path, columns=columns)

    def commit(
        self, name: str, table: pa.Table, rejects: Iterable[Mapping[str, Any]], counts: Mapping[str, Any]
    ) -> None:
        """Store the kept ``table`` and the ``rejects`` of shard ``name``, then its done marker."""
        tmp = self.shards / f".{name}.parquet.tmp{uuid.uuid4().hex[:12]}"
        # no dictionary encoding: the columns that matter are unique image bytes (3x faster writes)
        pq.write_table(table, tmp, row_group_size=256, use_dictionary=False)
        _fsync(tmp)
        os.replace(tmp, self.shard_path(name))
        lines = "".join(json.dumps(dict(r), sort_keys=True) + "\n" for r in rejects)
        atomic_write_bytes(self.rejects / f"{name}.jsonl", lines.encode())
        marker = dict(counts)
        marker["shard"] = name
        marker["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        atomic_write_bytes(
            self.done / f"{name}.json", (json.dumps(marker, sort_keys=True) + "\n").encode(), sync=True
        )

    def marker(self, name: str) -> dict[str, Any]:
        return json.loads((self.done / f"{name}.json").read_text())

    def rejections(self, name: str) -> list[dict[str, Any]]:
        """The rejection records of shard ``name``."""
        path = self.rejects / f"{name}.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines() if line]

    # ----- manifest ---------------------------------------------------------------------------------
    def totals(self) -> dict[str, Any]:
        """Counts summed over the done shards:
        ``{"shards", "in", "kept", "rejected": {reason: n}, "extra": {...}}``."""
        total_in = kept = 0
        rejected: Counter = Counter()
        extra: Counter = Counter()
        names = self.done_names()
        for name in names:
            marker = self.marker(name)
            total_in += marker.get("in", 0)
            kept += marker.get("kept", 0)
            rejected.update(marker.get("rejected", {}))
            extra.update(marker.get("extra", {}))
        return {
            "stage": self.stage,
            "shards": len(names),
            "in": total_in,
            "kept": kept,
            "rejected": dict(sorted(rejected.items())),
            "extra": dict(sorted(extra.items())),
        }

    def write_manifest(self) -> dict[str, Any]:
        """Rewrite ``manifest.json`` from the done markers and return it."""
        manifest = self.totals()
        manifest["done_shards"] = self.done_names()
        manifest["settings"] = self.settings()
        atomic_write_bytes(self.root / "manifest.json", (json.dumps(manifest, indent=2) + "\n").encode())
        return manifest
