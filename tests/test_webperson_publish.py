"""WebPerson publish: everything up to the upload call (the Hub is not reachable in tests), and the
uploaded file set loads with ``datasets.load_dataset``."""

from __future__ import annotations

import shutil

import datasets
import pytest
from huggingface_hub import DatasetCard
from huggingface_hub.utils import filter_repo_objects
from PIL import Image

from dataset_builders.webperson import cli
from dataset_builders.webperson.export import export
from dataset_builders.webperson.images import encode_jpeg
from dataset_builders.webperson.ingest import ingest
from dataset_builders.webperson.pipeline import run_caption, run_detect, run_filter, run_pose
from dataset_builders.webperson.publish import UPLOAD_PATTERNS, publish
from dataset_builders.webperson.sources import folder_source
from dataset_builders.webperson.template_bank import load_bank
from dataset_builders.webperson.testing import InstantCaptioner, InstantDetector, InstantPose


class FakeApi:
    """Records the calls ``publish`` makes on an ``HfApi``."""

    instances: list["FakeApi"] = []

    def __init__(self, token=None):
        self.token = token
        self.calls = []
        FakeApi.instances.append(self)

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))
        return f"https://huggingface.co/datasets/{repo_id}"

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs))
        return "commit-info"

    def upload_large_folder(self, **kwargs):
        self.calls.append(("upload_large_folder", kwargs))
        return None


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("publish")
    pool = root / "pool"
    pool.mkdir()
    for k in range(7):
        (pool / f"{k}.jpg").write_bytes(
            encode_jpeg(Image.effect_noise((200, 360), 25 + k).convert("RGB"), 85)
        )
    work = root / "work"
    ingest(folder_source(pool), work, shard_size=3, progress=False)
    run_detect(work, InstantDetector(), progress=False)
    run_pose(work, InstantPose(), progress=False)
    run_caption(work, [InstantCaptioner("a"), InstantCaptioner("b")], load_bank(), progress=False)
    run_filter(work, progress=False)
    export(work, root / "out", license="cc-by-4.0", shard_size=4)
    return root / "out"


def uploaded_files(folder, patterns):
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    return list(filter_repo_objects(files, allow_patterns=patterns))


def test_publish_creates_a_dataset_repo_and_uploads_the_export(exported):
    api = FakeApi()
    assert publish(exported, "my-org/webperson", private=True, api=api) == "commit-info"
    (create, repo_id, create_kwargs), (upload, upload_kwargs) = api.calls
    assert create == "create_repo" and repo_id == "my-org/webperson"
    assert create_kwargs == {"repo_type": "dataset", "private": True, "exist_ok": True}
    assert upload == "upload_folder"
    assert upload_kwargs["repo_id"] == "my-org/webperson" and upload_kwargs["repo_type"] == "dataset"
    assert upload_kwargs["folder_path"] == str(exported)
    assert "2 parquet shards" in upload_kwargs["commit_message"]
    files = uploaded_files(exported, upload_kwargs["allow_patterns"])
    assert files == [
        "README.md",
        "assets/caption_lengths.png",
        "assets/samples.png",
        "data/train-00000-of-00002.parquet",
        "data/train-00001-of-00002.parquet",
    ]


def test_the_uploaded_files_load_with_load_dataset(exported, tmp_path):
    repo = tmp_path / "repo"  # what the Hub repository holds after the upload
    for name in uploaded_files(exported, UPLOAD_PATTERNS):
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(exported / name, repo / name)
    ds = datasets.load_dataset(str(repo), split="train")
    assert ds.num_rows == 7 and ds.column_names[:4] == ["image", "image_path", "caption1", "caption2"]
    assert ds[0]["image"].mode == "RGB"
    card = DatasetCard.load(repo / "README.md")  # what the Hub shows
    assert card.data.license == "cc-by-4.0" and card.data.size_categories == ["n<1K"]
    (default,) = card.data.configs
    shards = sorted(repo.glob("data/*.parquet"))
    assert [sorted(repo.glob(f["path"])) for f in default["data_files"]] == [shards]
    assert card.data.dataset_info["splits"][0]["num_examples"] == 7


def test_publish_large_and_errors(exported, tmp_path):
    api = FakeApi()
    publish(exported, "org/name", api=api, large=True)
    assert api.calls[1][0] == "upload_large_folder" and api.calls[1][1]["allow_patterns"] == UPLOAD_PATTERNS
    for bad in ("name", "org/", "a/b/c"):
        with pytest.raises(ValueError, match="ORG/NAME"):
            publish(exported, bad, api=FakeApi())
    (tmp_path / "README.md").write_text("not an export")
    with pytest.raises(FileNotFoundError, match="not a WebPerson export"):
        publish(tmp_path, "org/name", api=FakeApi())


def test_publish_cli_uses_hfapi_with_the_token(exported, monkeypatch, capsys):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    FakeApi.instances.clear()
    assert cli.main(["publish", "--folder", str(exported), "--repo", "org/webperson"]) == 0
    (api,) = FakeApi.instances
    assert api.token == "hf_test_token"
    assert [c[0] for c in api.calls] == ["create_repo", "upload_folder"]
    assert "huggingface.co/datasets/org/webperson" in capsys.readouterr().out
    assert cli.main(["publish", "--folder", str(exported.parent / "work"), "--repo", "org/x"]) == 2
    assert "README.md is missing" in capsys.readouterr().err
