"""Running a stage over the done shards of the stage before it, with progress and a summary table."""

from __future__ import annotations

import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, Iterator, Mapping

import pyarrow as pa
from tqdm.auto import tqdm

from .engines import Engine, LocalEngine, Runner, ShardJob
from .shards import ShardSelection, StageStore

__all__ = ["ShardOutput", "format_summary", "process_shard", "retry_rejected", "retry_shard", "run_stage"]


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
    process: Callable[[str, pa.Table], ShardOutput] | ShardJob | Runner,
    *,
    selection: ShardSelection = ShardSelection(),
    progress: bool = True,
    unit: str = "item",
    settings: Mapping[str, Any] | None = None,
    input_columns: list[str] | None = None,
    max_shards: int | None = None,
    engine: Engine | None = None,
) -> dict[str, Any]:
    """Apply ``process`` to every done shard of ``source`` that this worker takes and ``target`` has not
    done yet; commit each result; return the target's manifest (totals over all its done shards).

    A done target shard is made again when its source shard changed since (a ``--retry-errors`` run
    upstream bumps the source marker's ``revision``). ``max_shards`` stops after that many shards (for
    tests and dry runs). Input shards that ``source`` has not finished yet (another worker still on
    them) are left for a later run and counted as ``pending_input`` in the returned manifest.

    ``process`` is the shard function, or a :class:`~.engines.ShardJob` that makes it where the shards
    run, or a :class:`~.engines.Runner` opened already (a stage that also retries errors opens its
    engine once). ``engine`` runs the shards (:class:`~.engines.LocalEngine` when ``None``); each shard
    is committed by :func:`process_shard` whichever engine runs it.
    """
    target.create(settings or {})
    names = [n for n in source.done_names() if selection.takes(n) and _stale(source, target, n)]
    if max_shards is not None:
        names = names[:max_shards]
    markers = {name: source.marker(name) for name in names}
    total = sum(marker.get("kept", 0) for marker in markers.values())
    source_at, target_at = _absolute(source), _absolute(target)
    tasks = []
    for name in names:
        fields = {"source_revision": markers[name].get("revision", 0)}
        if target.is_done(name):  # made again: the stages after this one must follow
            fields["revision"] = target.marker(name).get("revision", 0) + 1
        tasks.append(partial(process_shard, source_at, target_at, name, fields, input_columns))
    bar = tqdm(total=total, desc=target.stage, unit=unit, disable=not progress, dynamic_ncols=True)
    try:
        if tasks:  # nothing to do: no engine started, no model loaded
            with _opened(process, engine) as runner:
                for rows in runner.run(tasks):
                    bar.update(rows)
    finally:
        bar.close()
    manifest = target.write_manifest()
    manifest["processed_now"] = len(names)
    manifest["pending_input"] = _pending(source)
    return manifest


def process_shard(
    source: StageStore,
    target: StageStore,
    name: str,
    fields: Mapping[str, Any],
    input_columns: list[str] | None,
    process: Callable[[str, pa.Table], ShardOutput],
) -> int:
    """One shard of :func:`run_stage`: read input shard ``name``, apply ``process``, commit the result
    with ``fields`` (revisions, decided by the caller) added to its counts; returns the items read.

    Doing it twice writes the same shard twice (what a retried Ray task does)."""
    start = time.perf_counter()
    table = source.read(name, columns=input_columns)
    output = process(name, table)
    counts = output.counts(time.perf_counter() - start)
    counts.update(fields)
    target.commit(name, output.table, output.rejects, counts)
    return table.num_rows


@contextmanager
def _opened(process: Any, engine: Engine | None) -> Iterator[Runner]:
    if isinstance(process, Runner):
        yield process
        return
    job = process if isinstance(process, ShardJob) else ShardJob.given(process)
    with (engine or LocalEngine()).open(job) as runner:
        yield runner


def _absolute(store: StageStore) -> StageStore:
    """``store`` with an absolute path (a Ray worker may run in another folder)."""
    return StageStore(store.root.parent.resolve(), store.stage)


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
    process: Callable[[str, pa.Table], ShardOutput] | ShardJob | Runner,
    reasons: tuple[str, ...],
    *,
    id_column: str,
    selection: ShardSelection = ShardSelection(),
    progress: bool = True,
    unit: str = "item",
    engine: Engine | None = None,
) -> dict[str, Any]:
    """Process again the items of done ``target`` shards that were rejected for one of ``reasons``
    (transient failures: ``caption_error``, ``detector_error``, ``pose_error``) and merge the results.

    The merged shard keeps the input order, so a shard whose failures succeed on retry equals the shard
    an uninterrupted, failure-free run writes. Idempotent and safe to kill: rows of the retried ids are
    dropped from the shard before the new ones are added, and the marker is rewritten last.
    ``process`` and ``engine`` are as in :func:`run_stage`.
    """
    source_at, target_at = _absolute(source), _absolute(target)
    tasks, total = [], 0
    for name in target.done_names():
        if selection.takes(name):
            ids = {r["id"] for r in target.rejections(name) if r["reason"] in reasons}
            if ids:
                marker = target.marker(name)
                tasks.append(partial(retry_shard, source_at, target_at, name, ids, id_column, marker))
                total += len(ids)
    bar = tqdm(total=total, desc=f"{target.stage} retry", unit=unit, disable=not progress, dynamic_ncols=True)
    try:
        if tasks:
            with _opened(process, engine) as runner:
                for count in runner.run(tasks):
                    bar.update(count)
    finally:
        bar.close()
    manifest = target.write_manifest()
    manifest["retried_now"] = total
    return manifest


def retry_shard(
    source: StageStore,
    target: StageStore,
    name: str,
    ids: set[str],
    id_column: str,
    marker: Mapping[str, Any],
    process: Callable[[str, pa.Table], ShardOutput],
) -> int:
    """One shard of :func:`retry_rejected`: process the items ``ids`` of input shard ``name`` again and
    merge them into the done target shard, whose marker was ``marker`` before; returns ``len(ids)``.

    Doing it twice gives the same shard and marker (what a retried Ray task does): the rows and
    rejections of ``ids`` are replaced, and the new marker is computed from ``marker``."""
    start = time.perf_counter()
    table = source.read(name)
    order = {value: i for i, value in reversed(list(enumerate(table.column(id_column).to_pylist())))}
    wanted = pa.array([value in ids for value in table.column(id_column).to_pylist()], pa.bool_())
    output = process(name, table.filter(wanted))
    existing = target.read(name)
    keep = pa.array([value not in ids for value in existing.column(id_column).to_pylist()], pa.bool_())
    merged = pa.concat_tables([existing.filter(keep), output.table.cast(existing.schema)])
    position = [order[value] for value in merged.column(id_column).to_pylist()]
    merged = merged.take(sorted(range(merged.num_rows), key=lambda k: position[k]))
    rejects = [r for r in target.rejections(name) if r["id"] not in ids] + output.rejects
    rejects.sort(key=lambda r: order.get(r["id"], -1))
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
    return len(ids)
