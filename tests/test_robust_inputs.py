"""Nothing lost, nothing silently wrong: unreadable, huge and rotated images in every reader.

- ``gadms_utils.image_io.open_image``: EXIF orientation, the decoded-pixel limit (JPEG drafted, other
  formats refused from their header), PIL's own bomb check replaced by it, ``to_rgb`` shared with WebPerson;
- ``embed_images(skipped=[])``: unreadable images reported instead of raised;
- training: a zero-byte image in the validation (and test) split is skipped and reported, the epoch's
  checkpoint is written;
- ``gadms index`` on six 12000x12000 PNGs stays small.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from gadms_utils import image_io
from gadms_utils.image_io import ImageTooLarge, UnreadableImage, open_image, to_rgb

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

ORIENTATION = 0x0112


def _asymmetric(size=(48, 24)) -> Image.Image:
    """An RGB image whose left quarter is blue, the rest red: any rotation or flip shows."""
    image = Image.new("RGB", size, (220, 20, 20))
    image.paste((20, 20, 220), (0, 0, size[0] // 4, size[1]))
    return image


def _with_orientation(image: Image.Image, orientation: int, fmt: str = "JPEG") -> bytes:
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    buffer = io.BytesIO()
    image.save(buffer, fmt, exif=exif, **({"quality": 95} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def _blue_side(image: Image.Image) -> str:
    """Which border of ``image`` is blue: ``left``, ``right``, ``top`` or ``bottom``."""
    w, h = image.size
    probes = {"left": (1, h // 2), "right": (w - 2, h // 2), "top": (w // 2, 1), "bottom": (w // 2, h - 2)}
    def is_blue(xy):
        red, _, blue = image.getpixel(xy)
        return blue > 150 and red < 100

    blue = [side for side, xy in probes.items() if is_blue(xy)]
    assert len(blue) == 1, (blue, image.size)
    return blue[0]


# ------------------------------------------------------------------------------------------------
# EXIF orientation


@pytest.mark.parametrize("orientation, side", [(1, "left"), (6, "top"), (8, "bottom"), (3, "right")])
def test_open_image_applies_exif_orientation(tmp_path, orientation, side):
    data = _with_orientation(_asymmetric(), orientation)
    path = tmp_path / "photo.jpg"
    path.write_bytes(data)
    rotated = orientation in (6, 8)
    for item in (path, str(path), {"bytes": data, "path": None}, {"bytes": None, "path": str(path)},
                 Image.open(io.BytesIO(data))):  # fmt: skip
        image = open_image(item)
        assert image.mode == "RGB"
        assert image.size == ((24, 48) if rotated else (48, 24)), item
        assert _blue_side(image) == side, item
        assert image.getexif().get(ORIENTATION, 1) == 1  # applied once: the tag is gone
        assert open_image(image).size == image.size  # reading the result again does not turn it again


def test_exif_orientation_in_training_evaluation_and_index(tmp_path, tiny_gadms_dir):
    """The readers of training (`load_image`), evaluation (`embed_images`) and the index all see the
    upright image: the same pixels, hence the same embedding, as the image stored upright."""
    from evaluation.embedding import embed_images, load_model_and_processor
    from retrieval.index import GalleryIndex
    from training.data import load_image

    upright = _asymmetric((48, 24)).transpose(Image.Transpose.ROTATE_270)  # what orientation 6 shows
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "phone.jpg").write_bytes(_with_orientation(_asymmetric((48, 24)), 6))
    reference = open_image({"bytes": _with_orientation(_asymmetric((48, 24)), 1), "path": None})
    reference = reference.transpose(Image.Transpose.ROTATE_270)  # decoded JPEG pixels, turned by hand
    assert _blue_side(upright) == "top" == _blue_side(reference)

    trained = load_image({"bytes": (folder / "phone.jpg").read_bytes(), "path": "phone.jpg"})
    assert trained.size == (24, 48) and _blue_side(trained) == "top"

    model, processor = load_model_and_processor(tiny_gadms_dir)
    expected = embed_images(model, processor, [reference], progress=False)
    evaluated = embed_images(model, processor, [folder / "phone.jpg"], progress=False)
    torch.testing.assert_close(evaluated, expected, atol=2e-3, rtol=0)
    stored = Image.open(folder / "phone.jpg")
    sideways = Image.frombytes("RGB", stored.size, stored.convert("RGB").tobytes())  # no EXIF
    wrong = embed_images(model, processor, [sideways], progress=False)
    assert not torch.allclose(wrong, expected, atol=2e-3)  # the stored (sideways) pixels embed differently

    index, skipped = GalleryIndex.build(model, processor, folder, model_id=str(tiny_gadms_dir),
                                        progress=False)
    assert not skipped
    normalised = torch.nn.functional.normalize(expected, dim=-1)
    torch.testing.assert_close(index.embeddings.float(), normalised, atol=5e-3, rtol=0)


# ------------------------------------------------------------------------------------------------
# the pixel limit


def test_to_rgb_is_shared_with_webperson():
    from dataset_builders.webperson import images as webperson_images

    assert webperson_images.to_rgb is to_rgb
    assert webperson_images.ImageLimits().max_pixels == image_io.DEFAULT_MAX_PIXELS == 64_000_000
    rgba = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert to_rgb(rgba).getpixel((0, 0)) == (255, 255, 255)  # alpha on white
    grey16 = Image.new("I;16", (4, 4), 65535)
    assert to_rgb(grey16).getpixel((0, 0)) == (255, 255, 255)


def _png(size, colour=(40, 90, 200), mode="RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, colour if mode == "RGB" else 7).save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def test_limit_refuses_before_decoding_and_drafts_jpeg(tmp_path, monkeypatch):
    monkeypatch.delenv(image_io.MAX_PIXELS_ENV, raising=False)
    png = tmp_path / "wide.png"
    png.write_bytes(_png((3000, 2000)))  # 6 MP
    with pytest.raises(ImageTooLarge) as info:
        open_image(png, max_pixels=5_000_000)
    error = info.value
    assert isinstance(error, OSError) and str(png) in str(error) and "3000x2000" in str(error)
    assert error.size == (3000, 2000) and error.max_pixels == 5_000_000
    assert open_image(png, max_pixels=6_000_000).size == (3000, 2000)

    # the environment variable, read at each call; the argument wins over it
    monkeypatch.setenv(image_io.MAX_PIXELS_ENV, "5_000_000")
    with pytest.raises(ImageTooLarge):
        open_image(png)
    assert open_image(png, max_pixels=7_000_000).size == (3000, 2000)
    monkeypatch.setenv(image_io.MAX_PIXELS_ENV, "none")
    assert open_image(png).size == (3000, 2000)
    monkeypatch.setenv(image_io.MAX_PIXELS_ENV, "lots")
    with pytest.raises(ValueError, match=image_io.MAX_PIXELS_ENV):
        open_image(png)
    monkeypatch.delenv(image_io.MAX_PIXELS_ENV)
    monkeypatch.setattr(image_io, "DEFAULT_MAX_PIXELS", 1_000_000)  # the module default, changeable
    with pytest.raises(ImageTooLarge):
        open_image(png)
    monkeypatch.setattr(image_io, "DEFAULT_MAX_PIXELS", 64_000_000)

    # a JPEG over the limit is decoded at 1/2, 1/4 or 1/8 scale, the largest that fits
    jpeg = tmp_path / "big.jpg"
    Image.new("RGB", (4000, 3000), (10, 200, 30)).save(jpeg, quality=90)  # 12 MP
    assert open_image(jpeg, max_pixels=12_000_000).size == (4000, 3000)
    assert open_image(jpeg, max_pixels=5_000_000).size == (2000, 1500)
    assert open_image(jpeg, max_pixels=1_000_000).size == (1000, 750)
    assert open_image(jpeg, max_pixels=200_000).size == (500, 375)
    with pytest.raises(ImageTooLarge):
        open_image(jpeg, max_pixels=100_000)  # even 1/8 is too large
    # EXIF orientation after the draft
    drafted = open_image(_with_orientation(_asymmetric((4000, 2000)), 8), max_pixels=2_000_000)
    assert drafted.size == (1000, 2000) and _blue_side(drafted) == "bottom"


def test_our_limit_replaces_pils_bomb_check(tmp_path, monkeypatch):
    """PIL warns above Image.MAX_IMAGE_PIXELS and refuses above twice that; our limit is the one in force."""
    import warnings

    png = tmp_path / "p.png"
    png.write_bytes(_png((1000, 1000)))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 200_000)  # PIL would raise DecompressionBombError
    with pytest.raises(Image.DecompressionBombError):
        Image.open(png)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert open_image(png, max_pixels=2_000_000).size == (1000, 1000)
    assert Image.MAX_IMAGE_PIXELS == 200_000  # restored


def test_unreadable_images_raise_oserror_naming_the_file(tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(UnreadableImage, match="empty.jpg: empty file") as info:
        open_image(empty)
    assert isinstance(info.value, OSError) and info.value.reason == "empty file (0 bytes)"
    with pytest.raises(OSError, match="cannot read image <bytes>"):
        open_image({"bytes": b"not an image", "path": None})
    with pytest.raises(OSError, match="missing.jpg"):
        open_image(tmp_path / "missing.jpg")
    truncated = tmp_path / "cut.jpg"
    Image.new("RGB", (64, 64), (1, 2, 3)).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:200])
    with pytest.raises(OSError, match="cut.jpg"):
        open_image(truncated)
    import pickle  # survives the trip back from a data-loader worker

    again = pickle.loads(pickle.dumps(info.value))
    assert type(again) is UnreadableImage and str(again) == str(info.value)
    assert again.reason == info.value.reason


def test_embed_images_skips_and_reports_unreadable_images(tmp_path, tiny_gadms_dir):
    from evaluation.embedding import embed_images, load_model_and_processor

    model, processor = load_model_and_processor(tiny_gadms_dir)
    good = []
    for i in range(4):
        path = tmp_path / f"ok{i}.png"
        Image.new("RGB", (32, 64), (60 * i, 20, 200 - 40 * i)).save(path)
        good.append(path)
    (tmp_path / "empty.png").write_bytes(b"")
    items = [good[0], tmp_path / "empty.png", good[1], good[2], {"bytes": b"junk", "path": None}, good[3]]
    with pytest.raises(OSError, match="empty.png"):
        embed_images(model, processor, items, batch_size=2, progress=False)
    skipped: list = []
    out = embed_images(model, processor, items, batch_size=2, progress=False, skipped=skipped)
    assert [index for index, _ in skipped] == [1, 4]
    assert skipped[0][1] == "empty file (0 bytes)"
    torch.testing.assert_close(out, embed_images(model, processor, good, batch_size=3, progress=False))
    skipped = []
    assert embed_images(model, processor, items[1:2], progress=False, skipped=skipped).numel() == 0
    assert len(skipped) == 1


def test_evaluate_split_drops_unreadable_gallery_images(tiny_gadms_dir):
    import datasets

    from evaluation import RetrievalSplit, embed_texts, retrieval_metrics
    from evaluation.embedding import embed_images, load_model_and_processor
    from training.validation import evaluate_split

    model, processor = load_model_and_processor(tiny_gadms_dir)

    def jpeg(colour):
        buffer = io.BytesIO()
        Image.new("RGB", (32, 64), colour).save(buffer, "JPEG")
        return buffer.getvalue()

    ids = [1, 1, 2, 3, 3]
    images = [{"bytes": jpeg((40 * i, 30, 90)), "path": f"img{i}.jpg"} for i in range(5)]
    images[2]["bytes"] = b""  # person 2's only image
    images[4]["bytes"] = images[4]["bytes"][:30]  # truncated: person 3 keeps image 3
    gallery = datasets.Dataset.from_dict({"image": images, "person_id": ids},
                                         features=datasets.Features({"image": datasets.Image(),
                                                                     "person_id": datasets.Value("int64")}))
    captions = ["a man in a red coat", "a woman with a bag", "a person in black", "a man with glasses"]
    queries = datasets.Dataset.from_dict({"caption": captions, "person_id": [1, 2, 3, 3]})
    metrics = evaluate_split(model, processor, RetrievalSplit(gallery=gallery, queries=queries), batch_size=2)
    assert metrics["num_images"] == 3 and metrics["skipped_images"] == 2
    assert metrics["num_queries"] == 3 and metrics["skipped_queries"] == 1
    assert len(metrics["skipped_files"]) == 2
    assert metrics["skipped_files"][0].startswith("img2.jpg: empty file")
    assert metrics["skipped_files"][1].startswith("img4.jpg: ")
    json.dumps(metrics)  # the trainer logs it as JSON
    kept = [images[i] for i in (0, 1, 3)]
    texts = embed_texts(model, processor, [captions[i] for i in (0, 2, 3)], progress=False)
    gallery_embeds = embed_images(model, processor, kept, progress=False)
    expected = retrieval_metrics(texts, gallery_embeds, [1, 3, 3], [1, 1, 3])
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value, abs=1e-6)


# ------------------------------------------------------------------------------------------------
# training: a zero-byte validation image


def _blank_one_image(data_dir: Path, split: str) -> str:
    """Replace the bytes of the first image of ``split``'s parquet shard(s) with b"": returns its path."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    shard = sorted((data_dir / "data").glob(f"{split}-*.parquet"))[0]
    table = pq.read_table(shard)
    rows = table.to_pylist()
    rows[0]["image"] = {"bytes": b"", "path": rows[0]["image"]["path"]}
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), shard)
    return rows[0]["image"]["path"]


def test_training_survives_a_zero_byte_validation_image(tmp_path):
    import yaml

    from dataset_builders.synthetic import SyntheticPersonConfig, write_webperson
    from training.pretrain import main

    config = SyntheticPersonConfig(num_identities=10, images_per_identity=2, image_size=(64, 32), seed=1,
                                   split_fractions=(0.6, 0.2, 0.2))
    data = write_webperson(config, tmp_path / "webperson")
    broken_val = _blank_one_image(data, "validation")
    broken_test = _blank_one_image(data, "test")
    out = tmp_path / "out"
    settings = {"objective": "gadms", "model": "tiny", "image_size": [64, 32], "epochs": 1, "batch_size": 6,
                "learning_rate": 1.0e-3, "warmup_epochs": 0.5, "log_every_steps": 1, "eval_batch_size": 64,
                "seed": 3, "data": str(data), "output_dir": str(out)}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(settings))
    results = main(["--config", str(tmp_path / "c.yaml")])

    assert [p.name for p in (out / "checkpoints").iterdir()]  # the epoch's checkpoint was written
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    validation = next(r for r in log if "val_R1" in r)
    assert validation["val_skipped_images"] == 1 and validation["val_num_images"] == 3
    assert validation["val_skipped_files"] == [f"{broken_val}: empty file (0 bytes)"]
    summary = json.loads((out / "results.json").read_text())
    for entry in (results["last"], summary["last"], summary["best"]):
        assert entry["skipped_images"] == 1 and entry["num_images"] == 3
        assert entry["skipped_files"] == [f"{broken_test}: empty file (0 bytes)"]
        assert 0 <= entry["R1"] <= 100


# ------------------------------------------------------------------------------------------------
# memory: `gadms index` on huge PNGs


@pytest.mark.skipif(not (BIN / "gadms").exists(), reason="the gadms console script is not installed")
def test_index_of_huge_pngs_stays_small(tmp_path, tiny_gadms_dir):
    """Six 12000x12000 PNGs (a few hundred KB on disk, 432 MB each decoded): listed as too large, and
    the peak memory of `gadms index` stays under 1.5 GB."""
    folder = tmp_path / "photos"
    folder.mkdir()
    big = Image.new("RGB", (12000, 12000), (200, 30, 60))
    big.save(folder / "huge0.png", compress_level=1)
    del big
    for i in range(1, 6):
        shutil.copyfile(folder / "huge0.png", folder / f"huge{i}.png")
    Image.new("RGB", (32, 64), (10, 20, 30)).save(folder / "small.png")
    out = tmp_path / "index"
    measure = ("import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
               "print('MAXRSS_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, code)")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO)}  # fmt: skip
    env.pop(image_io.MAX_PIXELS_ENV, None)
    proc = subprocess.run(
        [sys.executable, "-c", measure, str(BIN / "gadms"), "index", "--model", str(tiny_gadms_dir),
         "--images", str(folder), "--out", str(out), "--device", "cpu"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    line = next(line for line in proc.stdout.splitlines() if line.startswith("MAXRSS_KB"))
    _, kilobytes, code = line.split()
    assert int(code) == 0, proc.stderr[-3000:]
    assert int(kilobytes) < 1.5 * 1024 * 1024, f"peak RSS {int(kilobytes) / 1024:.0f} MB"
    from retrieval.index import SKIPPED_FILE, GalleryIndex

    skipped = (out / SKIPPED_FILE).read_text()  # the unreadable files, each with its reason
    for i in range(6):
        assert f"huge{i}.png" in skipped
    assert "too large" in skipped and "12000x12000" in skipped
    assert GalleryIndex.load(out).paths == ["small.png"]


def test_limit_applies_to_an_opened_but_undecoded_pil_image(tmp_path):
    png = tmp_path / "wide.png"
    png.write_bytes(_png((3000, 2000)))
    with pytest.raises(ImageTooLarge, match="wide.png"):
        open_image(Image.open(png), max_pixels=5_000_000)
    jpeg = tmp_path / "big.jpg"
    Image.new("RGB", (4000, 3000), (10, 200, 30)).save(jpeg, quality=90)
    assert open_image(Image.open(jpeg), max_pixels=5_000_000).size == (2000, 1500)
    decoded = Image.open(png)
    decoded.load()  # already decoded: nothing left to save, so it is only converted
    assert open_image(decoded, max_pixels=5_000_000).size == (3000, 2000)


def test_undecoded_images_defers_decoding_to_the_batch(tmp_path):
    """A `datasets` image column comes back undecoded (so `embed_images` decodes each image in its batch and
    skips a corrupt one); other inputs come back as they are."""
    import datasets

    from evaluation.embedding import undecoded_images

    good = io.BytesIO()
    Image.new("RGB", (8, 16), (200, 10, 10)).save(good, format="PNG")
    table = datasets.Dataset.from_dict({"image": [{"bytes": good.getvalue(), "path": "good.png"},
                                                  {"bytes": b"not an image", "path": "bad.png"}]},
                                       features=datasets.Features({"image": datasets.Image()}))
    items = undecoded_images(table)
    assert [item["path"] for item in items] == ["good.png", "bad.png"]
    assert items[0]["bytes"] == good.getvalue()
    assert table.features["image"].decode  # the table itself is not changed
    paths = {"image": ["a.jpg", "b.jpg"]}
    assert undecoded_images(paths) == ["a.jpg", "b.jpg"]
    already = table.cast_column("image", datasets.Image(decode=False))
    assert undecoded_images(already) == items
