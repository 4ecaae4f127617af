"""The approximate ``faiss-ivf`` backend: recall against exact search, exact scores, save/load with the index,
``--update`` keeping the IVF valid, the ``auto`` choice by size, and ``nprobe`` checks."""

import contextlib
import importlib.util
import io
import shutil
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

import retrieval.index
import retrieval.search
from retrieval.ann import IVFIndex, build_ivf, choose_nlist, default_nprobe, ivf_topk, needs_retrain, remap_ivf
from retrieval.cli import main
from retrieval.index import EMBEDDINGS_FILE, GalleryIndex
from retrieval.search import _exact_scores, _normalise, exact_topk, import_faiss, resolve_backend

pytestmark = pytest.mark.skipif(importlib.util.find_spec("faiss") is None, reason="faiss is not installed")

ROWS, DIM, K = 20_000, 64, 10


def clustered(rows: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A float16 gallery of persons (about 8 images each, some near duplicates) in groups of similar
    persons, and queries near person centres (as in benchmarks/bench_search.py, smaller)."""
    g = torch.Generator().manual_seed(seed)
    persons = rows // 8
    looks = F.normalize(torch.randn(persons // 10, dim, generator=g), dim=-1)
    centres = F.normalize(
        looks[torch.randint(0, len(looks), (persons,), generator=g)]
        + 0.7 * F.normalize(torch.randn(persons, dim, generator=g), dim=-1),
        dim=-1,
    )
    owner = torch.randint(0, persons, (rows,), generator=g).sort().values
    images = centres[owner] + 0.5 * F.normalize(torch.randn(rows, dim, generator=g), dim=-1)
    images[1::10] = images[0::10][: len(images[1::10])] + 0.05 * torch.randn(len(images[1::10]), dim, generator=g)
    gallery = F.normalize(images, dim=-1).half()
    picked = torch.randint(0, persons, (200,), generator=g)
    queries = centres[picked] + 0.8 * F.normalize(torch.randn(200, dim, generator=g), dim=-1)
    return gallery, F.normalize(queries, dim=-1)


@pytest.fixture(scope="module")
def data():
    gallery, queries = clustered(ROWS, DIM, seed=0)
    return gallery, queries, build_ivf(gallery)


def recall(found: torch.Tensor, truth: torch.Tensor) -> float:
    return sum(len(set(f.tolist()) & set(t.tolist())) for f, t in zip(found, truth)) / truth.numel()


def test_ivf_recall_against_exact_and_scores_are_exact(data):
    gallery, queries, index = data
    faiss = import_faiss()
    ivf = index
    assert ivf.nlist == choose_nlist(ROWS) == 141 and index.ntotal == ROWS and index.fits(gallery)
    inner = faiss.downcast_index(index.index)
    assert isinstance(inner, faiss.IndexIVFPQFastScan) and inner.pq.M == DIM // 4 and inner.pq.nbits == 4
    assert inner.metric_type == faiss.METRIC_INNER_PRODUCT and "nlist 141, 20000 vectors" in index.describe()
    exact_scores, exact_indices = exact_topk(gallery, queries, K)
    scores, indices = ivf_topk(gallery, queries, K, index=index)
    assert scores.shape == indices.shape == (len(queries), K)
    assert recall(indices, exact_indices) >= 0.99
    # every returned score is that row's exact score (the shared rescoring), best first, ties by index
    q = _normalise(queries)
    for j in range(len(queries)):
        expected = _exact_scores(gallery[indices[j]], q[j]).float()
        assert torch.equal(scores[j], expected)
        assert all((a, -i) >= (b, -i2) for a, b, i, i2 in zip(scores[j], scores[j][1:], indices[j], indices[j][1:]))
        for col, row in enumerate(exact_indices[j].tolist()):  # rows found by both: identical scores
            if row in indices[j].tolist():
                assert scores[j][indices[j].tolist().index(row)] == exact_scores[j][col]
    # visiting every cell and rescoring every row finds exactly the exact results
    all_scores, all_indices = ivf_topk(gallery, queries[:10], K, index=index, nprobe=ivf.nlist, rescore=ROWS)
    assert torch.equal(all_indices, exact_indices[:10]) and torch.equal(all_scores, exact_scores[:10])
    # fewer cells: faster, worse recall
    assert recall(ivf_topk(gallery, queries, K, index=index, nprobe=1)[1], exact_indices) < 0.99


def test_ivf_edge_cases_and_nprobe_checks(data):
    gallery, queries, index = data
    nlist = index.nlist
    assert default_nprobe(nlist) == 43 and default_nprobe(4) == 4 and default_nprobe(1000) == 300
    for bad in (0, -1, nlist + 1):
        with pytest.raises(ValueError, match=rf"nprobe \(--nprobe\) must be between 1 and the index's nlist={nlist}"):
            ivf_topk(gallery, queries[:1], K, index=index, nprobe=bad)
    for bad in (2.5, True, "8"):
        with pytest.raises(TypeError, match="nprobe"):
            ivf_topk(gallery, queries[:1], K, index=index, nprobe=bad)
    with pytest.raises(ValueError, match="rescore must be at least k=10"):
        ivf_topk(gallery, queries[:1], K, index=index, rescore=5)
    with pytest.raises(ValueError, match="holds 20000 vectors of dimension 64, the gallery 19999 of 64"):
        ivf_topk(gallery[:-1], queries[:1], K, index=index)
    with pytest.raises(ValueError, match="nlist must be between 1 and"):
        build_ivf(gallery[:10], nlist=11)
    with pytest.raises(ValueError, match="non-empty"):
        build_ivf(gallery[:0])
    # a one-vector query, k beyond a tiny gallery, cells too empty for k: every row comes back
    small = gallery[:50]
    tiny = build_ivf(small, nlist=5)
    scores, indices = ivf_topk(small, queries[0], 80, index=tiny, nprobe=1)
    assert indices.shape == (1, 50) and sorted(indices[0].tolist()) == list(range(50))
    assert torch.equal(indices, exact_topk(small, queries[0], 80)[1])
    assert choose_nlist(0) == 1 and choose_nlist(100) == 2 and choose_nlist(1_000_000) == 1000


def test_remap_keeps_the_ivf_valid_after_removals_reordering_and_additions(data):
    gallery, queries, _ = data
    old = gallery[:15_000]
    index = build_ivf(old)
    index = IVFIndex.from_tensors(*index.to_tensors().values())  # a saved one is updated the same way
    # the new gallery: rows 0-999 and every 7th row dropped, the rest shuffled, 5,000 new rows
    keep = torch.ones(len(old), dtype=torch.bool)
    keep[:1000] = False
    keep[::7] = False
    kept_rows = keep.nonzero().flatten()
    new = torch.cat([old[kept_rows], gallery[15_000:]])
    perm = torch.randperm(len(new), generator=torch.Generator().manual_seed(1))
    new = new[perm]
    position = torch.empty(len(perm), dtype=torch.long)
    position[perm] = torch.arange(len(perm))  # new row of each row of the concatenation
    new_row = torch.full((len(old),), -1, dtype=torch.long)
    new_row[kept_rows] = position[: len(kept_rows)]
    added = position[len(kept_rows) :]
    assert not needs_retrain(index, len(new))
    remap_ivf(index, new_row, new, added)
    assert index.ntotal == len(new)
    faiss = import_faiss()
    ivf = faiss.extract_index_ivf(index.index)
    ids = np.concatenate(
        [faiss.rev_swig_ptr(ivf.invlists.get_ids(c), ivf.invlists.list_size(c)).copy() for c in range(ivf.nlist)]
    )
    assert len(ids) == len(new) and sorted(index.rows[ids].tolist()) == list(range(len(new)))  # each row once
    assert len(index.rows) == 15_000 + 5_000 and int((index.rows >= 0).sum()) == len(new)
    truth = exact_topk(new, queries, K)
    scores, indices = ivf_topk(new, queries, K, index=index)
    assert recall(indices, truth[1]) >= 0.99
    # each added row (and each kept one) is found by its own embedding
    probe = torch.cat([added[:50], new_row[kept_rows[:50]]])
    assert torch.equal(ivf_topk(new, new[probe].float(), 1, index=index)[1][:, 0], probe)
    with pytest.raises(ValueError, match="new_row has 3 entries, the IVF index holds 17000 rows"):
        remap_ivf(index, torch.zeros(3, dtype=torch.long), new, added)
    assert needs_retrain(build_ivf(gallery[:1000]), ROWS) and not needs_retrain(index, ROWS)


def _gallery_index(embeddings: torch.Tensor, tmp_path) -> GalleryIndex:
    paths = [f"img{i:06d}.jpg" for i in range(len(embeddings))]
    return GalleryIndex(embeddings=embeddings, paths=paths, root=str(tmp_path), model="m")


def test_ivf_is_saved_in_the_index_file_and_loaded(data, tmp_path):
    gallery, queries, _ = data
    index = _gallery_index(gallery[:5000], tmp_path)
    assert index.ivf is None
    index.build_ivf(nlist=20)
    expected = index.search(queries, k=K, backend="faiss-ivf", nprobe=3)
    index.save(tmp_path / "idx")
    with safe_open(str(tmp_path / "idx" / EMBEDDINGS_FILE), framework="pt") as handle:
        assert set(handle.keys()) == {"embeddings", "paths", "ivf", "ivf_rows"}
        assert '"ivf": {"nlist": 20, "rows": 5000, "codes": "IndexIVFPQFastScan"}' in handle.metadata()["index"]
    loaded = GalleryIndex.load(tmp_path / "idx")
    assert loaded.ivf is not None and loaded.ivf_nlist == 20 and loaded.ivf.ntotal == 5000
    for got, want in zip(loaded.search(queries, k=K, backend="faiss-ivf", nprobe=3), expected):
        assert torch.equal(got, want)
    assert GalleryIndex.load(tmp_path / "idx", ivf=False).ivf is None
    # saving without it drops it from the file
    loaded.drop_ivf()
    loaded.save(tmp_path / "idx")
    assert GalleryIndex.load(tmp_path / "idx").ivf is None


def test_a_stale_ivf_in_the_file_is_dropped_on_load(data, tmp_path):
    gallery, _, _ = data
    index = _gallery_index(gallery[:300], tmp_path)
    index.save(tmp_path / "idx")
    path = tmp_path / "idx" / EMBEDDINGS_FILE
    with safe_open(str(path), framework="pt") as handle:
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        metadata = handle.metadata()
    tensors.update(build_ivf(gallery[:400], nlist=4).to_tensors())  # another gallery's IVF
    save_file(tensors, str(path), metadata=metadata)
    with pytest.warns(UserWarning, match="ignoring its IVF index .*400 x 64 does not fit the gallery's 300 x 64"):
        loaded = GalleryIndex.load(tmp_path / "idx")
    assert loaded.ivf is None and len(loaded) == 300
    with pytest.raises(ValueError, match="does not fit"):
        loaded._set_ivf(build_ivf(gallery[:400], nlist=4))


def test_auto_picks_the_ivf_by_size_when_the_index_has_one(data, tmp_path, monkeypatch):
    gallery, queries, _ = data
    index = _gallery_index(gallery[:3000], tmp_path)
    assert resolve_backend("auto", 10**6) == "faiss"  # no IVF: exhaustive
    assert resolve_backend("auto", 10**6, has_ivf=True) == "faiss-ivf"
    assert resolve_backend("auto", 3000, has_ivf=True) == "torch"
    assert resolve_backend("faiss-ivf", 5) == "faiss-ivf"
    calls = []
    real = retrieval.index.ivf_topk

    def spy(*args, **kwargs):
        calls.append(kwargs.get("nprobe"))
        return real(*args, **kwargs)

    monkeypatch.setattr(retrieval.index, "ivf_topk", spy)
    exact = index.search(queries, k=K, backend="auto")
    assert calls == [] and index.ivf is None
    monkeypatch.setattr(retrieval.search, "IVF_THRESHOLD", 2000)
    index.search(queries, k=K, backend="auto")
    assert calls == [] and index.ivf is None  # no IVF yet: auto does not build one
    found = index.search(queries, k=K, backend="faiss-ivf", nprobe=20)  # explicit: built (kept, not saved)
    assert calls == [20] and index.ivf is not None
    index.search(queries, k=K, backend="auto")
    assert calls == [20, None]
    assert recall(found[1], exact[1]) >= 0.95
    with pytest.raises(ValueError, match=r"unknown backend 'ivf' \(--backend\)"):
        index.search(queries, backend="ivf")
    with pytest.raises(ValueError, match=r"ivf \(--ivf\) must be one of auto, always, never"):
        GalleryIndex.build(None, None, tmp_path, model_id="m", ivf="sometimes")


def _write_image(path, seed):
    pixels = np.random.default_rng(seed).integers(0, 256, (60, 30, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def _run(*argv) -> tuple[int, str]:
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(list(argv))
    return code, stdout.getvalue()


def test_index_update_keeps_the_saved_ivf_valid(tiny_gadms_dir, tmp_path, monkeypatch, capsys):
    images, out = tmp_path / "images", tmp_path / "idx"
    for i in range(90):
        _write_image(images / f"p{i:03d}.png", i)
    common = ["--model", str(tiny_gadms_dir), "--images", str(images), "--out", str(out), "--no-progress"]
    monkeypatch.setattr(retrieval.search, "IVF_THRESHOLD", 80)  # auto: an IVF from 80 images
    code, printed = _run("index", *common, "--batch-size", "32")
    assert code == 0 and "saved an IVF index (2 cells)" in printed
    before = GalleryIndex.load(out)
    assert before.ivf is not None and before.ivf.ntotal == 90
    # update: 3 images gone, 5 new ones sorted in between the kept ones
    for i in (0, 41, 89):
        (images / f"p{i:03d}.png").unlink()
    for i in range(5):
        _write_image(images / f"p{10 * i + 5:03d}b.png", 500 + i)
    built = []
    monkeypatch.setattr(GalleryIndex, "build_ivf", lambda self, **kw: built.append(1))
    code, printed = _run("index", *common, "--update")
    assert code == 0 and "5 new, 87 kept, 3 removed" in printed and built == []  # updated, not retrained
    after = GalleryIndex.load(out)
    assert len(after) == 92 and after.ivf.ntotal == 92 and after.ivf_nlist == 2
    # every image, new ones included, is found by its own embedding at rank 1, with its exact score
    scores, indices = after.search(after.embeddings.float(), k=1, backend="faiss-ivf", nprobe=2)
    assert indices[:, 0].tolist() == list(range(92))
    exact = after.search(after.embeddings.float(), k=5, backend="torch")
    assert torch.equal(after.search(after.embeddings.float(), k=5, backend="faiss-ivf", nprobe=2)[0], exact[0])
    # the CLI search: --backend faiss-ivf and --nprobe checks
    monkeypatch.undo()
    code, _ = _run("search", str(out), "a man", "--backend", "faiss-ivf", "--nprobe", "2", "-k", "3")
    assert code == 0
    assert _run("search", str(out), "a man", "--backend", "faiss-ivf", "--nprobe", "3")[0] == 1
    assert "--nprobe must be at most the index's nlist=2, got 3" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["search", str(out), "a man", "--nprobe", "0"])
    assert "argument --nprobe: expected a positive integer, got 0" in capsys.readouterr().err
    # --ivf never drops it
    code, printed = _run("index", *common, "--update", "--ivf", "never")
    assert code == 0 and GalleryIndex.load(out).ivf is None


def test_search_cli_builds_an_ivf_in_memory_when_the_index_has_none(tiny_gadms_dir, tmp_path, capsys):
    images, out = tmp_path / "images", tmp_path / "idx"
    for i in range(12):
        _write_image(images / f"p{i:02d}.png", i)
    assert _run("index", "--model", str(tiny_gadms_dir), "--images", str(images), "--out", str(out),
                "--no-progress")[0] == 0  # fmt: skip
    assert GalleryIndex.load(out).ivf is None  # 12 images: below the threshold
    code, ivf_out = _run("search", str(out), "a woman in red", "--backend", "faiss-ivf", "-k", "20")
    assert code == 0 and "has no IVF index: building one in memory" in capsys.readouterr().err
    code, torch_out = _run("search", str(out), "a woman in red", "--backend", "torch", "-k", "20")
    assert ivf_out == torch_out  # 12 images in 1 cell: every row is rescored exactly
    shutil.rmtree(out)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _run("index", "--model", str(tiny_gadms_dir), "--images", str(images), "--out", str(out),
                    "--no-progress", "--ivf", "always")[0] == 0  # fmt: skip
    assert GalleryIndex.load(out).ivf_nlist == 1
