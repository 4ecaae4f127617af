"""Running a stage over the done shards of the stage before it, with progress and a summary table."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import pyarrow as pa
from tqdm.auto import tqdm

from .shards import ShardSelection, StageStore

__all__ = ["ShardOutput", "format_summary", "retry_rejected", "run_stage"]


@dataclass
class ShardOutput:
    """What a stage makes of one input shard.

    Attributes:
        table: the kept items (the stage's output schema).
        rejects: one ``{"id", "reason", "detail"}`` record per rejected item.
        items_in: items read from the input shard.
        extra: further counts for the manifest (e.g. ``{"converted_cmyk": 3}``).
    """

    table: pa.Table
    rejects: list[dict[str, Any]] = field(default_factory=list)
    items_in: int = 0
    extra: dict[str, int] = field(default_factory=dict)

    def counts(self, seconds: float) -> dict[str, Any]:
        return {
            "in": self.items_in,
            "kept": self.table.num_rows,
            "rejected": dict(Counter(r["reason"] for r in self.rejects)),
            "extra": self.extra,
            "seconds": round(seconds, 3),
        }


def run_stage(
    source: StageStore,
    target: StageStore,
    process: Callable[[str, pa.Table], ShardOutput],
    *,
    selection: ShardSelection = ShardSelection(),
    progress: bool = True,
    unit: str = "item",
    settings: Mapping[str, Any] | None = None,
    input_columns: list[str] | None = None,
    max_shards: int | None = None,
) -> dict[str, Any]:
    """Apply ``process`` to every done shard of ``source`` that this worker takes and ``target`` has not
    done yet; commit each result; return the target's manifest (totals over all its done shards).

    A done target shard is made again when its source shard changed since (a ``--retry-errors`` run
    upstream bumps the source marker's ``revision``). ``max_shards`` stops after that many shards (for
    tests and dry runs). Input shards that ``source`` has not finished yet (another worker still on
    them) are left for a later run and counted as ``pending_input`` in the returned manifest.
    """
    target.create(settings or {})
    names = [n for n in source.done_names() if selection.takes(n) and _stale(source, target, n)]
    if max_shards is not None:
        names = names[:max_shards]
    total = sum(source.marker(n).get("kept", 0) for n in names)
    bar = tqdm(total=total, desc=target.stage, unit=unit, disable=not progress, dynamic_ncols=True)
    try:
        for name in names:
            start = time.perf_counter()
            table = source.read(name, columns=input_columns)
            output = process(name, table)
            counts = output.counts(time.perf_counter() - start)
            counts["source_revision"] = source.marker(name).get("revision", 0)
            if target.is_done(name):  # made again: the stages after this one must follow
                counts["revision"] = target.marker(name).get("revision", 0) + 1
            target.commit(name, output.table, output.rejects, counts)
            bar.update(table.num_rows)
    finally:
        bar.close()
    manifest = target.write_manifest()
    manifest["processed_now"] = len(names)
    manifest["pending_input"] = _pending(source)
    return manifest


def _stale(source: StageStore, target: StageStore, name: str) -> bool:
    if not target.is_done(name):
        return True
    return target.marker(name).get("source_revision", 0) != source.marker(name).get("revision", 0)


def _pending(source: StageStore) -> int:
    settings = source.settings()
    expected = settings.get("expected_shards")
    return max(0, int(expected) - len(source.done_names())) if expected else 0


def format_summary(manifest: Mapping[str, Any]) -> str:
    """A plain-text table of one stage: items in, kept, and rejected per reason."""
    rows = [("in", manifest.get("in", 0)), ("kept", manifest.get("kept", 0))]
    rows += [(f"rejected: {reason}", n) for reason, n in manifest.get("rejected", {}).items()]
    rows += [(f"note: {key}", n) for key, n in manifest.get("extra", {}).items()]
    width = max(len(label) for label, _ in rows)
    done_now = []
    if "processed_now" in manifest:
        done_now.append(f"{manifest['processed_now']} now")
    if "retried_now" in manifest:
        done_now.append(f"{manifest['retried_now']} items retried")
    suffix = f" ({', '.join(done_now)})" if done_now else ""
    lines = [f"== {manifest.get('stage', '?')}: {manifest.get('shards', 0)} shards done{suffix}"]
    lines += [f"  {label:<{width}}  {n:>10,}" for label, n in rows]
    return "\n".join(lines)


def retry_rejected(
    source: StageStore,
    target: StageStore,
    process: Callable[[str, pa.Table], ShardOutput],
    reasons: tuple[str, ...],
    *,
    id_column: str,
    selection: ShardSelection = ShardSelection(),
    progress: bool = True,
    unit: str = "item",
) -> dict[str, Any]:
    """Process again the items of done ``target`` shards that were rejected for one of ``reasons``
    (transient failures: ``caption_error``, ``detector_error``, ``pose_error``) and merge the results.

    The merged shard keeps the input order, so a shard whose failures succeed on retry equals the shard
    an uninterrupted, failure-free run writes. Idempotent and safe to kill: rows of the retried ids are
    dropped from the shard before the new ones are added, and the marker is rewritten last.
    """
    todo = []
    for name in target.done_names():
        if selection.takes(name):
            ids = {r["id"] for r in target.rejections(name) if r["reason"] in reasons}
            if ids:
                todo.append((name, ids))
    bar = tqdm(
        total=sum(len(ids) for _, ids in todo),
        desc=f"{target.stage} retry",
        unit=unit,
        disable=not progress,
        dynamic_ncols=True,
    )
    try:
        for name, ids in todo:
            start = time.perf_counter()
            table = source.read(name)
            order = {value: i for i, value in reversed(list(enumerate(table.column(id_column).to_pylist())))}
            wanted = pa.array([value in ids for value in table.column(id_column).to_pylist()], pa.bool_())
            output = process(name, table.filter(wanted))
            existing = target.read(name)
            keep = pa.array(
                [value not in ids for value in existing.column(id_column).to_pylist()], pa.bool_()
            )
            merged = pa.concat_tables([existing.filter(keep), output.table.cast(existing.schema)])
            position = [order[value] for value in merged.column(id_column).to_pylist()]
            merged = merged.take(sorted(range(merged.num_rows), key=lambda k: position[k]))
            rejects = [r for r in target.rejections(name) if r["id"] not in ids] + output.rejects
            rejects.sort(key=lambda r: order.get(r["id"], -1))
            marker = target.marker(name)
            counts = {
                "in": marker.get("in", 0),
                "kept": merged.num_rows,
                "rejected": dict(Counter(r["reason"] for r in rejects)),
                "extra": marker.get("extra", {}),
                "seconds": round(marker.get("seconds", 0) + time.perf_counter() - start, 3),
                "retried": marker.get("retried", 0) + len(ids),
                "revision": marker.get("revision", 0) + 1,  # later stages redo this shard
                "source_revision": marker.get("source_revision", 0),
            }
            target.commit(name, merged, rejects, counts)
            bar.update(len(ids))
    finally:
        bar.close()
    manifest = target.write_manifest()
    manifest["retried_now"] = sum(len(ids) for _, ids in todo)
    return manifest
