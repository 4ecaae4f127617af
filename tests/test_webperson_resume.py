"""WebPerson: stages resume after a kill (a killed subprocess, an exception injected after N items, a
crash between a shard and its marker) with the same output as an uninterrupted run; ``--shard i/n``
workers together give the single run's output; a resumed stage refuses changed settings or sources."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow as pa
import pytest
from PIL import Image

from dataset_builders.webperson import shards as shards_module
from dataset_builders.webperson.export import export
from dataset_builders.webperson.images import encode_jpeg
from dataset_builders.webperson.ingest import ingest
from dataset_builders.webperson.pipeline import run_caption, run_detect, run_filter, run_pose
from dataset_builders.webperson.shards import ShardSelection, StageStore
from dataset_builders.webperson.sources import folder_source
from dataset_builders.webperson.template_bank import load_bank
from dataset_builders.webperson.testing import InstantCaptioner, InstantDetector, InstantPose

REPO = Path(__file__).resolve().parents[1]


class Killed(BaseException):
    """Stands for SIGKILL: not an ``Exception``, so no stage code may swallow it."""


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    folder = tmp_path_factory.mktemp("resume_pool")
    for k in range(23):
        image = Image.effect_noise((180 + 7 * k, 360), 20 + k).convert("RGB")
        (folder / f"img_{k:03d}.jpg").write_bytes(encode_jpeg(image, 85))
    (folder / "zero.jpg").write_bytes(b"")
    return folder


def stage_output(work, stage):
    store = StageStore(work, stage)
    names = store.done_names()
    tables = [store.read(n) for n in names]
    rejects = [r for n in names for r in store.rejections(n)]
    return names, pa.concat_tables(tables) if tables else None, rejects


def full_run(pool, work, captioner=None, detector=None, selection=ShardSelection()):
    ingest(folder_source(pool), work, shard_size=4, progress=False, selection=selection)
    run_detect(work, detector or InstantDetector(), progress=False, selection=selection)
    run_pose(work, InstantPose(), progress=False, selection=selection)
    run_caption(
        work,
        [captioner or InstantCaptioner("c1"), InstantCaptioner("c2")],
        load_bank(),
        batch_size=3,
        progress=False,
        selection=selection,
    )
    run_filter(work, progress=False, selection=selection)


@pytest.fixture(scope="module")
def reference(pool, tmp_path_factory):
    work = tmp_path_factory.mktemp("reference") / "work"
    full_run(pool, work)
    return work


def assert_same(work, reference, stages=("ingest", "detect", "pose", "caption", "filter")):
    for stage in stages:
        names, table, rejects = stage_output(work, stage)
        ref_names, ref_table, ref_rejects = stage_output(reference, stage)
        assert names == ref_names, stage
        assert table.equals(ref_table), stage
        assert rejects == ref_rejects, stage


class CrashingCaptioner(InstantCaptioner):
    def __init__(self, after):
        super().__init__("c1")
        self.left = after

    def caption(self, crops, prompts, seeds):
        if self.left < len(crops):
            raise Killed()
        self.left -= len(crops)
        return super().caption(crops, prompts, seeds)


class CrashingDetector(InstantDetector):
    def __init__(self, after):
        self.left = after

    def __call__(self, images):
        if self.left < len(images):
            raise Killed()
        self.left -= len(images)
        return super().__call__(images)


def test_reference_run_counts(reference):
    assert StageStore(reference, "ingest").totals()["rejected"] == {"empty": 1}
    assert StageStore(reference, "filter").totals()["kept"] == 23
    assert StageStore(reference, "caption").totals()["in"] == 23


@pytest.mark.parametrize("after", [0, 5, 13])
def test_injected_crash_in_caption_stage_then_resume(pool, reference, tmp_path, after):
    work = tmp_path / "work"
    with pytest.raises(Killed):
        full_run(pool, work, captioner=CrashingCaptioner(after))
    done = StageStore(work, "caption").done_names()
    assert len(done) < 6
    full_run(pool, work)
    assert_same(work, reference)


def test_injected_crash_in_detect_stage_then_resume(pool, reference, tmp_path):
    work = tmp_path / "work"
    with pytest.raises(Killed):
        full_run(pool, work, detector=CrashingDetector(9))
    assert StageStore(work, "detect").done_names() == [
        "00000",
        "00001",
    ]  # 4 + 4 images done, crash in the third
    assert not StageStore(work, "pose").root.exists()
    full_run(pool, work)
    assert_same(work, reference)


def test_crash_between_shard_and_marker(pool, reference, tmp_path, monkeypatch):
    work = tmp_path / "work"
    real = shards_module.atomic_write_bytes
    calls = {"markers": 0}

    def flaky(path, data, **kwargs):
        if path.parent.name == "done" and path.parent.parent.name == "pose":
            calls["markers"] += 1
            if calls["markers"] == 3:
                raise Killed()
        return real(path, data, **kwargs)

    monkeypatch.setattr(shards_module, "atomic_write_bytes", flaky)
    with pytest.raises(Killed):
        full_run(pool, work)
    store = StageStore(work, "pose")
    assert store.shard_path("00002").is_file() and not store.is_done("00002")  # shard written, no marker
    monkeypatch.setattr(shards_module, "atomic_write_bytes", real)
    full_run(pool, work)
    assert_same(work, reference)


_SCRIPT = textwrap.dedent("""
    import sys, time
    from dataset_builders.webperson.ingest import ingest
    from dataset_builders.webperson.pipeline import run_detect
    from dataset_builders.webperson.sources import folder_source
    from dataset_builders.webperson.testing import InstantDetector

    class Slow(InstantDetector):
        def __call__(self, images):
            time.sleep(0.15 * len(images))
            return super().__call__(images)

    pool, work = sys.argv[1], sys.argv[2]
    ingest(folder_source(pool), work, shard_size=4, progress=False)
    run_detect(work, Slow(), progress=False, batch_size=2)
""")


def test_killed_subprocess_resumes(pool, reference, tmp_path):
    work = tmp_path / "work"
    script = tmp_path / "run.py"
    script.write_text(_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, str(script), str(pool), str(work)], env=env, cwd=REPO)
    done = work / "detect" / "done"
    deadline = time.time() + 60
    try:
        while time.time() < deadline and len(list(done.glob("*.json")) if done.is_dir() else []) < 2:
            time.sleep(0.05)
            assert process.poll() is None, "the worker finished before it could be killed"
        time.sleep(0.2)  # inside the third shard
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    killed_at = StageStore(work, "detect").done_names()
    assert 2 <= len(killed_at) < 6
    assert (
        subprocess.run([sys.executable, str(script), str(pool), str(work)], env=env, cwd=REPO).returncode == 0
    )
    assert_same(work, reference, stages=("ingest", "detect"))
    assert not list((work / "detect" / "shards").glob(".*tmp*"))


def test_shard_workers_together_equal_one_run(pool, reference, tmp_path):
    work = tmp_path / "work"
    for i in range(3):  # three workers on one shared work directory, one after another
        full_run(pool, work, selection=ShardSelection(i, 3))
    assert_same(work, reference)
    one = export(reference, tmp_path / "one")
    three = export(work, tmp_path / "three")
    assert one["images"] == three["images"] == 23
    assert (tmp_path / "one" / "data" / "train-00000-of-00001.parquet").read_bytes() == (
        tmp_path / "three" / "data" / "train-00000-of-00001.parquet"
    ).read_bytes()


def test_resume_refuses_changed_settings_or_source(pool, tmp_path):
    work = tmp_path / "work"
    ingest(folder_source(pool), work, shard_size=4, progress=False)
    run_detect(work, InstantDetector(), progress=False, max_shards=1)
    from dataset_builders.webperson.detection import DetectionThresholds

    with pytest.raises(ValueError, match="min_score"):
        run_detect(work, InstantDetector(), DetectionThresholds(min_score=0.5), progress=False)
    changed = tmp_path / "changed"
    changed.mkdir()
    for path in sorted(pool.iterdir())[1:]:
        (changed / path.name).write_bytes(path.read_bytes())
    with pytest.raises(ValueError, match="other items for shard 00000"):
        ingest(folder_source(changed), work, shard_size=4, progress=False, settings=None)


class FlakyCaptioner(InstantCaptioner):
    """Raises an ordinary exception (say, out of GPU memory) on its second batch."""

    def __init__(self):
        super().__init__("c1")
        self.calls = 0

    def caption(self, crops, prompts, seeds):
        self.calls += 1
        if self.calls == 2:
            raise RuntimeError("CUDA out of memory")
        return super().caption(crops, prompts, seeds)


def test_captioner_exception_fails_the_batch_not_the_run(pool, reference, tmp_path):
    work = tmp_path / "work"
    full_run(pool, work, captioner=FlakyCaptioner())
    totals = StageStore(work, "caption").totals()
    # caption1's second call is shard 00000's second batch (batch_size=3): its one crop fails
    assert totals["rejected"] == {"caption_error": 1}
    rejects = StageStore(work, "caption").rejections("00000")
    assert all("captioner_exception: RuntimeError: CUDA out of memory" in r["detail"] for r in rejects)
    run_caption(
        work,
        [InstantCaptioner("c1"), InstantCaptioner("c2")],
        load_bank(),
        batch_size=3,
        progress=False,
        retry_errors=True,
    )
    assert StageStore(work, "caption").marker("00000")["revision"] == 1
    assert run_filter(work, progress=False)["processed_now"] == 1  # shard 00000 changed: filtered again
    assert run_filter(work, progress=False)["processed_now"] == 0
    assert_same(work, reference)


class FlakyDetector(InstantDetector):
    """Raises an ordinary exception on its third call."""

    def __init__(self):
        self.calls = 0

    def __call__(self, images):
        self.calls += 1
        if self.calls == 3:
            raise RuntimeError("device lost")
        return super().__call__(images)


def test_detector_retry_propagates_through_later_stages(pool, reference, tmp_path):
    work = tmp_path / "work"
    full_run(pool, work, detector=FlakyDetector())
    assert StageStore(work, "detect").totals()["rejected"]["detector_error"] == 4  # one batch of 4 images
    assert StageStore(work, "filter").totals()["kept"] == 23 - 4
    manifest = run_detect(work, InstantDetector(), progress=False, retry_errors=True)
    assert manifest["retried_now"] == 4 and "detector_error" not in manifest["rejected"]
    full_run(pool, work)  # pose, caption and filter redo the changed shard, and only it
    assert_same(work, reference)
    assert StageStore(work, "filter").marker("00002")["revision"] == 1
    assert StageStore(work, "filter").marker("00001").get("revision", 0) == 0
