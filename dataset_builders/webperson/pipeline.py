"""The stages as functions over a work directory (what the command line calls).

Each ``run_*`` reads the done shards of the stage before it, writes its own (see :mod:`shards`), and
returns the stage manifest (``in``, ``kept``, ``rejected`` by reason, ...). All are idempotent and
resume after a kill; ``selection`` (``--shard i/n``) splits the work across processes or machines.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any, Sequence

from .caption_filter import CaptionFilter, make_filter_processor
from .captioning import make_caption_processor
from .detection import DetectionThresholds, make_detect_processor
from .engines import Engine, LocalEngine, ShardJob
from .images import ImageLimits
from .pose import PoseThresholds, make_pose_processor
from .prompts import PROMPT_VERSION
from .settings import settings_dict
from .shards import STAGES, ShardSelection, StageStore
from .stage import retry_rejected, run_stage
from .template_bank import TemplateBank

__all__ = ["run_caption", "run_detect", "run_filter", "run_pose", "stage_status"]


def _caption_process(*captioners: Any, **options: Any):
    return make_caption_processor(list(captioners), **options)


def run_detect(
    work: str | Path,
    detector: Any,
    thresholds: DetectionThresholds = DetectionThresholds(),
    *,
    selection: ShardSelection = ShardSelection(),
    batch_size: int = 16,
    jpeg_quality: int = 95,
    limits: ImageLimits | None = None,
    progress: bool = True,
    max_shards: int | None = None,
    retry_errors: bool = False,
    engine: Engine | None = None,
) -> dict[str, Any]:
    """Stage 2: person boxes of the ingested images, kept by ``thresholds``, cropped.

    ``retry_errors``: afterwards, run the images of done shards that failed with ``detector_error``
    again. ``detector`` may be a :class:`~.engines.Deferred` (made where the shards run: in each Ray
    actor); ``engine``: where the shards run (the local engine when ``None``; see :mod:`.engines`).
    """
    ingest_settings = StageStore(work, "ingest").settings()
    limit_names = {f.name for f in fields(ImageLimits)}
    limits = limits or ImageLimits(**{k: v for k, v in ingest_settings.items() if k in limit_names})
    job = ShardJob(
        make_detect_processor,
        (detector,),
        {"thresholds": thresholds, "jpeg_quality": jpeg_quality, "limits": limits, "batch_size": batch_size},
        model=True,
    )
    return _run(
        work,
        "ingest",
        "detect",
        job,
        lambda names: {"detector": names[0], **settings_dict(thresholds), "jpeg_quality": jpeg_quality},
        "img",
        "source_id",
        "detector_error",
        selection,
        progress,
        max_shards,
        retry_errors,
        engine,
    )


def run_pose(
    work: str | Path,
    estimator: Any,
    thresholds: PoseThresholds = PoseThresholds(),
    *,
    selection: ShardSelection = ShardSelection(),
    batch_size: int = 32,
    progress: bool = True,
    max_shards: int | None = None,
    retry_errors: bool = False,
    engine: Engine | None = None,
) -> dict[str, Any]:
    """Stage 3: keypoints of each crop; crops failing ``thresholds`` are dropped.

    ``retry_errors``: afterwards, run the crops of done shards that failed with ``pose_error`` again.
    ``estimator`` and ``engine``: as in :func:`run_detect`.
    """
    job = ShardJob(
        make_pose_processor, (estimator,), {"thresholds": thresholds, "batch_size": batch_size}, model=True
    )
    return _run(
        work,
        "detect",
        "pose",
        job,
        lambda names: {"pose_model": names[0], **settings_dict(thresholds)},
        "crop",
        "crop_id",
        "pose_error",
        selection,
        progress,
        max_shards,
        retry_errors,
        engine,
    )


def run_caption(
    work: str | Path,
    captioners: Sequence[Any],
    bank: TemplateBank,
    *,
    seed: int = 0,
    max_words: int = 60,
    batch_size: int = 64,
    from_stage: str = "pose",
    selection: ShardSelection = ShardSelection(),
    progress: bool = True,
    max_shards: int | None = None,
    retry_errors: bool = False,
    engine: Engine | None = None,
) -> dict[str, Any]:
    """Stage 5: two captions per crop (``from_stage="detect"`` captions without the pose check).

    ``retry_errors``: afterwards, caption again the crops of done shards that failed with
    ``caption_error`` (endpoint errors after all retries); templates and seeds are the same as before.
    ``captioners`` may be :class:`~.engines.Deferred` (e.g. a vLLM model made in each Ray actor, on its
    GPU); ``engine``: as in :func:`run_detect`.
    """
    if from_stage not in ("pose", "detect"):
        raise ValueError(f"--from must be pose or detect, got {from_stage!r}")
    if len(captioners) not in (1, 2):
        raise ValueError(f"give one or two captioners, got {len(captioners)}")
    settings = lambda names: {  # noqa: E731
        "captioners": names,
        "template_bank": bank.tag,
        "template_bank_sha256": bank.sha256(),
        "seed": seed,
        "max_words": max_words,
        "prompt_version": PROMPT_VERSION,
        "from_stage": from_stage,
    }
    job = ShardJob(
        _caption_process,
        tuple(captioners),
        {"bank": bank, "seed": seed, "max_words": max_words, "batch_size": batch_size},
        model=True,
    )
    return _run(
        work,
        from_stage,
        "caption",
        job,
        settings,
        "crop",
        "crop_id",
        "caption_error",
        selection,
        progress,
        max_shards,
        retry_errors,
        engine,
    )


def _run(
    work,
    source_stage,
    target_stage,
    job,
    settings,
    unit,
    id_column,
    error_reason,
    selection,
    progress,
    max_shards,
    retry_errors,
    engine,
) -> dict[str, Any]:
    """A model stage: open ``engine`` for ``job`` once (its backends loaded once), record the settings
    (``settings(backend names)``), run the stage, then retry errors if asked."""
    source, target = StageStore(work, source_stage), StageStore(work, target_stage)
    with (engine or LocalEngine()).open(job) as runner:
        manifest = run_stage(
            source,
            target,
            runner,
            selection=selection,
            progress=progress,
            unit=unit,
            settings=settings(runner.names),
            max_shards=max_shards,
        )
        if retry_errors:
            manifest.update(
                retry_rejected(
                    source,
                    target,
                    runner,
                    (error_reason,),
                    id_column=id_column,
                    selection=selection,
                    progress=progress,
                    unit=unit,
                )
            )
    return manifest


def run_filter(
    work: str | Path,
    caption_filter: CaptionFilter | None = None,
    *,
    selection: ShardSelection = ShardSelection(),
    progress: bool = True,
    max_shards: int | None = None,
    engine: Engine | None = None,
) -> dict[str, Any]:
    """Stage 6: rule-based caption filtering; every rejection is recorded with its reason.

    ``engine``: where the shards run (the Ray engine runs them as CPU tasks; see :mod:`.engines`)."""
    caption_filter = caption_filter or CaptionFilter()
    return run_stage(
        StageStore(work, "caption"),
        StageStore(work, "filter"),
        ShardJob(make_filter_processor, (caption_filter,)),
        selection=selection,
        progress=progress,
        unit="crop",
        settings=settings_dict(caption_filter.rules),
        max_shards=max_shards,
        engine=engine,
    )


def stage_status(work: str | Path) -> list[dict[str, Any]]:
    """The totals of every stage that has a folder in ``work``."""
    out = []
    for stage in STAGES:
        store = StageStore(work, stage)
        if store.root.is_dir():
            out.append(store.totals())
    return out
