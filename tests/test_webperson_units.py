"""WebPerson curation: the rules on hand-made inputs (boxes, keypoints, captions, images, banks, specs)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from dataset_builders.webperson.backends import parse_spec
from dataset_builders.webperson.caption_filter import CaptionFilter, FilterRules, clean_caption
from dataset_builders.webperson.captioning import draw_template, sampling_seed
from dataset_builders.webperson.detection import (
    Detection,
    DetectionThresholds,
    box_reason,
    crop_box,
    select_person_boxes,
)
from dataset_builders.webperson.images import BadImage, ImageLimits, content_id, decode_rgb, probe_image
from dataset_builders.webperson.pose import PoseThresholds, pose_reason
from dataset_builders.webperson.prompts import CAPTION_INSTRUCTION, PLACEHOLDERS, caption_prompt
from dataset_builders.webperson.shards import ShardSelection, parse_shard
from dataset_builders.webperson.template_bank import TemplateBank, find_placeholders, load_bank, save_bank
from dataset_builders.webperson.template_mining import extract_templates, parse_template

SIZE = (1000, 1000)
SPEC = DetectionThresholds()


def det(x0, y0, x1, y1, score=0.9, label="person"):
    return Detection((x0, y0, x1, y1), score, label)


# ----- detection thresholds ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "detection, reason",
    [
        (det(0, 0, 100, 300), None),  # 100 x 300: short side 100 > 90, w/h = 1/3
        (det(0, 0, 90, 300), "small_box"),  # short side exactly 90: not above
        (det(0, 0, 91, 200), None),  # w/h = 0.455
        (det(0, 0, 100, 199), "bad_aspect"),  # w/h = 0.5025 > 1/2
        (det(0, 0, 100, 200), None),  # w/h = 1/2 exactly: kept (inclusive)
        (det(0, 0, 100, 400), None),  # w/h = 1/4 exactly: kept
        (det(0, 0, 100, 401), "bad_aspect"),  # w/h < 1/4
        (det(0, 0, 300, 300), "bad_aspect"),  # square
        (det(0, 0, 100, 300, score=0.85), "low_score"),  # confidence must be above 0.85
        (det(0, 0, 100, 300, score=0.851), None),
        (det(0, 0, 100, 300, label="car"), "not_person"),
        (det(0, 0, 100, 300, label="Person"), None),  # labels match case-insensitively
        (det(950, 0, 1050, 300), "small_box"),  # clipped to the image: 50 px wide
        (det(10, 10, 10, 300), "degenerate_box"),
    ],
)
def test_box_rules(detection, reason):
    assert box_reason(detection, SIZE, SPEC) == reason


def test_thresholds_are_configurable_and_checked():
    loose = DetectionThresholds(
        min_short_side=10, min_aspect=0.1, max_aspect=2.0, min_score=0.2, labels=("human",)
    )
    assert box_reason(det(0, 0, 300, 300, score=0.3, label="human"), SIZE, loose) is None
    assert box_reason(det(0, 0, 300, 300, score=0.3, label="person"), SIZE, loose) == "not_person"
    with pytest.raises(ValueError, match="min_aspect"):
        DetectionThresholds(min_aspect=0.6, max_aspect=0.5)


def test_select_keeps_highest_scores_first_and_caps_per_image():
    boxes = [
        det(0, 0, 100, 300, 0.9),
        det(200, 0, 300, 300, 0.99),
        det(400, 0, 500, 300, 0.95),
        det(0, 0, 10, 10, 0.99),
    ]
    kept, rejected = select_person_boxes(boxes, SIZE, DetectionThresholds(max_per_image=2))
    assert [d.score for d in kept] == [0.99, 0.95]
    assert sorted(r for _, r in rejected) == ["over_max_per_image", "small_box"]


def test_crop_box_rounds_outwards_and_clips():
    image = Image.new("RGB", (200, 100))
    crop, box = crop_box(image, (10.4, -5.0, 50.2, 120.0))
    assert box == (10, 0, 51, 100)
    assert crop.size == (41, 100)


# ----- pose integrity ------------------------------------------------------------------------------
def scores(visible):
    out = np.zeros(17)
    out[list(visible)] = 0.9
    return out


@pytest.mark.parametrize(
    "visible, reason",
    [
        ({0, 1, 2, 5, 6, 11, 12, 13}, None),  # 8 visible, 2 hips, 3 head points
        ({0, 1, 5, 6, 7, 8, 11, 13}, None),  # one hip, two head points: enough
        ({0, 1, 2, 5, 6, 11, 12}, "few_keypoints"),  # only 7
        ({0, 1, 2, 5, 6, 7, 8, 9, 10, 13}, "no_hip"),  # 10 visible but no hip
        ({0, 5, 6, 7, 8, 9, 11, 12, 13}, "few_head_points"),  # one head point
        (set(range(17)), None),
    ],
)
def test_pose_rules(visible, reason):
    assert pose_reason(scores(visible), PoseThresholds())[0] == reason
    assert pose_reason(scores(visible), PoseThresholds())[1] == len(visible)


def test_pose_visibility_threshold_and_settings():
    values = np.full(17, 0.4)
    assert pose_reason(values, PoseThresholds())[0] == "few_keypoints"  # 0.4 < 0.5
    assert pose_reason(values, PoseThresholds(visibility=0.4)) == (None, 17)
    assert pose_reason(scores({0, 11}), PoseThresholds(min_visible=2, min_head=1, min_hips=1))[0] is None
    with pytest.raises(ValueError, match="17"):
        pose_reason(np.ones(16), PoseThresholds())


def test_pose_stage_skips_and_counts_an_undecodable_crop():
    """A damaged crop in a shard is one `undecodable` reject; its batch mates are still estimated and kept."""
    import pyarrow as pa

    from dataset_builders.webperson.detection import CROP_SCHEMA
    from dataset_builders.webperson.pose import make_pose_processor

    buffer = io.BytesIO()
    Image.new("RGB", (40, 100), (200, 10, 10)).save(buffer, format="JPEG")
    good = buffer.getvalue()
    crops = [good, b"\xff\xd8 not a jpeg", good]
    table = pa.Table.from_pylist(
        [{"crop_id": f"c{i}", "source_id": "s", "source_key": "k", "source_url": "u", "box": [0, 0, 40, 100],
          "det_score": 0.9, "crop": crop, "crop_width": 40, "crop_height": 100} for i, crop in enumerate(crops)],
        schema=CROP_SCHEMA,
    )
    seen = []

    def estimator(images):
        seen.append([im.size for im in images])
        return [np.ones((17, 3), dtype=np.float32) for _ in images]

    out = make_pose_processor(estimator, PoseThresholds(), batch_size=3)("00000", table)
    assert seen == [[(40, 100), (40, 100)]]  # one call, without the damaged crop
    assert out.table.column("crop_id").to_pylist() == ["c0", "c2"]
    assert [(r["id"], r["reason"]) for r in out.rejects] == [("c1", "undecodable")]


# ----- caption filter ------------------------------------------------------------------------------
GOOD = "A woman with long black hair wearing a red coat, blue jeans and white sneakers, carrying a black bag."


@pytest.mark.parametrize(
    "caption, reason",
    [
        (GOOD, None),
        ("A man in a red shirt.", "too_short"),
        (" ".join(["word"] * 81), "too_long"),
        ("A man wearing a [colored top] and black pants with white shoes on.", "unfilled_placeholder"),
        ("A man who is possibly wearing a red shirt and black pants with shoes.", "speculative"),
        ("The woman seems to wear a red coat, blue jeans and white sneakers today.", "speculative"),
        ("A woman that appears to wear a red coat, blue jeans and white sneakers.", "speculative"),
        (
            "A happy woman wearing a red coat, blue jeans and white sneakers, carrying a bag.",
            "identity_or_emotion",
        ),
        ("A woman wearing a red coat, blue jeans and white sneakers walks along the street.", "background"),
        ("A woman in a red coat and blue jeans with white sneakers; trees in the background.", "background"),
        ("The image shows a woman wearing a red coat, blue jeans and white sneakers.", "non_person"),
        ("I'm sorry, but I cannot describe people in pictures with any detail at all.", "non_person"),
    ],
)
def test_caption_rules(caption, reason):
    result = CaptionFilter().check(clean_caption(caption))
    assert (result[0] if result else None) == reason


def test_filter_matches_whole_words_only():
    # "scenery" is not "scene"; "mightily" is not "might"; "streetwear" is not "street"
    caption = "A man in streetwear: a mightily bright red jacket, black pants and white shoes with a bag."
    assert CaptionFilter().check(caption) is None


def test_duplicate_pair_and_pair_order():
    rules = CaptionFilter()
    assert rules.check_pair(GOOD, GOOD.upper().replace(",", ""))[0] == "duplicate_pair"
    other = "A person in a red coat and blue jeans with white sneakers and a black shoulder bag."
    assert rules.check_pair(GOOD, other) is None
    reason, detail = rules.check_pair(GOOD, "Maybe a man in a red shirt and black pants with white shoes.")
    assert reason == "speculative" and detail.startswith("caption2")


def test_clean_caption():
    assert clean_caption('  Caption: "A man in a red shirt."  ') == "A man in a red shirt."
    assert clean_caption("“A man\n in  red”") == "A man in red"
    assert clean_caption(None) == ""


def test_filter_rules_are_configurable():
    rules = CaptionFilter(FilterRules(min_words=2, max_words=5, background=()))
    assert rules.check("a man on the street") is None
    assert rules.check("a man on the big street")[0] == "too_long"
    with pytest.raises(ValueError):
        FilterRules(min_words=10, max_words=5)


# ----- images --------------------------------------------------------------------------------------
def _bytes(image, fmt, **kw):
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kw)
    return buffer.getvalue()


def test_decode_rgb_converts_modes():
    for mode, fmt in (("CMYK", "JPEG"), ("RGBA", "PNG"), ("L", "PNG"), ("P", "PNG"), ("I;16", "PNG")):
        image = Image.new(mode, (120, 100))
        decoded, original = decode_rgb(_bytes(image, fmt))
        assert decoded.mode == "RGB" and decoded.size == (120, 100) and original == mode
    transparent = Image.new("RGBA", (100, 100), (0, 0, 0, 0))
    assert decode_rgb(_bytes(transparent, "PNG"))[0].getpixel((5, 5)) == (255, 255, 255)


def test_decode_rgb_applies_exif_orientation():
    image = Image.new("RGB", (200, 100))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90
    decoded, _ = decode_rgb(_bytes(image, "JPEG", exif=exif.tobytes()))
    assert decoded.size == (100, 200)


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "empty"),
        (None, "empty"),
        (b"GIF89a-not-really", "undecodable"),
        (b"\x00" * 100, "undecodable"),
    ],
)
def test_decode_rgb_bad_bytes(data, reason):
    with pytest.raises(BadImage) as info:
        decode_rgb(data)
    assert info.value.reason == reason


def test_decode_rgb_truncated_small_large():
    full = _bytes(Image.effect_noise((300, 300), 40).convert("RGB"), "JPEG")
    with pytest.raises(BadImage, match="truncated"):
        decode_rgb(full[: len(full) // 2])
    with pytest.raises(BadImage, match="too_small"):
        decode_rgb(_bytes(Image.new("RGB", (300, 60)), "PNG"))
    with pytest.raises(BadImage, match="too_large"):
        decode_rgb(_bytes(Image.new("RGB", (300, 300)), "PNG"), ImageLimits(max_pixels=300 * 299))


def test_probe_image_checks_headers_only():
    image = Image.new("RGB", (200, 100))
    exif = image.getexif()
    exif[0x0112] = 6
    assert probe_image(_bytes(image, "JPEG", exif=exif.tobytes())) == (100, 200, "RGB")
    assert probe_image(_bytes(Image.new("CMYK", (120, 100)), "JPEG")) == (120, 100, "CMYK")
    full = _bytes(Image.effect_noise((300, 300), 40).convert("RGB"), "JPEG")
    assert probe_image(full[: len(full) // 2]) == (300, 300, "RGB")  # truncation is left to decode_rgb
    for data, reason, limits in (
        (b"", "empty", ImageLimits()),
        (b"<html>", "undecodable", ImageLimits()),
        (_bytes(Image.new("RGB", (300, 60)), "PNG"), "too_small", ImageLimits()),
        (full, "too_large", ImageLimits(max_pixels=1000)),
    ):
        with pytest.raises(BadImage) as info:
            probe_image(data, limits)
        assert info.value.reason == reason


def test_content_id_is_stable():
    assert content_id(b"abc") == content_id(b"abc") != content_id(b"abd")
    assert len(content_id(b"abc")) == 32


# ----- shards, specs -------------------------------------------------------------------------------
def test_shard_selection():
    assert parse_shard("1/3") == ShardSelection(1, 3)
    assert [n for n in ("00000", "00001", "00004", "00007") if parse_shard("1/3").takes(n)] == [
        "00001",
        "00004",
        "00007",
    ]
    for bad in ("3/3", "a/b", "1", "-1/2"):
        with pytest.raises(ValueError):
            parse_shard(bad)


def test_parse_spec():
    spec = parse_spec(
        "openai=Qwen/Qwen2.5-VL-7B-Instruct,base_url=http://h:8000/v1,concurrency=64,timeout=2.5,"
        "do_sample=true",
        "--captioner",
    )
    assert spec.kind == "openai" and spec.model == "Qwen/Qwen2.5-VL-7B-Instruct"
    assert spec.options == {
        "base_url": "http://h:8000/v1",
        "concurrency": 64,
        "timeout": 2.5,
        "do_sample": True,
    }
    with pytest.raises(ValueError, match="--detector"):
        parse_spec("rtdetr", "--detector")
    with pytest.raises(ValueError, match="key=value"):
        parse_spec("transformers=x,device", "--pose-model")


# ----- templates and prompts -----------------------------------------------------------------------
def test_default_bank_is_valid_and_draws_are_stable():
    bank = load_bank()
    assert bank.tag == "default_v1" and 50 <= len(bank.templates) <= 100
    assert len({t.text for t in bank.templates}) == len(bank.templates)
    used = {p for t in bank.templates for p in find_placeholders(t.text)}
    assert (
        {"[colored top]", "[colored bottom]", "[hairstyle]", "[accessory]", "[He/She]"}
        <= used
        <= set(PLACEHOLDERS)
    )
    first = [draw_template(bank, 0, "abc-00", j).id for j in (0, 1)]
    assert first == [draw_template(bank, 0, "abc-00", j).id for j in (0, 1)]
    assert len({draw_template(bank, 0, f"crop{i}", 0).id for i in range(200)}) > 30
    assert sampling_seed(0, "a", 0) != sampling_seed(0, "a", 1)


def test_bank_versioning(tmp_path):
    bank = TemplateBank.from_texts(
        "mine", 1, ["[He/She] wears a [colored top].", "A [gender] in [colored bottom]."]
    )
    path = save_bank(bank, tmp_path)
    assert path.name == "mine_v1.json" and load_bank(path).to_dict() == bank.to_dict()
    save_bank(bank, tmp_path)  # same content: fine
    changed = TemplateBank.from_texts("mine", 1, ["[He/She] wears a [colored dress]."])
    with pytest.raises(FileExistsError, match="version 2"):
        save_bank(changed, tmp_path)
    data = json.loads(path.read_text())
    data["templates"][0]["text"] = "[He/She] wears [footwear]."
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="sha256"):
        load_bank(path)
    with pytest.raises(ValueError, match="unknown placeholder"):
        TemplateBank.from_texts("bad", 1, ["[He/She] wears [favourite colour]."])
    with pytest.raises(FileNotFoundError, match="default_v1"):
        load_bank("nonexistent_v9")


def test_caption_prompt_states_the_rules():
    prompt = caption_prompt("[He/She] wears a [colored top].", max_words=40)
    assert "[He/She] wears a [colored top]." in prompt and "40 words" in prompt
    for phrase in ("background", "possibly", "emotion", "Output only the caption", "colour"):
        assert phrase in CAPTION_INSTRUCTION


def test_template_parsing_and_extraction():
    assert parse_template('Template: "[He/She] wears a [colored top]."\nmore') == (
        "[He/She] wears a [colored top].",
        "",
    )
    assert parse_template("A man in red.")[0] is None
    assert parse_template("[He/She] has [tattoo].")[1].startswith("unknown_placeholder")
    answers = {
        "a": "[He/She] wears a [colored top].",
        "b": "[he/she] WEARS a [colored top].".replace("[he/she]", "[He/She]"),
        "c": "",
        "d": "no placeholder",
    }

    def generate(prompts):
        return [answers[p.rsplit("Description: ", 1)[1]] for p in prompts]

    templates, dropped = extract_templates(["a", "b", "c", "d"], generate, batch_size=3)
    assert templates == ["[He/She] wears a [colored top]."]
    assert dropped == {"duplicate": 1, "empty": 1, "no_placeholder": 1}


# ----- figures, command line -----------------------------------------------------------------------
def test_histogram_from_lengths_or_counts_and_sample_grid():
    from collections import Counter

    from dataset_builders.webperson.figures import caption_length_histogram, sample_grid

    lengths = [12, 15, 15, 20, 31, 31, 31, 44]
    a = caption_length_histogram(lengths)
    b = caption_length_histogram(Counter(lengths))
    assert a.size == (640, 320) and a.tobytes() == b.tobytes()
    with pytest.raises(ValueError):
        caption_length_histogram([])
    crop = _bytes(Image.new("RGB", (40, 120), "red"), "JPEG")
    grid = sample_grid([crop] * 5, [("first caption " * 10, "second")] * 5, columns=4, crop_height=96)
    assert grid.size[0] == 4 * 260 and grid.size[1] > 2 * 96
    assert grid.getpixel((130, 50))[0] > 200  # the red crop is centred in the first cell


@pytest.mark.parametrize(
    "command, option",
    [
        ("ingest", "--source"),
        ("detect", "--min-short-side"),
        ("pose", "--min-visible"),
        ("caption", "--captioner"),
        ("filter", "--min-words"),
        ("export", "--license"),
        ("publish", "--repo"),
        ("templates-extract", "--llm"),
        ("templates-select", "--clusters"),
        ("status", "--work"),
    ],
)
def test_every_subcommand_has_help(command, option, capsys):
    from dataset_builders.webperson import cli

    with pytest.raises(SystemExit) as info:
        cli.main([command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: python -m dataset_builders.webperson {command}") and option in out


def test_cli_reports_bad_arguments(tmp_path, capsys):
    from dataset_builders.webperson import cli

    with pytest.raises(SystemExit):
        cli.main(["detect", "--work", str(tmp_path), "--shard", "2/2"])
    assert "--shard must be i/n" in capsys.readouterr().err
    assert (
        cli.main(["ingest", "--work", str(tmp_path), "--source", "folder", "--input", str(tmp_path / "nope")])
        == 2
    )
    assert "does not exist" in capsys.readouterr().err
    assert cli.main(["detect", "--work", str(tmp_path), "--detector", "yolo=x"]) == 2
    assert "unknown backend 'yolo'" in capsys.readouterr().err


# ----- properties ----------------------------------------------------------------------------------

_coord = st.floats(min_value=-50, max_value=1050, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(_coord, _coord, _coord, _coord, st.floats(0, 1), st.sampled_from(["person", "car"]))),
    st.integers(0, 3),
)
def test_selection_properties(raw, cap):
    detections = [det(min(a, c), min(b, d), max(a, c), max(b, d), s, label) for a, b, c, d, s, label in raw]
    rules = DetectionThresholds(max_per_image=cap)
    kept, rejected = select_person_boxes(detections, SIZE, rules)
    assert len(kept) + len(rejected) == len(detections)
    assert cap == 0 or len(kept) <= cap
    assert [d.score for d in kept] == sorted((d.score for d in kept), reverse=True)
    image = Image.new("RGB", SIZE)
    for detection in kept:
        crop, (x0, y0, x1, y1) = crop_box(image, detection.box)
        assert detection.label == "person" and detection.score > 0.85
        assert 0 <= x0 < x1 <= SIZE[0] and 0 <= y0 < y1 <= SIZE[1] and crop.size == (x1 - x0, y1 - y0)
        assert min(crop.size) > 90  # the clipped box's shorter side is above 90; rounding outwards only grows
        assert 0.25 - 0.02 < crop.size[0] / crop.size[1] < 0.5 + 0.02
    for detection, reason in rejected:
        assert reason == "over_max_per_image" or box_reason(detection, SIZE, rules) == reason


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=17, max_size=17), st.floats(0, 1))
def test_pose_properties(values, visibility):
    reason, visible = pose_reason(values, PoseThresholds(visibility=visibility))
    flags = [v >= visibility for v in values]
    assert visible == sum(flags)
    ok = visible >= 8 and sum(flags[11:13]) >= 1 and sum(flags[0:5]) >= 2
    assert (reason is None) == ok


# ----- folder source: links and unreadable entries -------------------------------------------------
def test_folder_source_records_symlink_loops_and_unreadable_entries(tmp_path, monkeypatch):
    """Nothing under the source folder is dropped without a record: links that loop, folders that cannot
    be listed and broken links come into the reject log with a reason; links to folders elsewhere are
    followed (before: files behind any link to a folder vanished, and so did the loops)."""
    import os

    from dataset_builders.webperson.ingest import ingest
    from dataset_builders.webperson.shards import StageStore
    from dataset_builders.webperson.sources import folder_source

    pool, elsewhere = tmp_path / "pool", tmp_path / "elsewhere"
    for index, path in enumerate(
        [pool / "a.jpg", pool / "cam1" / "b.jpg", pool / "locked" / "c.jpg", elsewhere / "d.png"]
    ):
        path.parent.mkdir(parents=True, exist_ok=True)
        color = (40 * index, 200 - 40 * index, 90)
        fmt = "PNG" if path.suffix == ".png" else "JPEG"
        path.write_bytes(_bytes(Image.new("RGB", (100, 200), color), fmt))
    (pool / "cam1" / "back").symlink_to("../cam1")  # a loop: cam1/back/back/...
    (pool / "self").symlink_to(pool)  # a loop to the source folder itself
    (pool / "ping").symlink_to("pong")  # two links naming each other: ELOOP
    (pool / "pong").symlink_to("ping")
    (pool / "gone.jpg").symlink_to("no_such_file.jpg")  # a broken link
    (pool / "notes.txt").symlink_to("no_such_file.txt")  # not an image: nothing to record
    (pool / "more").symlink_to(elsewhere)  # a folder elsewhere: followed
    real_scandir = os.scandir

    def scandir(path):
        if os.path.basename(path) == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)  # (chmod 000 does not stop root)
    keys = [item.key for item in folder_source(pool)]
    assert keys == [
        "a.jpg", "cam1/b.jpg", "cam1/back", "gone.jpg", "locked", "more/d.png", "ping", "pong", "self"
    ]  # fmt: skip
    manifest = ingest(folder_source(pool), tmp_path / "work", shard_size=4, workers=1, progress=False)
    assert manifest["kept"] == 3
    assert manifest["rejected"] == {"symlink_loop": 4, "unreadable": 2}
    store = StageStore(tmp_path / "work", "ingest")
    rejects = {r["id"]: r for name in store.done_names() for r in store.rejections(name)}
    assert {key: r["reason"] for key, r in rejects.items()} == {
        "cam1/back": "symlink_loop",
        "self": "symlink_loop",
        "ping": "symlink_loop",
        "pong": "symlink_loop",
        "gone.jpg": "unreadable",
        "locked": "unreadable",
    }
    assert "leads back to the source folder" in rejects["self"]["detail"]
    assert "leads back to cam1" in rejects["cam1/back"]["detail"]
    assert "broken link -> no_such_file.jpg" in rejects["gone.jpg"]["detail"]
    assert "cannot be listed" in rejects["locked"]["detail"]


def test_retry_after_values():
    from email.utils import format_datetime
    from datetime import datetime, timedelta, timezone

    from dataset_builders.webperson.retry import retry_after

    assert retry_after("3") == 3.0 and retry_after("-2") == 0.0 and retry_after(" 1.5 ") == 1.5
    assert retry_after(None) is None and retry_after("soon") is None
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past: at once
    later = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=60), usegmt=True)
    assert 55 < retry_after(later) <= 60


def test_url_fetch_retries_server_errors_only(monkeypatch):
    import httpx

    from dataset_builders.webperson import retry, sources

    delays, calls = [], []
    monkeypatch.setattr(retry.time, "sleep", delays.append)
    replies = {
        "http://x/busy.jpg": [httpx.Response(503, headers={"Retry-After": "1"}), httpx.Response(429),
                              httpx.Response(200, content=b"img")],
        "http://x/gone.jpg": [httpx.Response(404)],
        "http://x/down.jpg": [httpx.ConnectError("refused")] * 3,
        "not-a-url": [httpx.UnsupportedProtocol("Request URL is missing an 'http://' protocol.")],
    }

    def get(url, **options):
        calls.append(url)
        reply = replies[url].pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply

    monkeypatch.setattr(sources.httpx, "get", get)
    assert sources._fetch("http://x/busy.jpg", 1.0, 2, "ua") == b"img"
    assert delays == pytest.approx([1.0, 0.4])  # Retry-After, then the backoff (0.2, doubled)
    with pytest.raises(sources.DownloadError, match="HTTP 404") as info:
        sources._fetch("http://x/gone.jpg", 1.0, 2, "ua")
    assert info.value.reason == "download_failed"
    with pytest.raises(sources.DownloadError, match="ConnectError: refused"):
        sources._fetch("http://x/down.jpg", 1.0, 2, "ua")
    with pytest.raises(sources.DownloadError, match="download_failed"):
        sources._fetch("not-a-url", 1.0, 2, "ua")  # not a URL: no retry
    assert calls == (
        ["http://x/busy.jpg"] * 3 + ["http://x/gone.jpg"] + ["http://x/down.jpg"] * 3 + ["not-a-url"]
    )
    assert len(delays) == 4
