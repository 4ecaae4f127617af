"""Stage 5, caption: two captions per crop, each from a captioner given the crop, the instruction and
a randomly drawn template (docs/method.md section 9.5).

``caption1`` comes from the first captioner and ``caption2`` from the second; with one captioner,
both are two samplings of it (different templates and seeds). The template and the sampling seed of
caption ``j`` of crop ``c`` are functions of ``(seed, c, j)`` only, so a resumed or re-sharded run
asks the same questions. A crop whose captioner failed (endpoint error after retries) is rejected
with reason ``caption_error`` and the error text (so is a batch whose captioner raised an exception,
e.g. out of GPU memory); ``--retry-errors`` redoes them later.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any, Callable, Sequence

import pyarrow as pa

from .prompts import caption_prompt
from .stage import ShardOutput
from .template_bank import TemplateBank
from .vlm import CaptionResult, Captioner

__all__ = ["CAPTION_FIELDS", "draw_template", "make_caption_processor", "sampling_seed"]

CAPTION_FIELDS = [
    pa.field("caption1", pa.string()),
    pa.field("caption2", pa.string()),
    pa.field("template1_id", pa.string()),
    pa.field("template2_id", pa.string()),
    pa.field("captioner1", pa.string()),
    pa.field("captioner2", pa.string()),
]


def draw_template(bank: TemplateBank, seed: int, crop_id: str, j: int):
    """The template of caption ``j`` (0 or 1) of ``crop_id``."""
    return bank.draw(random.Random(f"webperson-template/{seed}/{crop_id}/{j}"))


def sampling_seed(seed: int, crop_id: str, j: int) -> int:
    """The sampling seed of caption ``j`` of ``crop_id`` (a 31-bit integer)."""
    digest = hashlib.sha256(f"webperson-sample/{seed}/{crop_id}/{j}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def make_caption_processor(
    captioners: Sequence[Captioner],
    bank: TemplateBank,
    *,
    seed: int = 0,
    max_words: int = 60,
    batch_size: int = 64,
) -> Callable[[str, pa.Table], ShardOutput]:
    """The shard function of the caption stage.

    Args:
        captioners: one (two samplings) or two captioners.
        bank: the template bank; ``seed``: template and sampling draws; ``max_words``: the prompt's limit.
        batch_size: crops handed to a captioner at once (the OpenAI backend sends them concurrently).
    """
    if len(captioners) not in (1, 2):
        raise ValueError(f"give one or two captioners, got {len(captioners)}")
    pair = list(captioners) if len(captioners) == 2 else [captioners[0], captioners[0]]

    def process(name: str, table: pa.Table) -> ShardOutput:
        ids = table.column("crop_id").to_pylist()
        crops = table.column("crop").to_pylist()
        columns: dict[str, list[Any]] = {f.name: [None] * len(ids) for f in CAPTION_FIELDS}
        failed: dict[int, str] = {}
        for start in range(0, len(ids), batch_size):
            index = list(range(start, min(len(ids), start + batch_size)))
            for j, captioner in enumerate(pair):
                templates = [draw_template(bank, seed, ids[i], j) for i in index]
                prompts = [caption_prompt(t.text, max_words) for t in templates]
                seeds = [sampling_seed(seed, ids[i], j) for i in index]
                try:
                    results = captioner.caption([crops[i] for i in index], prompts, seeds)
                except Exception as error:  # e.g. out of memory: this batch fails, the run goes on
                    message = f"{type(error).__name__}: {str(error)[:200]}"
                    results = [CaptionResult(error=f"captioner_exception: {message}") for _ in index]
                if len(results) != len(index):
                    raise RuntimeError(
                        f"captioner {captioner.name} returned {len(results)} results for "
                        f"{len(index)} crops (shard {name})"
                    )
                for i, template, result in zip(index, templates, results):
                    if result.error is not None or not result.text:
                        failed.setdefault(i, f"caption{j + 1}: {result.error or 'empty answer'}")
                    columns[f"caption{j + 1}"][i] = result.text
                    columns[f"template{j + 1}_id"][i] = template.id
                    columns[f"captioner{j + 1}"][i] = captioner.name
        keep = [i for i in range(len(ids)) if i not in failed]
        kept = table.take(keep) if keep else table.slice(0, 0)
        for field in CAPTION_FIELDS:
            kept = kept.append_column(field, pa.array([columns[field.name][i] for i in keep], field.type))
        rejects = [{"id": ids[i], "reason": "caption_error", "detail": failed[i]} for i in sorted(failed)]
        return ShardOutput(kept, rejects, len(ids))

    return process
