"""WebPerson end to end: the real classes of each default backend (transformers RT-DETR, ViTPose,
a LLaVA image-text-to-text model, a CLIP text tower), tiny and random, saved to folders and loaded by
the command line through the Auto classes, run on generated images (synthetic persons on backgrounds,
distractors, broken files) into a data set that ``datasets.load_dataset(folder)`` reads."""

from __future__ import annotations

import io
import json
import tarfile

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from huggingface_hub import DatasetCard
from huggingface_hub.repocard import metadata_load
from PIL import Image

from dataset_builders.hub_folder import size_category
from dataset_builders.webperson import cli
from dataset_builders.webperson.detection import Detection, DetectionThresholds
from dataset_builders.webperson.images import ImageLimits
from dataset_builders.webperson.ingest import ingest
from dataset_builders.webperson.pipeline import run_detect
from dataset_builders.webperson.shards import StageStore
from dataset_builders.webperson.sources import dataset_source, folder_source, parquet_source, tar_source
from dataset_builders.webperson.template_bank import load_bank
from dataset_builders.webperson.testing import (
    CAPTION_WORDS,
    tiny_clip_text,
    tiny_detector,
    tiny_pose,
    tiny_vlm,
    write_test_pool,
)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Folders holding the tiny random models with their processors (as ``from_pretrained`` reads them)."""
    root = tmp_path_factory.mktemp("tiny_models")
    out = {}
    for name, (model, processor) in {
        "detector": tiny_detector(),
        "pose": tiny_pose(),
        "vlm1": tiny_vlm(0),
        "vlm2": tiny_vlm(1),
    }.items():
        model.save_pretrained(root / name)
        processor.save_pretrained(root / name)
        out[name] = root / name
    words = sorted(
        {w.strip(".,;").lower() for t in load_bank().templates for w in t.text.split()} | set(CAPTION_WORDS)
    )
    model, tokenizer = tiny_clip_text(words)
    model.save_pretrained(root / "clip")
    tokenizer.save_pretrained(root / "clip")
    out["clip"] = root / "clip"
    return out


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pool")
    return folder, write_test_pool(folder, persons=8, distractors=3)


def test_cli_end_to_end_with_real_model_classes(tmp_path, models, pool, capsys):
    folder, info = pool
    work, out = tmp_path / "work", tmp_path / "webperson"
    common = ["--work", str(work), "--no-progress"]
    assert (
        cli.main(
            [
                "ingest",
                *common,
                "--source",
                "folder",
                "--input",
                str(folder),
                "--shard-size",
                "6",
                "--max-pixels",
                "5000000",
                "--workers",
                "2",
            ]
        )
        == 0
    )
    ingest_totals = StageStore(work, "ingest").totals()
    assert ingest_totals["rejected"] == info["expected"]
    assert ingest_totals["kept"] == 8 + 3 + 2 + 1  # persons, distractors, CMYK and RGBA copies, truncated
    assert ingest_totals["extra"] == {"converted_CMYK": 1, "converted_RGBA": 1}
    # random tiny models find no real person: permissive thresholds keep their boxes (at most 2 per image)
    assert (
        cli.main(
            [
                "detect",
                *common,
                "--detector",
                f"transformers={models['detector']},batch_size=4",
                "--min-short-side",
                "1",
                "--min-aspect",
                "0.01",
                "--max-aspect",
                "100",
                "--min-score",
                "0",
                "--max-per-image",
                "2",
            ]
        )
        == 0
    )
    assert (
        cli.main(["pose", *common, "--pose-model", f"transformers={models['pose']}", "--visibility", "0"])
        == 0
    )
    assert (
        cli.main(
            [
                "caption",
                *common,
                "--captioner",
                f"transformers={models['vlm1']},max_new_tokens=12,batch_size=4",
                "--captioner",
                f"transformers={models['vlm2']},max_new_tokens=12,batch_size=4",
            ]
        )
        == 0
    )
    assert cli.main(["filter", *common, "--min-words", "3"]) == 0
    assert (
        cli.main(
            ["export", "--work", str(work), "--out", str(out), "--license", "cc-by-4.0", "--shard-size", "10"]
        )
        == 0
    )
    printed = capsys.readouterr().out
    for stage in ("ingest", "detect", "pose", "caption", "filter"):
        assert f"== {stage}:" in printed
    assert "rejected: truncated" in printed and "note: converted_CMYK" in printed

    detect = StageStore(work, "detect").totals()
    assert detect["in"] == 14 and 13 <= detect["kept"] <= 26
    assert detect["rejected"]["truncated"] == info["expected_detect"]["truncated"] == 1
    kept = StageStore(work, "filter").totals()["kept"]
    assert kept > 0
    ds = datasets.load_dataset(str(out), split="train")
    assert ds.num_rows == kept
    assert ds.column_names[:4] == ["image", "image_path", "caption1", "caption2"]
    sizes = {
        r["source_id"]: (r["width"], r["height"])
        for n in StageStore(work, "ingest").done_names()
        for r in StageStore(work, "ingest").read(n, columns=["source_id", "width", "height"]).to_pylist()
    }
    bank_ids = {t.id for t in load_bank().templates}
    poses = {
        r["crop_id"]: r["keypoints"]
        for n in StageStore(work, "pose").done_names()
        for r in StageStore(work, "pose").read(n, columns=["crop_id", "keypoints"]).to_pylist()
    }
    for row in ds:
        x0, y0, x1, y1 = row["box"]
        assert row["image"].size == (x1 - x0, y1 - y0)
        width, height = sizes[row["source_id"]]
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        visible = sum(score >= 0.0 for _, _, score in poses[row["crop_id"]])  # --visibility 0
        assert row["num_keypoints"] == visible >= 8
        assert row["template1_id"] in bank_ids and row["template2_id"] in bank_ids
        assert row["captioner1"].endswith("vlm1") and row["captioner2"].endswith("vlm2")
        assert len(row["caption1"].split()) >= 3 and row["caption1"] != row["caption2"]
        assert row["image_path"] == f"crops/{row['source_id'][:2]}/{row['crop_id']}.jpg"
    assert len(list((out / "data").glob("train-*.parquet"))) == -(-kept // 10)
    card = (out / "README.md").read_text()
    assert "license: cc-by-4.0" in card and "path: data/train-*.parquet" in card
    assert f"| images (person crops) | {kept:,} |" in card and f"| captions | {2 * kept:,} |" in card
    assert "| ingest | 19 | 14 |" in card and "| detect | 14 |" in card and "truncated: 1" in card
    parsed, meta = DatasetCard.load(out / "README.md"), metadata_load(out / "README.md")
    assert meta == parsed.data.to_dict() and parsed.data.license == "cc-by-4.0"
    assert parsed.data.size_categories == [size_category(kept)] == ["n<1K"]
    assert parsed.data.task_categories == ["text-to-image", "image-to-text"]
    assert "webperson" in parsed.data.tags
    (files,) = [config["data_files"] for config in meta["configs"] if config["config_name"] == "default"]
    assert files == [{"split": "train", "path": "data/train-*.parquet"}]
    assert sorted(out.glob(files[0]["path"])) == sorted((out / "data").glob("*.parquet")) != []
    assert meta["dataset_info"]["splits"] == [
        {"name": "train", "num_bytes": sum(f.stat().st_size for f in (out / "data").glob("*.parquet")),
         "num_examples": kept}
    ]
    assert parsed.text.startswith(f"\n# {parsed.data.pretty_name}\n") and "## Settings" in parsed.text
    for figure in ("samples.png", "caption_lengths.png"):
        assert Image.open(out / "assets" / figure).size[0] > 100
    # a rerun of every stage does nothing and changes nothing
    before = pq.read_table(out / "data" / "train-00000-of-{:05d}.parquet".format(-(-kept // 10)))
    assert (
        cli.main(
            [
                "detect",
                *common,
                "--detector",
                f"transformers={models['detector']}",
                "--min-short-side",
                "1",
                "--min-aspect",
                "0.01",
                "--max-aspect",
                "100",
                "--min-score",
                "0",
                "--max-per-image",
                "2",
            ]
        )
        == 0
    )
    assert "(0 now)" in capsys.readouterr().out
    assert (
        cli.main(
            [
                "export",
                "--work",
                str(work),
                "--out",
                str(out),
                "--license",
                "cc-by-4.0",
                "--shard-size",
                "10",
                "--overwrite",
            ]
        )
        == 0
    )
    assert pq.read_table(out / "data" / "train-00000-of-{:05d}.parquet".format(-(-kept // 10))).equals(before)


def test_templates_select_with_a_clip_text_tower(tmp_path, models, capsys):
    texts = [t.text for t in load_bank().templates]
    source = tmp_path / "templates.txt"
    source.write_text("\n".join(texts) + "\n")
    assert (
        cli.main(
            [
                "templates-select",
                "--templates",
                str(source),
                "--embedder",
                f"clip={models['clip']}",
                "--clusters",
                "6",
                "--random-per-cluster",
                "2",
                "--name",
                "mined",
                "--version",
                "1",
                "--out-dir",
                str(tmp_path),
            ]
        )
        == 0
    )
    bank = load_bank(tmp_path / "mined_v1.json")
    assert 6 < len(bank.templates) <= 18 and {t.text for t in bank.templates} <= set(texts)
    assert bank.meta["clusters"] == 6 and bank.meta["candidates"] == len(texts)
    assert "kept" in capsys.readouterr().out


def test_select_templates_nearest_to_centroid():
    from dataset_builders.webperson.template_mining import select_templates

    rng = np.random.default_rng(0)
    centres = np.array([[10.0, 0.0], [0.0, 10.0], [-10.0, -10.0]])
    points = np.concatenate([c + rng.normal(0, 0.5, (8, 2)) for c in centres])
    nearest, labels = select_templates(points, 3, per_cluster_random=0, seed=0)
    groups = [np.flatnonzero(np.asarray(labels) == c) for c in range(3)]
    assert sorted(len(g) for g in groups) == [8, 8, 8]  # the three blobs
    expected = sorted(
        int(g[np.argmin(np.linalg.norm(points[g] - points[g].mean(0), axis=1))]) for g in groups
    )
    assert nearest == expected
    chosen, _ = select_templates(points, 3, per_cluster_random=2, seed=0)
    assert set(nearest) <= set(chosen) and len(chosen) == 9
    assert [sum(labels[i] == c for i in chosen) for c in range(3)] == [3, 3, 3]
    assert select_templates(points, 3, per_cluster_random=2, seed=0)[0] == chosen
    with pytest.raises(ValueError, match="clusters"):
        select_templates(points, 25)


class HandMadeDetector:
    """Per image: a valid box, a small one, a low-score one, a wide one, a car, and one beyond the edge."""

    name = "hand-made"

    def __call__(self, images):
        return [
            [
                Detection((10, 10, 110, 310), 0.95, "person"),
                Detection((200, 10, 250, 110), 0.99, "person"),
                Detection((150, 10, 250, 310), 0.5, "person"),
                Detection((0, 0, 300, 300), 0.9, "person"),
                Detection((10, 10, 110, 310), 0.99, "car"),
                Detection((300, 0, 420, 320), 0.9, "person"),
            ]
            for _ in images
        ]


def test_detection_thresholds_inside_the_stage(tmp_path, pool):
    folder, info = pool
    work = tmp_path / "work"
    ingested = ingest(
        folder_source(folder),
        work,
        shard_size=50,
        limits=ImageLimits(max_pixels=5_000_000),
        verify=True,
        progress=False,
    )  # --verify: every image decoded at ingest
    assert ingested["rejected"] == {**info["expected"], **info["expected_detect"]}
    manifest = run_detect(work, HandMadeDetector(), DetectionThresholds(), progress=False)
    images = manifest["in"]
    assert manifest["kept"] == images * 2  # the valid box, and the edge box clipped to the image
    assert manifest["rejected"] == {
        "small_box": images,
        "low_score": images,
        "bad_aspect": images,
        "not_person": images,
    }
    crops = StageStore(work, "detect").read("00000").to_pylist()
    sizes = dict(
        zip(*StageStore(work, "ingest").read("00000", columns=["source_id", "width"]).to_pydict().values())
    )
    expected = {
        480: {(10, 10, 110, 310), (300, 0, 420, 320)},  # 480 x 320 scenes: edge box 120 x 320
        400: {(10, 10, 110, 300), (300, 0, 400, 300)},
    }  # 400 x 300 distractors: clipped at the bottom
    for width, boxes in expected.items():
        assert {tuple(c["box"]) for c in crops if sizes[c["source_id"]] == width} == boxes
    assert all(Image.open(io.BytesIO(c["crop"])).size == (c["crop_width"], c["crop_height"]) for c in crops)


def _write_tar(path, items):
    with tarfile.open(path, "w") as tar:
        for key, data, meta in items:
            for ext, payload in (("jpg", data), ("json", json.dumps(meta).encode()), ("txt", b"alt text")):
                member = tarfile.TarInfo(f"{key}.{ext}")
                member.size = len(payload)
                tar.addfile(member, io.BytesIO(payload))


def test_every_source_kind_gives_the_same_ids(tmp_path, pool):
    folder, _ = pool
    files = sorted(p for p in folder.glob("scene_*.jpg"))
    data = [p.read_bytes() for p in files]
    urls = [f"https://example.org/{p.name}" for p in files]
    _write_tar(
        tmp_path / "a.tar", [(f"{k:06d}", d, {"url": u}) for k, (d, u) in enumerate(zip(data[:4], urls))]
    )
    _write_tar(
        tmp_path / "b.tar", [(f"{k:06d}", d, {"url": u}) for k, (d, u) in enumerate(zip(data[4:], urls[4:]))]
    )
    (tmp_path / "broken.tar").write_bytes(b"this is not a tar archive at all" * 20)
    table = pa.table({"image": [{"bytes": d, "path": None} for d in data], "url": urls})
    pq.write_table(table, tmp_path / "pool.parquet")
    ds = datasets.Dataset.from_dict(
        {"image": [{"bytes": d, "path": None} for d in data], "url": urls},
        features=datasets.Features({"image": datasets.Image(), "url": datasets.Value("string")}),
    )
    ds.save_to_disk(str(tmp_path / "saved"))
    results = {}
    for kind, items in {
        "folder": folder_source(folder),
        "tar": tar_source([str(tmp_path / "a.tar"), str(tmp_path / "b.tar"), str(tmp_path / "broken.tar")]),
        "parquet": parquet_source([tmp_path / "pool.parquet"]),
        "dataset": dataset_source(str(tmp_path / "saved")),
    }.items():
        work = tmp_path / f"work_{kind}"
        manifest = ingest(items, work, shard_size=5, progress=False, limits=ImageLimits(max_pixels=5_000_000))
        rows = [
            r
            for n in StageStore(work, "ingest").done_names()
            for r in StageStore(work, "ingest").read(n, columns=["source_id", "source_url"]).to_pylist()
        ]
        results[kind] = (manifest, rows)
    scene_ids = {r["source_id"] for r in results["tar"][1]}
    assert len(scene_ids) == len(files)
    assert scene_ids <= {r["source_id"] for r in results["folder"][1]}
    assert (
        scene_ids
        == {r["source_id"] for r in results["parquet"][1]}
        == {r["source_id"] for r in results["dataset"][1]}
    )
    assert results["tar"][0]["rejected"] == {"unreadable": 1}
    for kind in ("tar", "parquet", "dataset"):
        assert sorted(r["source_url"] for r in results[kind][1]) == sorted(urls)


def test_parquet_row_groups_and_shard_workers(tmp_path, pool):
    folder, _ = pool
    data = [p.read_bytes() for p in sorted(folder.glob("scene_*.jpg"))]
    rows = [{"bytes": d, "path": None} for d in data] + [{"bytes": None, "path": str(tmp_path / "gone.jpg")}]
    pq.write_table(
        pa.table({"jpg": rows, "url": [f"u{k}" for k in range(len(rows))]}),
        tmp_path / "p.parquet",
        row_group_size=3,
    )
    single = ingest(
        parquet_source([tmp_path / "p.parquet"], image_column="jpg"),
        tmp_path / "one",
        shard_size=2,
        progress=False,
    )
    assert single["kept"] == len(data) and single["rejected"] == {"unreadable": 1}
    from dataset_builders.webperson.shards import ShardSelection

    for i in range(2):
        ingest(
            parquet_source([tmp_path / "p.parquet"], image_column="jpg"),
            tmp_path / "two",
            shard_size=2,
            progress=False,
            selection=ShardSelection(i, 2),
        )
    one, two = StageStore(tmp_path / "one", "ingest"), StageStore(tmp_path / "two", "ingest")
    assert one.done_names() == two.done_names()
    for name in one.done_names():
        assert one.read(name).equals(two.read(name))
    urls = [
        u
        for n in one.done_names()
        for u in one.read(n, columns=["source_url"]).column("source_url").to_pylist()
    ]
    assert urls == [f"u{k}" for k in range(len(data))]


def test_templates_extract_with_a_transformers_llm(tmp_path, capsys):
    from dataset_builders.webperson.testing import tiny_llm

    model, tokenizer = tiny_llm()
    model.save_pretrained(tmp_path / "llm")
    tokenizer.save_pretrained(tmp_path / "llm")
    from dataset_builders.webperson.backends import make_llm, parse_spec

    generate = make_llm(parse_spec(f"transformers={tmp_path / 'llm'},max_new_tokens=6,batch_size=2", "--llm"))
    answers = generate(["A man in a red shirt.", "A woman in a long blue dress and white shoes.", "A boy."])
    assert len(answers) == 3 and all(isinstance(a, str) for a in answers)
    vocabulary = set(tokenizer.get_vocab())
    assert all(word in vocabulary for a in answers for word in a.split())
    captions = tmp_path / "captions.txt"
    captions.write_text("A man in a red shirt.\nA woman in a blue dress.\n")
    out = tmp_path / "templates.txt"
    llm = f"transformers={tmp_path / 'llm'}"
    assert cli.main(["templates-extract", "--captions", str(captions), "--llm", llm, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    kept = len(out.read_text().splitlines())
    assert printed.startswith(f"{kept} templates from 2 captions")
