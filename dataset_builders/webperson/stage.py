"""Running a stage over the done shards of the stage before it, with progress and a summary table."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import pyarrow as pa
from tqdm.auto import tqdm

from .shards import ShardSelection, StageStore

__all__ = ["ShardOutput", "format_summary", "run_stage"]


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

    ``max_shards`` stops after that many shards (for tests and dry runs). Input shards that ``source``
    has not finished yet (another worker still on them) are left for a later run and counted as
    ``pending_input`` in the returned manifest.
    """
    target.create(settings or {})
    names = [n for n in source.done_names() if selection.takes(n) and not target.is_done(n)]
    if max_shards is not None:
        names = names[:max_shards]
    total = sum(source.marker(n).get("kept", 0) for n in names)
    bar = tqdm(total=total, desc=target.stage, unit=unit, disable=not progress, dynamic_ncols=True)
    try:
        for name in names:
            start = time.perf_counter()
            table = source.read(name, columns=input_columns)
            output = process(name, table)
            target.commit(name, output.table, output.rejects, output.counts(time.perf_counter() - start))
            bar.update(table.num_rows)
    finally:
        bar.close()
    manifest = target.write_manifest()
    manifest["processed_now"] = len(names)
    manifest["pending_input"] = _pending(source)
    return manifest


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
    lines = [
        f"== {manifest.get('stage', '?')}: {manifest.get('shards', 0)} shards done"
        f" ({manifest.get('processed_now', 0)} now)"
    ]
    lines += [f"  {label:<{width}}  {n:>10,}" for label, n in rows]
    return "\n".join(lines)
