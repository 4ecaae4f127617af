"""Tests of the synthetic person data set: generation, noise bookkeeping, both formats, the CLI."""
from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from huggingface_hub import DatasetCard
from huggingface_hub.repocard import metadata_load
from PIL import Image

import datasets
from dataset_builders.synthetic import (
    NOISE_KINDS, SyntheticPersonConfig, generate_records, make_caption, sample_identities, to_dataset_dict,
    tokenize, write_cuhk_pedes, write_webperson,
)
from dataset_builders.hub_folder import size_category
from dataset_builders.synthetic.__main__ import main as cli_main
from dataset_builders.synthetic.attributes import COLOURS, HAIR_COLOURS

SMALL = dict(num_identities=20, images_per_identity=3, image_size=(96, 32))


def _pixels(image: Image.Image) -> bytes:
    return image.tobytes()


def _spellings(colour: str) -> tuple[str, ...]:
    return ("grey", "gray") if colour == "grey" else (colour,)


@pytest.fixture(scope="module")
def noisy_records() -> list[dict]:
    return list(generate_records(SyntheticPersonConfig(**SMALL, noise_rate=0.3, seed=7)))


# ---------------------------------------------------------------- configuration


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_identities=0), "num_identities"),
    (dict(images_per_identity=-1), "images_per_identity"),
    (dict(image_size=(10, 32)), "height"),
    (dict(image_size=(96, 32, 3)), "image_size"),
    (dict(noise_rate=1.5), "noise_rate"),
    (dict(noise_kinds=("irrelevant", "typo")), "noise_kinds"),
    (dict(split_fractions=(0.5, 0.2, 0.2)), "split_fractions"),
    (dict(split_fractions=(0.0, 0.5, 0.5)), "split_fractions"),
    (dict(num_identities=2), "too few"),
    (dict(jpeg_quality=100), "jpeg_quality"),
    (dict(seed=1.5), "seed"),
])
def test_config_rejects_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SyntheticPersonConfig(**kwargs)


def test_config_round_trips_through_json():
    config = SyntheticPersonConfig(**SMALL, noise_kinds=("filler",), split_fractions=(0.6, 0.2, 0.2))
    assert SyntheticPersonConfig(**json.loads(json.dumps(config.to_dict()))) == config


# ---------------------------------------------------------------- generation


def test_records_have_the_documented_fields(noisy_records):
    record = noisy_records[0]
    assert set(record) == {"image", "image_path", "person_id", "image_index", "split", "view", "captions",
                           "clean_captions", "noise", "attributes"}
    assert len(noisy_records) == 60
    for record in noisy_records:
        assert isinstance(record["image"], Image.Image) and record["image"].mode == "RGB"
        assert record["image"].size == (32, 96)  # PIL: (width, height)
        assert len(record["captions"]) == len(record["clean_captions"]) == len(record["noise"]) == 2
        assert record["view"] in ("front", "back", "side")


def test_default_image_size_is_384_by_128():
    record = next(generate_records(SyntheticPersonConfig(num_identities=3, images_per_identity=1)))
    assert record["image"].size == (128, 384)


def test_generation_is_deterministic_for_a_seed():
    config = SyntheticPersonConfig(**SMALL, noise_rate=0.5, seed=3)
    first, second = list(generate_records(config)), list(generate_records(config))
    for a, b in zip(first, second):
        assert _pixels(a["image"]) == _pixels(b["image"])
        assert {k: v for k, v in a.items() if k != "image"} == {k: v for k, v in b.items() if k != "image"}
    other = list(generate_records(SyntheticPersonConfig(**SMALL, noise_rate=0.5, seed=4)))
    assert [r["captions"] for r in other] != [r["captions"] for r in first]
    assert sum(_pixels(a["image"]) != _pixels(b["image"]) for a, b in zip(first, other)) == len(first)


_DIGEST_SCRIPT = """
import hashlib
from dataset_builders.synthetic import SyntheticPersonConfig, generate_records
digest = hashlib.sha256()
for r in generate_records(SyntheticPersonConfig(num_identities=8, images_per_identity=2, image_size=(48, 16),
                                                noise_rate=0.5, seed=21)):
    digest.update(r["image"].tobytes() + repr((r["captions"], r["noise"], r["attributes"])).encode())
print(digest.hexdigest())
"""


def test_generation_is_deterministic_across_processes():
    # string hashing is randomised per process; the output must not depend on it
    digests = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        result = subprocess.run([sys.executable, "-c", _DIGEST_SCRIPT], env=env, capture_output=True,
                                text=True, check=True, cwd=Path(__file__).resolve().parents[1])
        digests.add(result.stdout.strip())
    assert len(digests) == 1 and len(digests.pop()) == 64


def test_noise_settings_change_neither_images_nor_clean_captions():
    clean = list(generate_records(SyntheticPersonConfig(**SMALL, noise_rate=0.0, seed=5)))
    noisy = list(generate_records(SyntheticPersonConfig(**SMALL, noise_rate=0.8, seed=5)))
    for a, b in zip(clean, noisy):
        assert _pixels(a["image"]) == _pixels(b["image"])
        assert a["clean_captions"] == b["clean_captions"] == a["captions"]
    assert sum(a["captions"] != b["captions"] for a, b in zip(clean, noisy)) > len(clean) // 2


def test_splits_are_identity_disjoint_and_cover_every_identity():
    config = SyntheticPersonConfig(num_identities=30, images_per_identity=2, image_size=(48, 16),
                                   split_fractions=(0.6, 0.2, 0.2))
    records = list(generate_records(config))
    ids_by_split = {s: {r["person_id"] for r in records if r["split"] == s} for s in ("train", "val", "test")}
    assert {s: len(ids) for s, ids in ids_by_split.items()} == {"train": 18, "val": 6, "test": 6}
    assert ids_by_split["train"] | ids_by_split["val"] | ids_by_split["test"] == set(range(1, 31))
    assert not (ids_by_split["train"] & ids_by_split["val"] or ids_by_split["train"] & ids_by_split["test"]
                or ids_by_split["val"] & ids_by_split["test"])
    assert Counter(r["person_id"] for r in records) == {pid: 2 for pid in range(1, 31)}
    # asking for one split yields exactly that part of the full set
    test_only = list(generate_records(config, splits=["test"]))
    assert [r["image_path"] for r in test_only] == [r["image_path"] for r in records if r["split"] == "test"]
    with pytest.raises(ValueError, match="unknown split"):
        next(generate_records(config, splits=["validation"]))


def test_identities_are_distinct_and_prefix_stable():
    people = sample_identities(300, seed=11)
    assert len({p.captioned_key() for p in people}) == 300
    assert sample_identities(40, seed=11) == people[:40]
    assert sample_identities(40, seed=12) != people[:40]


def test_images_of_one_identity_differ_but_share_the_person(noisy_records):
    by_id: dict[int, list[np.ndarray]] = {}
    for r in noisy_records:
        by_id.setdefault(r["person_id"], []).append(np.asarray(r["image"], dtype=np.int16))
    for images in by_id.values():
        for i in range(len(images)):
            for j in range(i + 1, len(images)):
                assert np.abs(images[i] - images[j]).mean() > 5  # not pixel-identical, not nearly so
    attributes = {r["person_id"]: r["attributes"] for r in noisy_records}
    assert all(r["attributes"] == attributes[r["person_id"]] for r in noisy_records)


def test_clean_captions_describe_the_person(noisy_records):
    for r in noisy_records:
        a = r["attributes"]
        for caption in r["clean_captions"]:
            words = set(tokenize(caption))
            assert words & set(_spellings(a["top_colour"])), caption
            assert words & set(_spellings(a["bottom_colour"])), caption
            assert ({"he", "man", "male", "guy", "gentleman"} if a["gender"] == "man"
                    else {"she", "woman", "female", "lady", "girl"}) & words, caption
            if a["backpack"] != "none":
                assert {"backpack", "rucksack"} & words, caption


def test_captions_are_varied():
    config = SyntheticPersonConfig(num_identities=40, images_per_identity=2, image_size=(48, 16),
                                   noise_rate=0)
    captions = [c for r in generate_records(config) for c in r["captions"]]
    assert len(set(captions)) == len(captions)
    openings = Counter(" ".join(tokenize(c)[:2]) for c in captions)
    assert len(openings) >= 8
    # the garments are not always mentioned in the same order
    orders = set()
    for r in generate_records(config):
        a = r["attributes"]
        for c in r["captions"]:
            text = c.lower()
            top = text.find(a["top_type"].split()[0])
            bottoms = ("jeans", "trousers", "pants", "shorts", "skirt", "slacks")
            bottom = min((i for i in (text.find(w) for w in bottoms) if i >= 0), default=-1)
            if top >= 0 and bottom >= 0:
                orders.add(top < bottom)
    assert orders == {True, False}


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), view=st.sampled_from(["front", "back", "side"]),
       kinds=st.sets(st.sampled_from(NOISE_KINDS)))
def test_captions_are_well_formed(seed, view, kinds):
    person = sample_identities(1, seed)[0]
    caption = make_caption(person, view, random.Random(seed), tuple(kinds))
    for text in (caption.text, caption.clean):
        assert text[0].isupper() and text.endswith(".")
        assert "  " not in text and " ," not in text and " ." not in text
        assert not re.search(r"\ba [aeiou]", text, flags=re.IGNORECASE), text
    assert sorted(caption.noise_kinds) == sorted(kinds)
    assert (caption.text == caption.clean) == (not kinds)


# ---------------------------------------------------------------- noise bookkeeping


def test_noise_free_set_has_no_noise_records():
    records = list(generate_records(SyntheticPersonConfig(**SMALL, noise_rate=0.0)))
    assert all(r["noise"] == [[], []] and r["captions"] == r["clean_captions"] for r in records)


def test_noise_rate_is_respected_and_limited_to_the_chosen_kinds():
    config = SyntheticPersonConfig(num_identities=100, images_per_identity=2, image_size=(48, 16),
                                   noise_rate=0.3, noise_kinds=("filler", "irrelevant"))
    noise = [events for r in generate_records(config) for events in r["noise"]]
    share = sum(bool(events) for events in noise) / len(noise)
    assert 0.22 < share < 0.38
    kinds = Counter(e["kind"] for events in noise for e in events)
    assert set(kinds) == {"filler", "irrelevant"}


def test_every_recorded_noise_event_is_what_changed_the_caption():
    config = SyntheticPersonConfig(**SMALL, noise_rate=1.0, seed=9)
    seen = Counter()
    for r in generate_records(config):
        for text, clean, events in zip(r["captions"], r["clean_captions"], r["noise"]):
            assert events and text != clean
            for event in events:
                seen[event["kind"]] += 1
                if event["kind"] == "wrong_colour":
                    attribute, change = event["detail"].split(": ")
                    true, wrong = change.split(" -> ")
                    assert r["attributes"][attribute] == true != wrong
                    palette = HAIR_COLOURS if attribute == "hair_colour" else COLOURS
                    assert wrong in palette
                    assert set(tokenize(text)) & set(_spellings(wrong))
                    assert set(tokenize(clean)) & set(_spellings(true))
                elif event["kind"] == "irrelevant":
                    sentence = event["detail"].split(": ", 1)[1]
                    assert sentence not in clean
                    if "filler" not in [e["kind"] for e in events]:
                        assert sentence in text
                else:
                    for filler in event["detail"].split("; "):
                        word = tokenize(filler)[0]
                        assert tokenize(text).count(word) > tokenize(clean).count(word)
            kinds = [e["kind"] for e in events]
            if kinds == ["irrelevant"]:  # removing the recorded sentence gives the clean caption back
                assert text.replace(" " + events[0]["detail"].split(": ", 1)[1], "") == clean
            if kinds == ["wrong_colour"]:  # exactly one word differs (and perhaps "a"/"an" before it)
                a, b = text.split(" "), clean.split(" ")
                assert len(a) == len(b)
                changed = [(x, y) for x, y in zip(a, b) if x != y]
                assert len([pair for pair in changed if {p.lower() for p in pair} != {"a", "an"}]) == 1
    assert set(seen) == set(NOISE_KINDS)


# ---------------------------------------------------------------- the WebPerson format


def test_webperson_folder_loads_offline_with_load_dataset(tmp_path, noisy_records):
    config = SyntheticPersonConfig(**SMALL, noise_rate=0.3, seed=7)
    out = write_webperson(config, tmp_path / "wp", shard_size=16)
    assert out == tmp_path / "wp"
    card, meta = DatasetCard.load(out / "README.md"), metadata_load(out / "README.md")
    assert meta == card.data.to_dict()
    assert card.data.pretty_name == "GA-DMS synthetic persons" and card.data.license == "apache-2.0"
    assert card.data.size_categories == ["n<1K"]  # 60 images
    (default,) = meta["configs"]
    assert default["config_name"] == "default"
    files = default["data_files"]
    assert [f["split"] for f in files] == ["train", "validation", "test"]
    # every split's pattern names shards, and together they name every shard once
    globbed = [sorted(out.glob(f["path"])) for f in files]
    assert all(globbed) and sorted(sum(globbed, [])) == sorted((out / "data").glob("*.parquet"))
    splits = {s["name"]: s["num_examples"] for s in meta["dataset_info"]["splits"]}
    assert splits == {"train": 48, "validation": 6, "test": 6}
    names = [f["name"] for f in meta["dataset_info"]["features"]]
    assert names[:4] == ["image", "image_path", "caption1", "caption2"]
    assert card.text.startswith("\n# GA-DMS synthetic persons (WebPerson format)\n")
    assert "| validation | 6 |" in card.text and "- `seed`: 7\n" in card.text
    assert "- captions with noise: " in card.text and "## Generation settings" in card.text
    # 16 train identities x 3 images, 16 rows a shard
    assert len(list((out / "data").glob("train-*-of-00003.parquet"))) == 3

    ds = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "cache"))
    assert set(ds) == {"train", "validation", "test"}
    assert {s: ds[s].num_rows for s in ds} == {"train": 48, "validation": 6, "test": 6}
    feats = ds["train"].features
    assert isinstance(feats["image"], datasets.Image)
    for column in ("image_path", "caption1", "caption2", "person_id", "top_colour", "caption1_noise",
                   "caption2_noise_detail", "caption1_clean", "view"):
        assert column in feats
    rows = [row for split in ("train", "validation", "test") for row in ds[split]]
    assert len(rows) == len(noisy_records)
    for row, record in zip(rows, noisy_records):
        assert row["image_path"] == record["image_path"]
        assert [row["caption1"], row["caption2"]] == record["captions"]
        assert row["person_id"] == record["person_id"]
        assert row["top_colour"] == record["attributes"]["top_colour"]
        assert row["caption1_noise"] == [e["kind"] for e in record["noise"][0]]
        assert row["caption2_noise_detail"] == [e["detail"] for e in record["noise"][1]]
        image = row["image"]
        assert image.size == (32, 96)
        # JPEG: close to the drawn picture, not identical
        diff = np.abs(np.asarray(image, dtype=np.int16) - np.asarray(record["image"], dtype=np.int16)).mean()
        assert diff < 6, row["image_path"]
    train_ids = set(ds["train"]["person_id"])
    assert not train_ids & set(ds["test"]["person_id"]) and not train_ids & set(ds["validation"]["person_id"])


def test_webperson_leaves_out_empty_splits(tmp_path):
    config = SyntheticPersonConfig(num_identities=6, images_per_identity=1, image_size=(48, 16),
                                   split_fractions=(0.5, 0.0, 0.5))
    folder = write_webperson(config, tmp_path / "wp")
    meta = metadata_load(folder / "README.md")
    assert [f["split"] for f in meta["configs"][0]["data_files"]] == ["train", "test"]
    assert [s["name"] for s in meta["dataset_info"]["splits"]] == ["train", "test"]
    ds = datasets.load_dataset(str(folder), cache_dir=str(tmp_path / "cache"))
    assert set(ds) == {"train", "test"}


def test_writers_refuse_to_clobber(tmp_path):
    config = SyntheticPersonConfig(num_identities=5, images_per_identity=1, image_size=(48, 16))
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="did not write"):
        write_webperson(config, foreign, overwrite=True)
    assert (foreign / "notes.txt").read_text() == "keep me"
    out = write_cuhk_pedes(config, tmp_path / "ours")
    with pytest.raises(FileExistsError, match="not empty"):
        write_cuhk_pedes(config, out)
    write_webperson(config, out, overwrite=True)
    assert not (out / "reid_raw.json").exists() and (out / "README.md").exists()


def test_to_dataset_dict_builds_the_same_rows(tmp_path):
    config = SyntheticPersonConfig(num_identities=10, images_per_identity=2, image_size=(48, 16), seed=2)
    dd = to_dataset_dict(config, cache_dir=str(tmp_path / "cache"))
    assert {s: dd[s].num_rows for s in dd} == {"train": 16, "validation": 2, "test": 2}
    assert isinstance(dd["train"].features["image"], datasets.Image)
    records = list(generate_records(config, splits=["val"]))
    assert dd["validation"]["caption2"] == [r["captions"][1] for r in records]
    other = SyntheticPersonConfig(num_identities=10, images_per_identity=2, image_size=(48, 16), seed=3)
    again = to_dataset_dict(other, cache_dir=str(tmp_path / "cache"))  # same cache, other settings
    assert again["validation"]["caption2"] == [r["captions"][1] for r in generate_records(other, splits=["val"])]
    assert again["validation"]["caption2"] != dd["validation"]["caption2"]


# ---------------------------------------------------------------- the CUHK-PEDES format


def read_reid_raw(folder: Path) -> list[dict]:
    """A minimal CUHK-PEDES reader: the annotation list, checked like a benchmark loader would."""
    records = json.loads((folder / "reid_raw.json").read_text())
    for record in records:
        assert set(record) == {"split", "captions", "file_path", "processed_tokens", "id"}
        assert record["split"] in ("train", "val", "test")
        assert isinstance(record["id"], int) and record["id"] >= 1
        assert (folder / "imgs" / record["file_path"]).is_file()
    return records


def test_cuhk_pedes_folder_reads_like_the_benchmark(tmp_path, noisy_records):
    config = SyntheticPersonConfig(**SMALL, noise_rate=0.3, seed=7)
    out = write_cuhk_pedes(config, tmp_path / "cuhk")
    records = read_reid_raw(out)
    assert len(records) == len(noisy_records)
    assert Counter(r["split"] for r in records) == {"train": 48, "val": 6, "test": 6}
    ids_by_split = {s: {r["id"] for r in records if r["split"] == s} for s in ("train", "val", "test")}
    assert sorted(ids_by_split["train"] | ids_by_split["val"] | ids_by_split["test"]) == list(range(1, 21))
    assert sum(len(v) for v in ids_by_split.values()) == 20
    for record, original in zip(records, noisy_records):
        assert record["captions"] == original["captions"]
        assert record["processed_tokens"] == [tokenize(c) for c in record["captions"]]
        tokens = [t for ts in record["processed_tokens"] for t in ts]
        assert all(t == t.lower() and t.isascii() and not set(t) & set(".,") for t in tokens)
        assert record["id"] == original["person_id"]
        with Image.open(out / "imgs" / record["file_path"]) as image:
            assert image.format == "JPEG" and image.size == (32, 96)
    extras = json.loads((out / "synthetic_attributes.json").read_text())
    assert [e["file_path"] for e in extras] == [r["file_path"] for r in records]
    assert [e["noise"] for e in extras] == [r["noise"] for r in noisy_records]
    # the generic json loader of `datasets` reads it too
    table = datasets.load_dataset("json", data_files=str(out / "reid_raw.json"), split="train",
                                  cache_dir=str(tmp_path / "cache"))
    assert table.num_rows == len(records) and table[0]["id"] == 1
    # the card: no YAML front matter (benchmark loaders read this layout), the counts and the settings
    text = (out / "README.md").read_text()
    assert text.startswith("# GA-DMS synthetic persons (CUHK-PEDES format)\n")
    assert metadata_load(out / "README.md") is None
    assert DatasetCard.load(out / "README.md").data.to_dict() == {}
    assert "| train | 48 | 96 |" in text and "| val | 6 | 12 |" in text and "- `seed`: 7\n" in text
    assert '`{"split", "captions", "file_path", "processed_tokens", "id"}`' in text


@pytest.mark.parametrize("rows, category", [
    (0, "n<1K"), (999, "n<1K"), (1_000, "1K<n<10K"), (9_999, "1K<n<10K"), (10_000, "10K<n<100K"),
    (999_999, "100K<n<1M"), (1_000_000, "1M<n<10M"), (10_000_000, "10M<n<100M"),
    (5 * 10**9, "1B<n<10B"), (10**12, "n>1T"),
])
def test_size_category_is_the_hub_bucket_of_the_row_count(rows, category):
    assert size_category(rows) == category


def test_noise_free_cards_name_no_noise_kinds(tmp_path):
    config = SyntheticPersonConfig(num_identities=4, images_per_identity=1, image_size=(48, 16),
                                   noise_rate=0.0, noise_kinds=())
    for writer in (write_webperson, write_cuhk_pedes):
        text = (writer(config, tmp_path / writer.__name__) / "README.md").read_text()
        assert "- noise rate setting: 0.0 (kinds: none)" in text
        assert "- captions with noise: 0 of 8 (0.0 %)" in text and "- `filler`: 0 captions" in text


# ---------------------------------------------------------------- CLI


def test_cli_writes_both_formats(tmp_path, capsys):
    assert cli_main(["--out", str(tmp_path / "a"), "--identities", "8", "--images-per-identity", "2",
                     "--image-size", "48x16", "--noise", "0.5", "--seed", "1", "--no-progress"]) == 0
    assert "16 images of 8 identities" in capsys.readouterr().out
    loaded = datasets.load_dataset(str(tmp_path / "a"), cache_dir=str(tmp_path / "cache"))
    assert loaded["train"].num_rows == 12
    assert cli_main(["--out", str(tmp_path / "b"), "--format", "cuhk-pedes", "--identities", "8",
                     "--image-size", "48x16", "--noise-kinds", "filler", "--no-progress"]) == 0
    saved = json.loads((tmp_path / "b" / "synthetic_config.json").read_text())
    assert saved["noise_kinds"] == ["filler"] and saved["image_size"] == [48, 16]
    assert len(read_reid_raw(tmp_path / "b")) == 32


@pytest.mark.parametrize("args, message", [
    (["--identities", "0"], "--identities"),
    (["--noise", "abc"], "--noise"),
    (["--image-size", "384"], "HEIGHTxWIDTH"),
    (["--image-size", "8x8"], "height"),
    (["--format", "coco"], "--format"),
    (["--noise-kinds", "typo"], "unknown noise kind"),
    (["--split-fractions", "0.5,0.5"], "three fractions"),
    (["--identities", "2"], "too few"),
])
def test_cli_rejects_bad_arguments_clearly(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["--out", str(tmp_path / "x"), *args])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_cli_refuses_a_non_empty_folder(tmp_path, capsys):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "f").write_text("")
    with pytest.raises(SystemExit):
        cli_main(["--out", str(tmp_path / "x"), "--identities", "5", "--no-progress"])
    assert "not empty" in capsys.readouterr().err


def test_cli_help_describes_the_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    options = ("--out", "--identities", "--images-per-identity", "--noise", "--format", "--seed",
               "cuhk-pedes")
    for option in options:
        assert option in text


def test_regenerated_folder_of_the_same_name_is_not_served_from_the_cache(tmp_path):
    # `datasets` keys the cache of a local folder on its name and its card: the card must change with the data
    cache = str(tmp_path / "cache")
    loaded = []
    for seed in (0, 1):
        config = SyntheticPersonConfig(num_identities=6, images_per_identity=1, image_size=(48, 16),
                                       seed=seed)
        folder = write_webperson(config, tmp_path / f"run{seed}" / "synthetic")
        loaded.append(datasets.load_dataset(str(folder), cache_dir=cache)["train"]["caption1"])
        assert loaded[-1] == [r["captions"][0] for r in generate_records(config, splits=["train"])]
    assert loaded[0] != loaded[1]


def test_webperson_folder_writes_once_and_replaces_what_differs(tmp_path):
    from dataset_builders.synthetic import SyntheticPersonConfig, webperson_folder

    config = SyntheticPersonConfig(num_identities=6, images_per_identity=1, image_size=(32, 16), seed=2,
                                   split_fractions=(0.5, 0.25, 0.25))
    folder = webperson_folder(config, tmp_path / "d")
    shards = sorted((folder / "data").iterdir())
    stamps = [p.stat().st_mtime_ns for p in shards]
    (folder / "data" / "kept.txt").write_text("reused folders are left as they are")
    assert webperson_folder(config, folder) == folder  # the same settings: reused
    assert (folder / "data" / "kept.txt").is_file() and [p.stat().st_mtime_ns for p in shards] == stamps
    other = SyntheticPersonConfig(num_identities=6, images_per_identity=1, image_size=(32, 16), seed=3,
                                  split_fractions=(0.5, 0.25, 0.25))
    webperson_folder(other, folder)  # other settings: replaced
    assert not (folder / "data" / "kept.txt").exists()
    assert json.loads((folder / "synthetic_config.json").read_text())["seed"] == 3
    (folder / "README.md").unlink()  # the card is written last: without it the writing was interrupted
    (folder / "data" / "kept.txt").write_text("x")
    webperson_folder(other, folder)
    assert (folder / "README.md").is_file() and not (folder / "data" / "kept.txt").exists()
