"""Benchmark loaders on small fixtures written in each official annotation format."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from evaluation import retrieval_metrics
from evaluation.benchmarks import (
    BENCHMARKS,
    BenchmarkFormatError,
    MissingImagesError,
    evaluation_view,
    find_benchmark_root,
    load_benchmark,
    load_retrieval_split,
    read_annotations,
    resolve_benchmark,
)

# ----------------------------------------------------------------------------------------------
# fixture writer (also used by the CLI test)

# person id -> (split, number of images); ids are 1-based as in CUHK-PEDES
LAYOUT = {
    1: ("train", 2), 2: ("train", 1), 3: ("train", 3), 4: ("train", 2), 5: ("train", 2),
    6: ("train", 1), 7: ("train", 2), 8: ("train", 2), 9: ("train", 1), 10: ("train", 2),
    11: ("val", 2), 12: ("val", 1),
    13: ("test", 2), 14: ("test", 3), 15: ("test", 1), 16: ("test", 2),
}  # fmt: skip


def image_colour(person_id: int, k: int) -> tuple[int, int, int]:
    return (person_id * 13 % 256, k * 70 % 256, 200)


def write_benchmark(
    root: Path, name: str, layout: dict = LAYOUT, captions_per_image: int | None = None
) -> list[dict]:
    """Write ``root`` in the official layout of benchmark ``name``: annotation JSON + tiny images.

    ICFG-PEDES has one caption per image and no val split (val identities become train ones);
    the others have two captions per image. Returns the records written.
    """
    key, spec = resolve_benchmark(name)
    records = []
    for person_id, (split, n_images) in layout.items():
        if key == "icfg-pedes" and split == "val":
            split = "train"
        for k in range(n_images):
            if key == "ufine6926":
                rel = f"images/{person_id}_{k}.jpg"
            else:
                rel = f"{split}_query/p{person_id}/p{person_id}_s{k}.jpg"
            n_captions = captions_per_image or (1 if key == "icfg-pedes" else 2)
            captions = [
                f"person {person_id} image {k} caption {c} wearing a red coat" for c in range(n_captions)
            ]
            record = {"split": split, "id": person_id, spec.path_key: rel, "captions": captions}
            if key in ("cuhk-pedes", "icfg-pedes"):
                record["processed_tokens"] = [c.split() for c in captions]
            records.append(record)
            file = root / spec.image_subdir / rel
            file.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (4 + k, 8), image_colour(person_id, k)).save(file)
    (root / spec.annotation_file).write_text(json.dumps(records), encoding="utf-8")
    return records


# ----------------------------------------------------------------------------------------------
# loading


@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_samples_one_row_per_caption(tmp_path, name):
    records = write_benchmark(tmp_path, name)
    ds = load_benchmark(name, tmp_path)
    expected_splits = ["train", "validation", "test"]
    assert list(ds) == expected_splits
    for split in expected_splits:
        split_records = [r for r in records if {"val": "validation"}.get(r["split"], r["split"]) == split]
        if name == "icfg-pedes":  # carved from train: compare on the union
            continue
        assert ds[split].num_rows == sum(len(r["captions"]) for r in split_records)
        assert list(ds[split]["caption"]) == [c for r in split_records for c in r["captions"]]
        assert list(ds[split]["person_id"]) == [r["id"] for r in split_records for _ in r["captions"]]
    assert set(ds["train"].column_names) == {
        "image", "image_path", "caption", "person_id", "label", "image_index", "caption_index"
    }  # fmt: skip
    total = sum(d.num_rows for d in ds.values())
    assert total == sum(len(r["captions"]) for r in records)
    # the image column decodes to the right picture
    row = ds["test"][0]
    person_id, path = row["person_id"], row["image_path"]
    k = int(Path(path).stem.split("_")[-1].lstrip("s"))
    assert row["image"].size == (4 + k, 8)
    assert row["image"].convert("RGB").getpixel((0, 0)) == pytest.approx(image_colour(person_id, k), abs=8)


@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_labels_are_contiguous_per_split(tmp_path, name):
    write_benchmark(tmp_path, name)
    ds = load_benchmark(name, tmp_path)
    for split in ds.values():
        ids, labels = list(split["person_id"]), list(split["label"])
        order = sorted(set(ids))
        assert labels == [order.index(i) for i in ids]


@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_evaluation_view(tmp_path, name):
    records = write_benchmark(tmp_path, name)
    view = load_retrieval_split(name, tmp_path, "test")
    test_records = [r for r in records if r["split"] == "test"]
    path_key = BENCHMARKS[resolve_benchmark(name)[0]].path_key
    assert view.gallery.num_rows == len(test_records)
    assert list(view.gallery["image_path"]) == [r[path_key] for r in test_records]
    assert view.gallery_ids == [r["id"] for r in test_records]
    assert view.queries.num_rows == sum(len(r["captions"]) for r in test_records)
    assert view.captions == [c for r in test_records for c in r["captions"]]
    for q in view.queries:  # every query points at its own image
        assert view.gallery_ids[q["image_index"]] == q["person_id"]
        assert test_records[q["image_index"]]["captions"][q["caption_index"]] == q["caption"]
    files = view.image_files()
    assert all(Path(f).is_file() for f in files) and len(files) == len(test_records)
    # the view is directly usable by the metric (every query has a positive)
    gen = torch.Generator().manual_seed(0)
    got = retrieval_metrics(
        torch.randn(view.queries.num_rows, 8, generator=gen),
        torch.randn(view.gallery.num_rows, 8, generator=gen),
        view.query_ids,
        view.gallery_ids,
    )
    assert 0 <= got["mAP"] <= 100


def test_val_split_is_named_validation_and_selectable(tmp_path):
    write_benchmark(tmp_path, "rstpreid")
    for spelling in ("val", "validation", "VAL"):
        ds = load_benchmark("RSTPReid", tmp_path, splits=[spelling])
        assert list(ds) == ["validation"]
        assert sorted(set(ds["validation"]["person_id"])) == [11, 12]
    with pytest.raises(ValueError, match="unknown split"):
        load_benchmark("rstpreid", tmp_path, splits=["dev"])


def test_benchmark_names_and_parent_folder(tmp_path):
    write_benchmark(tmp_path / "CUHK-PEDES", "cuhk-pedes")
    assert find_benchmark_root("CUHK_PEDES", tmp_path) == tmp_path / "CUHK-PEDES"
    assert find_benchmark_root("cuhk", tmp_path / "CUHK-PEDES") == tmp_path / "CUHK-PEDES"
    with pytest.raises(FileNotFoundError, match="ICFG-PEDES.json"):
        find_benchmark_root("icfg-pedes", tmp_path)
    with pytest.raises(ValueError, match="unknown benchmark"):
        resolve_benchmark("market1501")


def test_ufine_image_dir_default_and_override(tmp_path):
    write_benchmark(tmp_path, "ufine6926")
    ds = load_benchmark("ufine6926", tmp_path, splits=["test"])
    assert ds["test"][0]["image_path"].startswith("images/")
    # the same annotations with images kept elsewhere
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    (tmp_path / "images").rename(moved / "images")
    with pytest.raises(MissingImagesError):
        load_benchmark("ufine6926", tmp_path, splits=["test"])
    ds = load_benchmark("ufine6926", tmp_path, splits=["test"], image_dir=moved)
    assert ds["test"][0]["image"].size[1] == 8


# ----------------------------------------------------------------------------------------------
# ICFG-PEDES validation split


def expected_icfg_validation(train_ids, fraction=0.1, seed=0):
    ranked = sorted(train_ids, key=lambda pid: hashlib.sha256(f"{seed}:{pid}".encode()).hexdigest())
    return set(ranked[: max(1, round(fraction * len(train_ids)))])


def test_icfg_validation_carved_from_train_identities(tmp_path):
    records = write_benchmark(tmp_path, "icfg-pedes")
    assert {r["split"] for r in records} == {"train", "test"}
    train_ids = sorted({r["id"] for r in records if r["split"] == "train"})  # 12 ids
    ds = load_benchmark("icfg-pedes", tmp_path)
    val_ids = set(ds["validation"]["person_id"])
    assert val_ids == expected_icfg_validation(train_ids)  # the documented rule: 1 id of 12
    assert not val_ids & set(ds["train"]["person_id"])
    assert set(ds["train"]["person_id"]) | val_ids == set(train_ids)
    # every image of a chosen identity moved, none was lost
    n_images = {pid: n for pid, (_, n) in LAYOUT.items()}
    assert ds["validation"].num_rows == sum(n_images[p] for p in val_ids)
    assert ds["train"].num_rows + ds["validation"].num_rows == sum(n_images[p] for p in train_ids)
    # deterministic, seed-dependent, and can be switched off
    assert list(load_benchmark("icfg-pedes", tmp_path)["validation"]["image_path"]) == list(
        ds["validation"]["image_path"]
    )
    bigger = load_benchmark("icfg-pedes", tmp_path, validation_fraction=0.5, validation_seed=3)
    assert set(bigger["validation"]["person_id"]) == expected_icfg_validation(train_ids, 0.5, 3)
    assert list(load_benchmark("icfg-pedes", tmp_path, validation_fraction=None)) == ["train", "test"]


def test_icfg_validation_size_on_official_identity_count(tmp_path):
    layout = {pid: ("train", 1) for pid in range(1, 3103)}  # ICFG-PEDES: 3,102 training identities
    layout[5000] = ("test", 1)
    write_benchmark(tmp_path, "icfg-pedes", layout)
    ds = load_benchmark("icfg-pedes", tmp_path, splits=["validation"], check_images=False)
    assert ds["validation"].num_rows == 310


# ----------------------------------------------------------------------------------------------
# errors


def test_malformed_json_names_the_file(tmp_path):
    write_benchmark(tmp_path, "cuhk-pedes")
    path = tmp_path / "reid_raw.json"
    path.write_text(path.read_text()[:-40], encoding="utf-8")
    with pytest.raises(BenchmarkFormatError, match=r"reid_raw\.json: malformed JSON at line 1"):
        load_benchmark("cuhk-pedes", tmp_path)


@pytest.mark.parametrize(
    "name, key",
    [("cuhk-pedes", "captions"), ("rstpreid", "img_path"), ("icfg-pedes", "id"), ("ufine6926", "split")],
)
def test_missing_key_names_file_and_record(tmp_path, name, key):
    records = write_benchmark(tmp_path, name)
    del records[3][key]
    spec = BENCHMARKS[name]
    (tmp_path / spec.annotation_file).write_text(json.dumps(records))
    with pytest.raises(BenchmarkFormatError) as err:
        load_benchmark(name, tmp_path)
    message = str(err.value)
    assert str(tmp_path / spec.annotation_file) in message
    assert "record 3" in message and f"missing key {key!r}" in message


@pytest.mark.parametrize(
    "change, problem",
    [
        (lambda r: r.update(split="dev"), "unknown split 'dev'"),
        (lambda r: r.update(id="seven"), "person id must be an integer"),
        (lambda r: r.update(captions="just one string"), "non-empty list of strings"),
        (lambda r: r.update(captions=[]), "non-empty list of strings"),
        (lambda r: r.update(captions=["ok", 3]), "caption 1 is not a string"),
        (lambda r: r.update(file_path=""), "'file_path' must be a non-empty string"),
    ],
)
def test_malformed_record(tmp_path, change, problem):
    records = write_benchmark(tmp_path, "cuhk-pedes")
    change(records[5])
    (tmp_path / "reid_raw.json").write_text(json.dumps(records))
    with pytest.raises(BenchmarkFormatError, match="record 5") as err:
        read_annotations("cuhk-pedes", tmp_path)
    assert problem in str(err.value) and "reid_raw.json" in str(err.value)


def test_not_a_list_or_not_an_object(tmp_path):
    (tmp_path / "data_captions.json").write_text(json.dumps({"images": []}))
    with pytest.raises(BenchmarkFormatError, match="expected a JSON list"):
        load_benchmark("rstpreid", tmp_path)
    (tmp_path / "data_captions.json").write_text(json.dumps([["not", "an", "object"]]))
    with pytest.raises(BenchmarkFormatError, match="record 0: expected a JSON object"):
        load_benchmark("rstpreid", tmp_path)


def test_missing_annotation_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="data_captions.json"):
        load_benchmark("rstpreid", tmp_path)


def test_missing_image_names_file_record_and_path(tmp_path):
    records = write_benchmark(tmp_path, "rstpreid")
    gone = [i for i, r in enumerate(records) if r["split"] == "test"][1]
    (tmp_path / "imgs" / records[gone]["img_path"]).unlink()
    with pytest.raises(MissingImagesError) as err:
        load_benchmark("rstpreid", tmp_path)
    message = str(err.value)
    assert (
        "data_captions.json" in message
        and f"record {gone}:" in message
        and records[gone]["img_path"] in message
    )
    assert err.value.missing == [(gone, str(tmp_path / "imgs" / records[gone]["img_path"]))]
    # splits without the missing image load; so does everything without the check
    assert load_benchmark("rstpreid", tmp_path, splits=["train"])["train"].num_rows > 0
    assert load_benchmark("rstpreid", tmp_path, check_images=False)["test"].num_rows > 0


def test_list_all_missing_images_at_once(tmp_path):
    records = write_benchmark(tmp_path, "cuhk-pedes")
    gone = [0, 4, 17, len(records) - 1]
    for i in gone:
        (tmp_path / "imgs" / records[i]["file_path"]).unlink()
    with pytest.raises(MissingImagesError) as first:
        load_benchmark("cuhk-pedes", tmp_path)
    assert len(first.value.missing) == 1 and "list_all_missing=True" in str(first.value)
    with pytest.raises(MissingImagesError) as every:
        load_benchmark("cuhk-pedes", tmp_path, list_all_missing=True)
    assert [index for index, _ in every.value.missing] == gone
    assert f"{len(gone)} image(s) referenced by" in str(every.value)
    for i in gone:
        assert f"record {i}: " in str(every.value) and records[i]["file_path"] in str(every.value)


def test_string_digit_ids_are_accepted(tmp_path):
    records = write_benchmark(tmp_path, "rstpreid")
    for r in records:
        r["id"] = str(r["id"])
    (tmp_path / "data_captions.json").write_text(json.dumps(records))
    view = evaluation_view(load_benchmark("rstpreid", tmp_path)["test"])
    assert view.gallery_ids[:2] == [13, 13]


def test_views_keep_image_order_when_records_interleave(tmp_path):
    layout = {1: ("test", 1), 2: ("test", 1), 3: ("test", 1)}
    records = write_benchmark(tmp_path, "cuhk-pedes", layout, captions_per_image=3)
    view = load_retrieval_split("cuhk-pedes", tmp_path)
    assert view.gallery_ids == [1, 2, 3] and view.query_ids == [1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert np.array_equal(view.queries["image_index"], [0, 0, 0, 1, 1, 1, 2, 2, 2])
    assert len(records) == 3
