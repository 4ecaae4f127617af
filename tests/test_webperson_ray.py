"""WebPerson on the Ray engine (a local Ray with 2 CPUs): the same shards, rejections, markers,
manifests and exported parquet bytes as the local engine; a Ray worker killed mid-stage (an actor of a
model stage, a task of a CPU stage) is retried and the result is the same; ``--retry-errors`` through
Ray; the command-line options and their errors."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason='Ray is not installed (pip install "gadms[distributed]")')

from dataset_builders.webperson import cli  # noqa: E402
from dataset_builders.webperson.caption_filter import CaptionFilter, make_filter_processor  # noqa: E402
from dataset_builders.webperson.engines import (  # noqa: E402
    Deferred,
    LocalEngine,
    RayEngine,
    RayOptions,
    ShardJob,
    import_ray,
    make_engine,
)
from dataset_builders.webperson.export import export  # noqa: E402
from dataset_builders.webperson.ingest import ingest  # noqa: E402
from dataset_builders.webperson.pipeline import run_caption, run_detect, run_filter, run_pose  # noqa: E402
from dataset_builders.webperson.settings import settings_dict  # noqa: E402
from dataset_builders.webperson.shards import STAGES, StageStore  # noqa: E402
from dataset_builders.webperson.sources import folder_source  # noqa: E402
from dataset_builders.webperson.stage import run_stage  # noqa: E402
from dataset_builders.webperson.template_bank import load_bank  # noqa: E402
from dataset_builders.webperson.testing import (  # noqa: E402
    InstantCaptioner,
    InstantDetector,
    InstantPose,
    write_test_pool,
)
from dataset_builders.webperson.vlm import CaptionResult  # noqa: E402

# the Ray workers unpickle this module's classes by value (it is not importable there)
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


class CrashOnce:
    """Wraps a backend or a shard function; the process calling it for the ``after``-th time dies
    (``os._exit``, as a killed worker) unless ``marker`` exists, which it creates first: so exactly one
    worker dies, once, mid-stage, and its retry goes through."""

    def __init__(self, wrapped, marker: Path, after: int) -> None:
        self.wrapped, self.marker, self.after, self.calls = wrapped, str(marker), after, 0
        self.name = getattr(wrapped, "name", "crash-once")

    def __call__(self, *args):
        self.calls += 1
        if self.calls == self.after:
            try:
                os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                pass
            else:
                os._exit(1)
        return self.wrapped(*args)


class FlakyCaptioner(InstantCaptioner):
    """:class:`InstantCaptioner` (same name, same captions) whose answer fails for every third crop
    length: those crops are rejected with ``caption_error`` until retried with the sound captioner."""

    def caption(self, crops, prompts, seeds):
        good = super().caption(crops, prompts, seeds)
        return [CaptionResult(error="endpoint_timeout: flaky") if len(c) % 3 == 0 else g for c, g in zip(crops, good)]


@pytest.fixture(scope="module")
def local_ray():
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ray_pool")
    write_test_pool(folder, persons=10, distractors=2, broken=True)
    return folder


def _ingest(pool, work):
    ingest(folder_source(pool), work, shard_size=4, workers=1, progress=False)


def _rest(work, engine, *, detector=None, captioner=None, filter_process=None, filter_engine=None):
    """detect, pose, caption, filter on ``engine`` (filter on ``filter_engine`` if given), then export;
    returns the export folder."""
    run_detect(work, detector or InstantDetector(), batch_size=2, progress=False, engine=engine)
    run_pose(work, InstantPose(), batch_size=3, progress=False, engine=engine)
    captioners = [captioner or InstantCaptioner("c1"), InstantCaptioner("c2")]
    run_caption(work, captioners, load_bank(), batch_size=3, progress=False, engine=engine)
    if captioner is not None:  # the flaky one: retry its errors with the sound one, on the same engine
        manifest = run_caption(
            work,
            [InstantCaptioner("c1"), InstantCaptioner("c2")],
            load_bank(),
            batch_size=3,
            progress=False,
            engine=engine,
            retry_errors=True,
        )
        assert manifest["retried_now"] > 0
    if filter_engine is not None:
        engine.release_actors()  # they hold both CPUs: the filter tasks would wait for them
        engine = filter_engine
    if filter_process is None:
        run_filter(work, progress=False, engine=engine)
    else:
        run_stage(
            StageStore(work, "caption"),
            StageStore(work, "filter"),
            ShardJob.given(filter_process),
            progress=False,
            unit="crop",
            settings=settings_dict(CaptionFilter().rules),
            engine=engine,
        )
    out = work.parent / "out"
    export(work, out)
    return out


def _marker(store: StageStore, name: str) -> dict:
    marker = store.marker(name)
    for volatile in ("seconds", "finished"):
        marker.pop(volatile, None)
    return marker


def assert_same_result(work: Path, out: Path, ref_work: Path, ref_out: Path, *, retried: bool = False) -> None:
    """Every stage: the same done shards, kept rows, rejections, markers (less times) and manifest;
    the same exported parquet bytes. ``retried``: the caption markers also count retried items."""
    for stage in STAGES:
        store, ref = StageStore(work, stage), StageStore(ref_work, stage)
        assert store.done_names() == ref.done_names(), stage
        for name in ref.done_names():
            assert store.read(name).equals(ref.read(name)), (stage, name)
            assert store.rejections(name) == ref.rejections(name), (stage, name)
            if not retried or stage == "ingest" or stage == "detect" or stage == "pose":
                assert _marker(store, name) == _marker(ref, name), (stage, name)
        manifest = json.loads((store.root / "manifest.json").read_text())
        ref_manifest = json.loads((ref.root / "manifest.json").read_text())
        assert manifest == ref_manifest, stage
    files = sorted(p.relative_to(ref_out) for p in ref_out.rglob("*.parquet"))
    assert files and files == sorted(p.relative_to(out) for p in out.rglob("*.parquet"))
    for path in files:
        assert (out / path).read_bytes() == (ref_out / path).read_bytes(), path


@pytest.fixture(scope="module")
def reference(pool, tmp_path_factory):
    work = tmp_path_factory.mktemp("ray_reference") / "work"
    _ingest(pool, work)
    out = _rest(work, LocalEngine())
    totals = StageStore(work, "filter").totals()
    assert totals["kept"] > 0 and len(StageStore(work, "detect").done_names()) >= 4
    return work, out


def test_ray_engine_equals_local_engine(local_ray, pool, reference, tmp_path):
    work = tmp_path / "work"
    _ingest(pool, work)
    with RayEngine(RayOptions(actors=2)) as engine:
        # the detector is made in the actors; its name comes back from there into the settings
        out = _rest(work, engine, detector=Deferred(InstantDetector))
        assert len(engine._actors) == 2  # one pool, kept across the stages (filter ran on it too)
    assert ray.is_initialized()  # an engine that found Ray running leaves it running
    assert_same_result(work, out, *reference)
    # each stage's status counts: kept ids and rejection counts
    for stage in STAGES:
        assert StageStore(work, stage).totals() == StageStore(reference[0], stage).totals()


def test_ray_worker_killed_mid_stage_then_same_result(local_ray, pool, reference, tmp_path):
    work = tmp_path / "work"
    _ingest(pool, work)
    actor_death, task_death = tmp_path / "actor_died", tmp_path / "task_died"
    with RayEngine(RayOptions(actors=2, max_retries=2)) as engine, RayEngine() as cpu_engine:
        out = _rest(
            work,
            engine,
            # the 3rd batch of 2 images an actor sees kills it: mid-shard, after shards were committed
            detector=CrashOnce(InstantDetector(), actor_death, after=3),
            # every third crop fails at first: caption_error, then --retry-errors through the actors
            captioner=FlakyCaptioner("c1"),
            # the first shard a filter task takes kills its worker
            filter_process=CrashOnce(make_filter_processor(CaptionFilter()), task_death, after=1),
            filter_engine=cpu_engine,  # no actors: the filter runs as Ray tasks
        )
        assert not cpu_engine._actors
    assert actor_death.is_file() and task_death.is_file()  # both workers did die
    assert_same_result(work, out, *reference, retried=True)
    caption = StageStore(work, "caption")
    assert sum(caption.marker(n).get("retried", 0) for n in caption.done_names()) > 0


def test_local_engine_runs_deferred_backends_and_shipped_jobs(pool, reference, tmp_path):
    work = tmp_path / "work"
    _ingest(pool, work)
    out = _rest(work, LocalEngine(), detector=Deferred(InstantDetector))
    assert_same_result(work, out, *reference)


def test_cli_engine_options(local_ray, reference, tmp_path, capsys):
    assert cli.main(["filter", "--work", str(tmp_path), "--ray-num-gpus", "1"]) == 2
    assert "--ray-num-gpus needs --engine ray" in capsys.readouterr().err
    # no GPU in this Ray: refused before any shard runs
    shutil.copytree(reference[0] / "caption", tmp_path / "caption")
    assert cli.main(["filter", "--work", str(tmp_path), "--engine", "ray", "--ray-num-gpus", "1"]) == 2
    assert "--ray-num-gpus 1.0: the Ray cluster has no GPU" in capsys.readouterr().err
    assert not StageStore(tmp_path, "filter").done_names()
    assert cli.main(["detect", "--work", str(tmp_path), "--engine", "ray", "--detector", "foo=bar"]) == 2
    assert "--detector: unknown backend 'foo'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["filter", "--work", str(tmp_path), "--engine", "ray", "--ray-num-cpus", "-1"])
    assert isinstance(make_engine("local"), LocalEngine)
    with pytest.raises(ValueError, match="--engine: unknown engine 'spark'"):
        make_engine("spark")


def test_cli_filter_on_ray_equals_local(local_ray, reference, tmp_path, capsys):
    ref_work = reference[0]
    work = tmp_path / "work"
    shutil.copytree(ref_work / "caption", work / "caption")
    assert cli.main(["filter", "--work", str(work), "--engine", "ray", "--no-progress"]) == 0
    assert "== filter:" in capsys.readouterr().out
    assert ray.is_initialized()  # the command found Ray running: it leaves it so
    store, ref = StageStore(work, "filter"), StageStore(ref_work, "filter")
    assert store.done_names() == ref.done_names()
    for name in ref.done_names():
        assert store.read(name).equals(ref.read(name)) and store.rejections(name) == ref.rejections(name)
    assert (store.root / "manifest.json").read_bytes() == (ref.root / "manifest.json").read_bytes()


def test_ray_errors_of_a_stage_come_back_as_they_are(local_ray, tmp_path):
    work = tmp_path / "work"
    (work / "caption").mkdir(parents=True)  # no done input shards: nothing to do, nothing fails
    with RayEngine(RayOptions()) as engine:
        manifest = run_filter(work, progress=False, engine=engine)
        assert manifest["processed_now"] == 0

        def broken_backend():
            raise ValueError("--detector: the model folder is empty")

        with pytest.raises(ValueError, match="the model folder is empty"):
            run_detect(work, Deferred(broken_backend), progress=False, engine=engine)


def test_missing_ray_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ImportError, match=r'pip install "gadms\[distributed\]"'):
        import_ray()
    with pytest.raises(ImportError, match="gadms"):
        make_engine("ray")
