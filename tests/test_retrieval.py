"""The retrieval package and the ``gadms`` CLI: index (with --update), search (torch and FAISS), explain."""

import base64
import contextlib
import importlib.util
import io
import json
import os
import re
import shutil
import sys
from html import escape as html_escape
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from filelock import FileLock
from markupsafe import escape as markup_escape
from PIL import Image
from safetensors.torch import save_file

import retrieval.index
import retrieval.search
from gadms_utils.image_io import open_image
from retrieval.cli import main
from retrieval.explain import NotGADMSModelError, TokenScores, explain, render_html, render_terminal, save_png
from retrieval.index import (
    EMBEDDINGS_FILE,
    INDEX_FILE,
    LOCK_FILE,
    SKIPPED_FILE,
    DamagedIndexError,
    GalleryIndex,
    SearchHit,
    find_images,
    read_skipped,
    write_skipped,
)
from retrieval.render import THUMBNAIL_SIDE, html_page, render_hits_html, thumbnail_data_uri
from retrieval.search import (
    CANDIDATE_EXTRA,
    build_faiss_index,
    describe_faiss_index,
    exact_topk,
    faiss_topk,
    import_faiss,
    resolve_backend,
)

needs_faiss = pytest.mark.skipif(importlib.util.find_spec("faiss") is None, reason="faiss is not installed")

CAPTION = "a man in a black jacket with a backpack"


def _write_image(path, seed, mode="RGB", size=(40, 90)):
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).convert(mode).save(path)


@pytest.fixture(scope="module")
def images_dir(tmp_path_factory):
    """12 small images (jpg/png/webp/bmp, RGB/L/RGBA, one subfolder), a corrupt .jpg, a hidden folder and
    a text file (the last two not indexed)."""
    root = tmp_path_factory.mktemp("images")
    formats = ["jpg", "png", "webp", "bmp", "jpeg", "PNG"]
    for i in range(12):
        folder = root / "cam2" if i % 4 == 0 else root
        ext = formats[i % 6]
        mode = "RGBA" if ext.lower() in ("png", "webp") and i % 3 else ("L", "RGB")[i % 2]
        _write_image(folder / f"p{i:02d}.{ext}", i, mode=mode, size=(30 + i, 70))
    (root / "broken.jpg").write_bytes(b"\x00not an image\xff" * 20)
    _write_image(root / ".thumbs" / "t.jpg", 99)
    (root / "notes.txt").write_text("not an image")
    return root


@pytest.fixture(scope="module")
def model_and_processor(tiny_gadms_dir):
    from modeling_gadms import GADMSModel, GADMSProcessor

    return GADMSModel.from_pretrained(tiny_gadms_dir).eval(), GADMSProcessor.from_pretrained(tiny_gadms_dir)


@pytest.fixture(scope="module")
def built_index(tiny_gadms_dir, images_dir, tmp_path_factory):
    """``gadms index`` run in-process: (index folder, its stdout)."""
    out = tmp_path_factory.mktemp("index") / "idx"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["index", "--model", str(tiny_gadms_dir), "--images", str(images_dir), "--out", str(out),
                     "--batch-size", "5", "--no-progress"])  # fmt: skip
    assert code == 0
    return out, stdout.getvalue()


def _reference_embeddings(model, processor, paths):
    images = [Image.open(p) for p in paths]
    with torch.no_grad():
        pixels = processor(images=images, return_tensors="pt")["pixel_values"]
        return F.normalize(model.get_image_features(pixel_values=pixels), dim=-1)


def _ranking(scores: np.ndarray) -> np.ndarray:
    """Indices by score descending, ties by index ascending (the rule both backends follow)."""
    return np.lexsort((np.arange(len(scores)), -scores))


def test_find_images(images_dir):
    found = find_images(images_dir)
    assert len(found) == 13 and "broken.jpg" in found and "cam2/p00.jpg" in found
    assert found == sorted(found) and not any(p.startswith(".") or p.endswith(".txt") for p in found)


def test_index_skips_corrupt_file_and_matches_reference(built_index, images_dir, model_and_processor):
    out, stdout = built_index
    index = GalleryIndex.load(out)
    assert len(index) == 12 and "broken.jpg" not in index.paths
    assert "broken.jpg" in stdout and "skipped 1" in stdout
    [(path, reason)] = read_skipped(out / SKIPPED_FILE)
    assert path == "broken.jpg" and reason
    assert index.root == str(images_dir.resolve()) and index.paths == sorted(index.paths)
    assert index.embeddings.dtype == torch.float16
    reference = _reference_embeddings(*model_and_processor, [index.image_path(i) for i in range(len(index))])
    torch.testing.assert_close(index.embeddings.float(), reference, atol=2e-3, rtol=0)
    torch.testing.assert_close(index.embeddings.float().norm(dim=-1), torch.ones(12), atol=2e-3, rtol=0)


def test_update_embeds_only_new_files_and_drops_vanished(
    tiny_gadms_dir, images_dir, built_index, tmp_path, monkeypatch, capsys
):
    images = tmp_path / "images"
    shutil.copytree(images_dir, images)
    out = tmp_path / "idx"
    shutil.copytree(built_index[0], out)
    before = GalleryIndex.load(out)
    before.root = str(images.resolve())
    before.save(out)  # the copied index now points at the copied folder
    (images / "p01.png").unlink()
    _write_image(images / "new" / "n1.jpg", 101)
    _write_image(images / "n2.png", 102)

    embedded = []
    real = retrieval.index.embed_images

    def counting(model, processor, items, **kwargs):
        embedded.extend(items)
        return real(model, processor, items, **kwargs)

    monkeypatch.setattr(retrieval.index, "embed_images", counting)
    args = ["--model", str(tiny_gadms_dir), "--images", str(images), "--out", str(out), "--update"]
    assert main(["index", *args, "--no-progress"]) == 0
    assert len(embedded) == 2  # the two new files; broken.jpg is retried and skipped again
    assert "2 new, 11 kept, 1 removed" in capsys.readouterr().out
    after = GalleryIndex.load(out)
    assert "p01.png" not in after.paths and {"new/n1.jpg", "n2.png"} <= set(after.paths)
    assert len(after) == 13 and after.paths == sorted(after.paths)
    for i, path in enumerate(before.paths):
        if path != "p01.png":
            assert torch.equal(after.embeddings[after.paths.index(path)], before.embeddings[i])


def test_update_refuses_another_model(tiny_gadms_dir, images_dir, built_index, tmp_path, capsys):
    other = tmp_path / "other_model"
    shutil.copytree(tiny_gadms_dir, other)
    out = tmp_path / "idx"
    shutil.copytree(built_index[0], out)
    code = main(["index", "--model", str(other), "--images", str(images_dir), "--out", str(out), "--update"])
    assert code == 1
    err = capsys.readouterr().err
    assert "built with model" in err and str(other) in err
    with pytest.raises(ValueError, match="built with model"):
        GalleryIndex.build(None, None, images_dir, model_id=str(other), existing=GalleryIndex.load(out))


def test_missing_images_dir_is_named(tiny_gadms_dir, tmp_path, capsys):
    missing = tmp_path / "no_such_folder"
    args = ["--model", str(tiny_gadms_dir), "--images", str(missing), "--out", str(tmp_path / "i")]
    assert main(["index", *args]) == 1
    assert f"images folder not found: {missing}" in capsys.readouterr().err
    assert main(["search", str(tmp_path / "nothing"), "a man"]) == 1
    assert "no index at" in capsys.readouterr().err


def _random_index(count, seed, dim=32):
    rows = F.normalize(torch.randn(count, dim, generator=torch.Generator().manual_seed(seed)), dim=-1)
    return GalleryIndex(rows.half(), [f"s{seed}/{i:03d}.jpg" for i in range(count)], f"/images{seed}", "m")


def _same(a, b):
    same_rows = torch.equal(a.embeddings, b.embeddings)
    return same_rows and (a.paths, a.root, a.model) == (b.paths, b.root, b.model)


def _crash_at_rename(monkeypatch, number):
    """Make the ``number``-th ``os.replace`` from now on raise, as a crash there would stop the save."""
    calls, real = [], os.replace

    def replace(src, dst):
        calls.append(dst)
        if len(calls) == number:
            raise OSError("simulated crash")
        return real(src, dst)

    monkeypatch.setattr(retrieval.index.os, "replace", replace)


@pytest.mark.parametrize("crash_at", [1, 2])
def test_an_interrupted_save_leaves_one_whole_index(tmp_path, monkeypatch, crash_at):
    """A crash at any rename of a save leaves the old index or the new one, never a mix of the two
    (before: the embeddings of one with the paths of the other, which every command rejected)."""
    old, new = _random_index(40, seed=1), _random_index(80, seed=2)
    old.save(tmp_path)
    _crash_at_rename(monkeypatch, crash_at)
    with pytest.raises(OSError, match="simulated crash"):
        new.save(tmp_path)
    monkeypatch.undo()
    loaded = GalleryIndex.load(tmp_path)
    assert _same(loaded, old if crash_at == 1 else new)
    new.save(tmp_path)  # the next save replaces what the crash left
    assert _same(GalleryIndex.load(tmp_path), new)
    assert sorted(p.name for p in tmp_path.iterdir()) == [EMBEDDINGS_FILE, INDEX_FILE]
    assert json.loads((tmp_path / INDEX_FILE).read_text())["paths"] == new.paths  # the readable copy


def _save_version_1(folder, index, crash=None):
    """What gadms wrote up to index version 1: two files, two renames (``crash``: stop before the
    ``"first"`` or the ``"second"`` rename)."""
    meta = {"format": "gadms-gallery-index", "version": 1, "model": index.model, "root": index.root,
            "count": len(index), "dim": index.dim, "paths": index.paths}  # fmt: skip
    partial_embeddings, partial_meta = folder / (EMBEDDINGS_FILE + ".tmp"), folder / (INDEX_FILE + ".tmp")
    save_file({"embeddings": index.embeddings}, str(partial_embeddings), metadata={"format": meta["format"],
              "model": index.model})  # fmt: skip
    partial_meta.write_text(json.dumps(meta, indent=1) + "\n")
    if crash != "first":
        os.replace(partial_embeddings, folder / EMBEDDINGS_FILE)
        if crash != "second":
            os.replace(partial_meta, folder / INDEX_FILE)


def test_load_reads_version_1_indexes_and_their_interrupted_saves(tmp_path):
    old, new = _random_index(40, seed=1), _random_index(80, seed=2)
    _save_version_1(tmp_path, old)
    assert _same(GalleryIndex.load(tmp_path), old)
    _save_version_1(tmp_path, new, crash="first")  # nothing renamed: still the old index
    assert _same(GalleryIndex.load(tmp_path), old)
    _save_version_1(tmp_path, new, crash="second")  # new embeddings, old index.json: the new index.json.tmp
    assert _same(GalleryIndex.load(tmp_path), new)
    (tmp_path / (INDEX_FILE + ".tmp")).unlink()  # nothing left to pair the 80 rows with: damaged, said so
    with pytest.raises(DamagedIndexError, match="rebuild the index with `gadms index`"):
        GalleryIndex.load(tmp_path)


def test_update_recovers_from_an_interrupted_save(
    tiny_gadms_dir, images_dir, built_index, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "idx"
    shutil.copytree(built_index[0], out)
    full = GalleryIndex.load(out)
    cut = GalleryIndex(full.embeddings[:5], full.paths[:5], full.root, full.model)
    _crash_at_rename(monkeypatch, 2)  # an update cut short after its first rename
    with pytest.raises(OSError, match="simulated crash"):
        cut.save(out)
    monkeypatch.undo()
    assert len(GalleryIndex.load(out)) == 5 and len(json.loads((out / INDEX_FILE).read_text())["paths"]) == 12
    args = ["--model", str(tiny_gadms_dir), "--images", str(images_dir), "--out", str(out), "--update"]
    assert main(["index", *args, "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert f"recovering {out} from an interrupted save" in printed
    assert "index.json.tmp" in printed and "index.json does not describe" in printed
    assert "7 new, 5 kept, 0 removed" in printed
    after = GalleryIndex.load(out)
    assert after.paths == full.paths and torch.equal(after.embeddings[:5], full.embeddings[:5])
    torch.testing.assert_close(after.embeddings.float(), full.embeddings.float(), atol=2e-3, rtol=0)
    assert json.loads((out / INDEX_FILE).read_text())["paths"] == full.paths
    assert not list(out.glob("*.tmp"))
    assert main(["index", *args, "--no-progress"]) == 0  # now whole: a plain update
    assert "recovering" not in capsys.readouterr().out


def test_index_refuses_a_folder_another_run_is_writing(
    tiny_gadms_dir, images_dir, built_index, tmp_path, capsys
):
    out = tmp_path / "idx"
    shutil.copytree(built_index[0], out)
    (out / EMBEDDINGS_FILE).unlink()  # whatever runs would write a new index here

    def files():
        return {p.name: p.read_bytes() for p in out.iterdir() if p.name != LOCK_FILE}

    before = files()
    args = ["index", "--model", str(tiny_gadms_dir), "--images", str(images_dir), "--out", str(out)]
    with FileLock(out / LOCK_FILE):  # another `gadms index` at work
        for update in ([], ["--update"]):
            assert main([*args, *update, "--no-progress"]) == 2
            err = capsys.readouterr().err
            assert f"another `gadms index` is writing {out} (it holds the lock {out / LOCK_FILE})" in err
            assert files() == before
    assert main([*args, "--no-progress"]) == 0  # released: the next run goes ahead
    assert len(GalleryIndex.load(out)) == 12


def test_skipped_list_keeps_file_names_with_newlines(tiny_gadms_dir, tmp_path, capsys):
    images = tmp_path / "images"
    _write_image(images / "ok.jpg", 1)
    odd = ["bad\nname.jpg", "tab\there.png", 'quote".jpg', "plain.jpg"]
    for name in odd:
        (images / name).write_bytes(b"not an image" * 10)
    out = tmp_path / "idx"
    out.mkdir()
    (out / "skipped.txt").write_text("stale.jpg\tfrom an older gadms\n")
    args = ["--model", str(tiny_gadms_dir), "--images", str(images), "--out", str(out), "--no-progress"]
    assert main(["index", *args]) == 0
    rows = [json.loads(line) for line in (out / SKIPPED_FILE).read_text(encoding="utf-8").split("\n") if line]
    assert sorted(row["path"] for row in rows) == sorted(odd) and all(row["reason"] for row in rows)
    assert read_skipped(out / SKIPPED_FILE) == [(row["path"], row["reason"]) for row in rows]
    assert not (out / "skipped.txt").exists()  # the old list is out of date: removed
    assert json.dumps("bad\nname.jpg") in capsys.readouterr().out  # printed on one line
    write_skipped(out / SKIPPED_FILE, [])
    assert read_skipped(out / SKIPPED_FILE) == [] and (out / SKIPPED_FILE).read_bytes() == b""


@needs_faiss
@pytest.mark.parametrize("seed, shards", [(0, 1), (1, 2), (2, 3), (3, None)])
def test_torch_and_faiss_agree_with_bruteforce(seed, shards):
    generator = torch.Generator().manual_seed(seed)
    gallery = F.normalize(torch.randn(401, 24, generator=generator), dim=-1).half()  # odd: unequal shards
    gallery[50:90] = gallery[3]  # 41 equal rows: ties past the first k + CANDIDATE_EXTRA candidates
    gallery[300] = gallery[7]
    queries = torch.randn(6, 24, generator=generator)
    queries[0], queries[1] = gallery[3].float() * 2, gallery[7].float()  # (queries are normalised)
    k = 10
    assert 41 > k + CANDIDATE_EXTRA
    index = build_faiss_index(gallery, shards=shards)
    assert index.ntotal == 401 and index.count() == (shards or max(1, import_faiss().omp_get_max_threads()))
    # with 2 or 3 shards (bounds 200; 133, 267), the tied rows 7 and 300 lie in different shards
    torch_scores, torch_indices = exact_topk(gallery, queries, k)
    faiss_scores, faiss_indices = faiss_topk(gallery, queries, k, index=index)
    assert torch_indices.shape == (6, k) and torch_scores.dtype == torch.float32
    assert torch.equal(torch_indices, faiss_indices)
    assert torch.equal(torch_scores, faiss_scores)  # bit-identical: the same exact rescoring
    reference = gallery.double().numpy() @ F.normalize(queries, dim=-1).double().numpy().T
    for j in range(len(queries)):
        expected = _ranking(reference[:, j])[:k]
        assert torch_indices[j].tolist() == expected.tolist()
        np.testing.assert_allclose(torch_scores[j].numpy(), reference[expected, j], atol=1e-6)
    assert torch_indices[0].tolist() == [3] + list(range(50, 59))  # ties: lowest indices first
    assert torch_indices[1, :2].tolist() == [7, 300]
    float32 = exact_topk(gallery, queries, k, dtype=torch.float32, chunk_size=37)  # converted in chunks
    assert torch.equal(float32[1], torch_indices) and torch.equal(float32[0], torch_scores)


@needs_faiss
def test_k_larger_than_gallery_and_empty_gallery():
    gallery = F.normalize(torch.randn(7, 16), dim=-1).half()
    gallery[5] = gallery[1]  # a tie, across shards when there are 2 or more
    queries = torch.randn(3, 16)
    queries[0] = gallery[1].float()
    expected = exact_topk(gallery, queries, 50)
    assert expected[0].shape == expected[1].shape == (3, 7)
    assert all(sorted(row) == list(range(7)) for row in expected[1].tolist())
    assert expected[1][0, :2].tolist() == [1, 5]
    for shards in (None, 1, 2, 7, 100):  # 100: capped at one row a shard
        index = build_faiss_index(gallery, shards=shards)
        if shards is not None:
            assert index.count() == min(shards, 7) and index.ntotal == 7
        scores, indices = faiss_topk(gallery, queries, 50, index=index)
        assert torch.equal(indices, expected[1]) and torch.equal(scores, expected[0])
    assert torch.equal(faiss_topk(gallery, queries, 50)[1], expected[1])  # index built on the fly
    for fn in (exact_topk, faiss_topk):
        scores, indices = fn(torch.empty(0, 16, dtype=torch.float16), queries, 5)
        assert scores.shape == indices.shape == (3, 0)


@needs_faiss
def test_faiss_index_is_sharded_fp16_with_global_ids():
    faiss = import_faiss()
    gallery = F.normalize(torch.randn(101, 8, generator=torch.Generator().manual_seed(0)), dim=-1).half()
    index = build_faiss_index(gallery, shards=2)
    assert isinstance(index, faiss.IndexShards) and index.count() == 2 and index.ntotal == 101
    assert [index.at(s).ntotal for s in range(2)] == [50, 51]  # contiguous slices
    for s in range(2):
        shard = faiss.downcast_index(index.at(s))
        assert isinstance(shard, faiss.IndexScalarQuantizer)
        assert shard.sq.qtype == faiss.ScalarQuantizer.QT_fp16
        assert shard.metric_type == faiss.METRIC_INNER_PRODUCT
    # Labels are global row indices, and the float16 storage is lossless: each row finds itself first with
    # its own squared norm (in float32 arithmetic) as its score.
    rows = gallery.float().numpy()
    distances, labels = index.search(rows, 1)
    assert labels[:, 0].tolist() == list(range(101))
    np.testing.assert_allclose(distances[:, 0], (rows * rows).sum(1), rtol=0, atol=1e-6)
    description = describe_faiss_index(index)
    assert "IndexShards of 2 x IndexScalarQuantizer (QT_fp16)" in description and "101 vectors" in description
    default = build_faiss_index(gallery)
    assert default.count() == max(1, min(faiss.omp_get_max_threads(), 101))


@needs_faiss
def test_faiss_range_fallback_over_shards(monkeypatch):
    """Long near-tie runs take the range-search path, which must search every shard with global labels."""
    gallery = F.normalize(torch.randn(99, 8, generator=torch.Generator().manual_seed(0)), dim=-1).half()
    gallery[10:60:2] = gallery[4]  # 26 equal rows (with row 4), in shards 0 and 1 (bounds 33, 66)
    query = gallery[4].float()
    index = build_faiss_index(gallery, shards=3)
    calls = []
    real = retrieval.search._faiss_range_candidates

    def spy(*args):
        calls.append(real(*args))
        return calls[-1]

    monkeypatch.setattr(retrieval.search, "_faiss_range_candidates", spy)
    scores, indices = faiss_topk(gallery, query, 3, index=index)
    assert len(calls) == 1 and {4, *range(10, 60, 2)} <= set(calls[0].tolist())
    expected = exact_topk(gallery, query, 3)
    assert torch.equal(indices, expected[1]) and torch.equal(scores, expected[0])
    assert indices[0].tolist() == [4, 10, 12]


@needs_faiss
def test_faiss_with_float32_gallery_matches_torch():
    """A gallery that is not float16 is rounded in the float16 index; the wider tolerance keeps the results
    exact."""
    generator = torch.Generator().manual_seed(5)
    gallery = F.normalize(torch.randn(301, 32, generator=generator), dim=-1)
    queries = torch.randn(8, 32, generator=generator)
    expected = exact_topk(gallery, queries, 10)
    scores, indices = faiss_topk(gallery, queries, 10, index=build_faiss_index(gallery, shards=2))
    assert torch.equal(indices, expected[1]) and torch.equal(scores, expected[0])


@needs_faiss
def test_gallery_index_backends_and_auto_threshold(monkeypatch):
    embeddings = F.normalize(torch.randn(300, 16), dim=-1).half()
    index = GalleryIndex(embeddings, [f"{i}.jpg" for i in range(300)], "/x", "m")
    queries = torch.randn(4, 16)
    expected = index.search(queries, k=5, backend="torch")
    assert resolve_backend("auto", len(index)) == "torch"
    monkeypatch.setattr(retrieval.search, "FAISS_THRESHOLD", 100)
    assert resolve_backend("auto", len(index)) == "faiss"
    built = []

    def counting(gallery):
        built.append(len(gallery))
        return build_faiss_index(gallery)

    monkeypatch.setattr(retrieval.index, "build_faiss_index", counting)
    for backend in ("auto", "faiss", "faiss"):
        scores, indices = index.search(queries, k=5, backend=backend)
        assert torch.equal(indices, expected[1]) and torch.equal(scores, expected[0])
    assert built == [300]  # built once, then cached on the GalleryIndex
    assert index._faiss_index is not None and index._faiss_index.ntotal == 300
    with pytest.raises(ValueError, match="unknown backend"):
        index.search(queries, backend="annoy")


def test_missing_faiss_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # makes `import faiss` fail
    with pytest.raises(ImportError, match=r"gadms\[search\]"):
        import_faiss()
    with pytest.raises(ImportError, match=r"gadms\[search\]"):
        faiss_topk(torch.eye(3), torch.eye(3), 1)
    with pytest.warns(UserWarning, match="not installed"):
        assert resolve_backend("auto", 10**6) == "torch"
    # `--ivf always` without FAISS fails before any picture is embedded
    calls = []
    monkeypatch.setattr("retrieval.index._embed_files", lambda *args, **kwargs: calls.append(1))
    with pytest.raises(ImportError, match=r"gadms\[search\]"):
        GalleryIndex.build(None, None, Path("."), model_id="m", ivf="always")
    assert calls == []


@needs_faiss
def test_search_cli_matches_bruteforce_and_writes_html(built_index, model_and_processor, tmp_path, capsys):
    out, _ = built_index
    html = tmp_path / "pages" / "results.html"
    for backend in ("torch", "faiss"):
        assert main(["search", str(out), CAPTION, "-k", "20", "--html", str(html), "--backend", backend]) == 0
        printed = capsys.readouterr().out.splitlines()
        lines = [line.split(maxsplit=2) for line in printed if not line.startswith("wrote")]
        index = GalleryIndex.load(out)
        model, processor = model_and_processor
        with torch.no_grad():
            text = model.get_text_features(**processor(text=[CAPTION], return_tensors="pt"))
        reference = index.embeddings.double().numpy() @ F.normalize(text, dim=-1)[0].double().numpy()
        order = _ranking(reference)
        assert len(lines) == 12  # k > N: every image
        assert [int(rank) for rank, _, _ in lines] == list(range(1, 13))
        assert [path for _, _, path in lines] == [str(index.image_path(i).resolve()) for i in order]
        np.testing.assert_allclose([float(score) for _, score, _ in lines], reference[order], atol=1e-4)
    page = html.read_text()
    assert page.startswith("<!doctype html>") and page.count("<img ") == 12
    for i in range(len(index)):  # each image links to its original file
        assert f'href="{html_escape(index.image_path(i).resolve().as_uri())}"' in page
    assert f'<b>#1</b> <span class="score">{lines[0][1]}</span>' in page


class _Links(HTMLParser):
    """The ``src`` of every ``<img>`` and the ``href`` of every ``<a>`` of a page, in order."""

    def __init__(self):
        super().__init__()
        self.srcs, self.hrefs = [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.srcs.append(attrs.get("src"))
        elif tag == "a":
            self.hrefs.append(attrs.get("href"))


def _links(page: str) -> _Links:
    parser = _Links()
    parser.feed(page)
    return parser


def _data_image(uri: str) -> Image.Image:
    prefix = "data:image/jpeg;base64,"
    assert uri.startswith(prefix)
    image = Image.open(io.BytesIO(base64.b64decode(uri[len(prefix) :], validate=True)))
    image.load()
    assert image.format == "JPEG"
    return image


def test_search_html_page_is_self_contained(built_index, tmp_path, capsys):
    """The page carries its images (JPEG data: URIs) and still shows them after being moved; each hit links
    to its original file and shows its score and path (before: image sources relative to the page)."""
    out, _ = built_index
    written = tmp_path / "pages" / "results.html"
    assert main(["search", str(out), CAPTION, "-k", "5", "--html", str(written), "--backend", "torch"]) == 0
    hits = [line.split(maxsplit=2) for line in capsys.readouterr().out.splitlines()[:5]]
    moved = tmp_path / "elsewhere" / "deeper" / "moved.html"
    moved.parent.mkdir(parents=True)
    written.rename(moved)
    page = moved.read_text(encoding="utf-8")
    links = _links(page)
    assert len(links.srcs) == len(links.hrefs) == 5
    for (rank, score, path), src, href in zip(hits, links.srcs, links.hrefs):
        thumbnail = _data_image(src)  # nothing to fetch: shown wherever the page lies
        with Image.open(path) as original:
            assert max(thumbnail.size) <= THUMBNAIL_SIDE
            assert thumbnail.size == original.size  # small images are not enlarged
        assert href == Path(path).as_uri() and Path(path).is_absolute()  # the original, from anywhere
        assert f'<b>#{rank}</b> <span class="score">{score}</span>' in page
        assert f'title="{html_escape(path)}"' in page
    assert not re.search(r'(?:src|href)="(?!data:|file:)', page)  # no relative link anywhere


def test_thumbnails_shrink_large_images_and_survive_unreadable_files(tmp_path):
    big = tmp_path / "big.png"
    _write_image(big, 3, mode="RGBA", size=(300, 700))
    thumbnail = _data_image(thumbnail_data_uri(big))
    assert thumbnail.size == (110, 256) and thumbnail.mode == "RGB"
    assert _data_image(thumbnail_data_uri(Image.open(big), 64)).size == (27, 64)
    assert thumbnail_data_uri(tmp_path / "gone.jpg") is None
    hits = [SearchHit(rank=1, score=0.5, path=big), SearchHit(rank=2, score=0.25, path=tmp_path / "gone.jpg")]
    page = render_hits_html(hits, "q")
    assert page.count("<img ") == 1 and "image unreadable" in page and "<b>#2</b>" in page


def test_render_hits_html_escapes_and_links_images(tmp_path):
    odd = tmp_path / "imgs" / 'a <b> & "c".jpg'
    _write_image(odd, 1)
    _write_image(tmp_path / "y.png", 2)
    hits = [SearchHit(rank=1, score=0.5, path=odd), SearchHit(rank=2, score=0.25, path=tmp_path / "y.png")]
    page = render_hits_html(hits, 'red <coat> & "bag"')
    assert page.startswith("<!doctype html>") and page.endswith("</body></html>\n")
    assert "<title>gadms search: red &lt;coat&gt; &amp; &#34;bag&#34;</title>" in page
    assert "<h1>red &lt;coat&gt; &amp; &#34;bag&#34;</h1>" in page and "<coat>" not in page
    assert page.count("<img ") == 2 and "2 results, best first" in page
    assert f'href="{odd.as_uri()}"' in page and "a%20%3Cb%3E%20%26%20%22c%22.jpg" in page
    assert '<b>#1</b> <span class="score">0.5000</span>' in page
    assert f'title="{markup_escape(str(odd))}"' in page and 'alt="a &lt;b&gt; &amp; &#34;c&#34;.jpg"' in page
    assert html_page("t <x>", "<p>body</p>") == (
        '<!doctype html>\n<html><head><meta charset="utf-8"><title>t &lt;x&gt;</title></head>\n'
        "<body><p>body</p></body></html>\n"
    )

def _direct_gass(model, processor, caption, image_embeds):
    from modeling_gadms.gass import gass_scores

    ids = processor(text=[caption], return_tensors="pt")["input_ids"]
    eos = int((ids[0] == model.config.text_config.eos_token_id).nonzero()[0])
    return gass_scores(model, ids, image_embeds)[0, : eos + 1].tolist()


def test_explain_cli_matches_gass_scores(tiny_gadms_dir, images_dir, model_and_processor, tmp_path, capsys):
    model, processor = model_and_processor
    image_path = images_dir / "p01.png"
    html, png = tmp_path / "e.html", tmp_path / "e.png"
    assert main(["explain", "--model", str(tiny_gadms_dir), "--text", CAPTION, "--image", str(image_path),
                 "--html", str(html), "--png", str(png), "--no-color"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "\x1b[" not in printed
    caption, blank, *rest = printed.splitlines()
    assert caption == f"<|startoftext|> {CAPTION} <|endoftext|>" and blank == ""
    listed = [line for line in rest if line and not line.startswith(("wrote", "sim"))]
    listing = [line.rsplit(maxsplit=1) for line in listed]
    with torch.no_grad():
        pixels = processor(images=[Image.open(image_path)], return_tensors="pt")["pixel_values"]
        image_embeds = model.get_image_features(pixels)
        text_embeds = model.get_text_features(**processor(text=[CAPTION], return_tensors="pt"))
    expected = _direct_gass(model, processor, CAPTION, image_embeds)
    tokens = [token for token, _ in listing]
    assert tokens == ["<|startoftext|>", *CAPTION.split(), "<|endoftext|>"]
    np.testing.assert_allclose([float(s) for _, s in listing], expected, atol=6e-4)
    assert expected[0] == 0 and expected[-1] == 0 and max(expected) > 0
    similarity = float(printed.split("similarity")[1].split()[0])
    assert similarity == pytest.approx(F.cosine_similarity(text_embeds, image_embeds).item(), abs=1e-4)
    page = html.read_text()
    assert page.startswith("<!doctype html>") and "<title>gadms explain</title>" in page
    assert page.count('class="gadms-token"') == len(tokens)
    [src] = _links(page).srcs  # the image, embedded beside the tokens
    assert 'class="gadms-crop"' in page and _data_image(src).size == Image.open(image_path).size
    with Image.open(png) as drawn:
        assert drawn.format == "PNG" and drawn.width == 900 and drawn.height >= 70 + 8
        crop = open_image(image_path)  # 31 x 70: drawn as it is, at (4, 4)
        assert drawn.convert("RGB").crop((4, 4, 4 + crop.width, 4 + crop.height)).tobytes() == crop.tobytes()


def test_explain_prints_the_caption_plain_through_a_pipe(tiny_gadms_dir, monkeypatch, capsys):
    """stdout not a terminal (capsys): the caption line is printed without colours, not dropped."""
    args = ["explain", "--model", str(tiny_gadms_dir), "--text", CAPTION]
    assert not sys.stdout.isatty()
    assert main(args) == 0
    piped = capsys.readouterr().out
    assert "\x1b" not in piped and piped.splitlines()[:2] == [f"<|startoftext|> {CAPTION} <|endoftext|>", ""]
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert main(args) == 0
    coloured = capsys.readouterr().out
    assert "\x1b[48;5;" in coloured and re.sub(r"\x1b\[[0-9;]*m", "", coloured) == piped  # same text
    monkeypatch.setenv("NO_COLOR", "1")
    assert main(args) == 0 and capsys.readouterr().out == piped


def _tiny_clip_dir(path, tiny_processor):
    """A plain transformers ``CLIPModel`` folder (not GA-DMS), with a processor."""
    from transformers import CLIPConfig, CLIPModel

    tokenizer = tiny_processor.tokenizer
    text = {"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 2, "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}  # fmt: skip
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
              "image_size": 32, "patch_size": 16}  # fmt: skip
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).eval()
    model.save_pretrained(path)
    tiny_processor.save_pretrained(path)
    return model


def test_explain_refuses_a_model_that_is_not_gadms(tiny_processor, images_dir, tmp_path, capsys):
    """A plain CLIPModel: exit status 2 and one line saying why (before: an AttributeError traceback)."""
    folder = tmp_path / "clip"
    model = _tiny_clip_dir(folder, tiny_processor)
    for extra in ([], ["--image", str(images_dir / "p01.png")]):
        assert main(["explain", "--model", str(folder), "--text", CAPTION, *extra]) == 2
        captured = capsys.readouterr()
        errors = [line for line in captured.err.splitlines() if "error" in line]
        assert errors == [
            f"gadms explain: error: {folder} is not a GA-DMS model (GASS token scores need GADMSModel, "
            "model_type 'gadms'; got CLIPModel, model_type 'clip')"
        ]
        assert "Traceback" not in captured.err and captured.out == ""
    with pytest.raises(NotGADMSModelError, match="is not a GA-DMS model .*got CLIPModel"):
        explain(model, tiny_processor, CAPTION)


def test_explain_library_neutral_image_and_renderers(model_and_processor, tmp_path):
    model, processor = model_and_processor
    scores = explain(model, processor, CAPTION)
    assert isinstance(scores, TokenScores) and scores.similarity is None
    height, width = model.config.vision_config.image_size
    with torch.no_grad():
        neutral = model.get_image_features(pixel_values=torch.zeros(1, 3, height, width))
    assert scores.scores == pytest.approx(_direct_gass(model, processor, CAPTION, neutral), abs=1e-6)
    assert scores.scores[0] == 0 and scores.scores[-1] == 0
    coloured = render_terminal(scores, color=True)
    assert "\x1b[48;5;" in coloured and all(word in coloured for word in CAPTION.split())
    plain = render_terminal(scores, color=False)
    assert "\x1b" not in plain and plain.splitlines()[0] == " ".join(scores.tokens)
    assert plain.splitlines()[4].split() == ["man", f"{scores.scores[2]:.3f}"]
    assert re.sub(r"\x1b\[[0-9;]*m", "", coloured) == plain  # the same text, with or without colours
    fragment = render_html(
        TokenScores(["<|startoftext|>", "a", "<b>", "<|endoftext|>"], [0, 0.5, 1, 0], 0.25)
    )
    assert fragment.count("<span") == 4 and "&lt;b&gt;" in fragment and "similarity: 0.2500" in fragment
    assert '>&lt;b&gt;</span>' in fragment and 'style="background-color:rgb(255,96,0);' in fragment
    assert not fragment.lstrip().lower().startswith(("<html", "<!doctype"))
    assert "<img" not in fragment
    save_png(scores, tmp_path / "s.png")
    with Image.open(tmp_path / "s.png") as drawn:
        drawn.verify()


def test_explain_html_and_png_show_the_image_beside_the_tokens(tmp_path):
    colour = (20, 160, 220)  # not a token colour (those all have red 255)
    tall = tmp_path / "crop.png"
    Image.new("RGB", (60, 300), colour).save(tall)
    scores = TokenScores(["<|startoftext|>", "a", "red", "coat", "<|endoftext|>"], [0, 0.2, 1, 0.6, 0], 0.3)
    for image in (tall, Image.open(tall)):
        fragment = render_html(scores, image=image)
        [src] = _links(fragment).srcs
        shown = _data_image(src)
        assert shown.size == (51, 256)  # at most THUMBNAIL_SIDE, aspect kept
        assert max(abs(a - b) for a, b in zip(shown.getpixel((25, 128)), colour)) <= 8
        assert fragment.index("gadms-crop") < fragment.index('class="gadms-token"')  # beside, first
        assert fragment.count('class="gadms-token"') == 5 and "similarity: 0.3000" in fragment
    save_png(scores, tmp_path / "with.png", image=tall)
    save_png(scores, tmp_path / "without.png")
    with Image.open(tmp_path / "with.png") as drawn, Image.open(tmp_path / "without.png") as plain:
        assert drawn.width == plain.width == 900 and drawn.height >= 192 > plain.height
        assert drawn.getpixel((4 + 19, 4 + 95)) == colour and drawn.getpixel((4 + 37, 4 + 191)) == colour
        assert colour not in {pixel for _, pixel in plain.getcolors(1 << 16)}
        strip = drawn.crop((4 + 38 + 8, 0, 900, 40))  # the tokens, right of the 38 x 192 crop
        assert any(pixel[0] == 255 and pixel[1] < 200 for _, pixel in strip.getcolors(1 << 16))


def test_index_with_a_model_that_cannot_take_the_images_is_an_error_not_skipped_files(
    tiny_processor, images_dir, built_index, tmp_path, capsys
):
    """A processor sized for another model fails on every picture the same way: one error naming the model,
    exit 1, and an index already in the folder stays as it was (before: every file "skipped", an empty index)."""
    import shutil

    folder = tmp_path / "clip"
    _tiny_clip_dir(folder, tiny_processor)  # a 32x32 CLIP with a 64x32 processor
    out = tmp_path / "idx"
    shutil.copytree(built_index[0], out)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    code = main(["index", "--model", str(folder), "--images", str(images_dir), "--out", str(out), "--no-progress"])
    assert code == 1
    err = capsys.readouterr().err
    assert "gadms index: error: the model cannot embed these images" in err and "--model" in err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def test_search_refuses_an_empty_description_and_index_files_share_one_mode(built_index, capsys):
    out = built_index[0]
    for text in ("", "   "):
        assert main(["search", str(out), text]) == 1
        assert "gadms search: error: the description to search for is empty" in capsys.readouterr().err
    umask = os.umask(0)
    os.umask(umask)
    modes = {p.name: p.stat().st_mode & 0o777 for p in out.iterdir() if p.is_file() and p.suffix != ".lock"}
    assert modes["embeddings.safetensors"] == 0o666 & ~umask and len(set(modes.values())) == 1, modes
