"""Retrieval metrics against the test vector of docs/method.md section 7.2 and an independent full-sort reference."""

from __future__ import annotations

import sys
from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import evaluation.metrics.retrieval as retrieval_module
from evaluation import (
    NoPositiveError,
    bidirectional_retrieval_metrics,
    per_query_retrieval,
    retrieval_metrics,
    retrieval_metrics_from_similarity,
)

# ----------------------------------------------------------------------------------------------
# independent reference: a plain-Python full sort per query


def reference_metrics(similarity, query_ids, gallery_ids, ks):
    """Sort every row fully (score descending, then gallery index), then count as docs/method.md section 7.2 defines."""
    similarity = np.asarray(similarity, dtype=np.float64)
    first, aps, inps = [], [], []
    for row, qid in zip(similarity, query_ids):
        order = sorted(range(len(row)), key=lambda j: (-row[j], j))
        ranks = [r + 1 for r, j in enumerate(order) if gallery_ids[j] == qid]
        first.append(ranks[0])
        aps.append(sum((i + 1) / r for i, r in enumerate(ranks)) / len(ranks))
        inps.append(len(ranks) / ranks[-1])
    out = {f"R{k}": 100.0 * sum(f <= k for f in first) / len(first) for k in ks}
    out["mAP"] = 100.0 * sum(aps) / len(aps)
    out["mINP"] = 100.0 * sum(inps) / len(inps)
    return out


def assert_metrics_close(ours, ref, tol=1e-9):
    assert ours.keys() == ref.keys()
    for key in ref:
        assert ours[key] == pytest.approx(ref[key], abs=tol), (key, ours, ref)


def dyadic_embeddings(gen: np.random.Generator, n: int, dim: int, nonzero: int = 4) -> np.ndarray:
    """Vectors with ``nonzero`` entries of +-2**e: every norm, normalised entry and cosine is exact
    in float32 (and float16/bfloat16), whatever the summation order, so ties are exact ties."""
    out = np.zeros((n, dim), dtype=np.float32)
    for i in range(n):
        cols = gen.choice(dim, size=nonzero, replace=False)
        out[i, cols] = gen.choice([-1.0, 1.0], size=nonzero)
    out *= 2.0 ** gen.integers(-3, 4, size=(n, 1))  # random power-of-two scale: normalisation matters
    return out


def exact_cosines(queries: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    qn = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    gn = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    return qn.astype(np.float64) @ gn.astype(np.float64).T


# ----------------------------------------------------------------------------------------------
# the test vector of docs/method.md section 7.2 and hand-computed cases

SPEC_GALLERY_IDS = [7, 3, 9, 3, 5, 3]
SPEC_SIMILARITY = torch.tensor([[0.9, 0.8, 0.7, 0.6, 0.5, 0.1], [0.0, 0.0, 1.0, 0.0, 0.0, 0.0]])
SPEC_EXPECTED = {"R1": 50.0, "R2": 100.0, "mAP": 75.0, "mINP": 75.0}


def test_spec_vector_from_embeddings():
    gallery = torch.eye(6)  # cosine(query, e_j) is proportional to query[j]: the test vector's similarities
    got = retrieval_metrics(SPEC_SIMILARITY, gallery, [3, 9], SPEC_GALLERY_IDS, ks=(1, 2))
    assert_metrics_close(got, SPEC_EXPECTED, tol=1e-9)


def test_spec_vector_from_similarity():
    got = retrieval_metrics_from_similarity(SPEC_SIMILARITY, [3, 9], SPEC_GALLERY_IDS, ks=(1, 2))
    assert_metrics_close(got, SPEC_EXPECTED, tol=1e-9)


def test_spec_vector_per_query_values():
    res = per_query_retrieval(SPEC_SIMILARITY, torch.eye(6), [3, 9], SPEC_GALLERY_IDS)
    assert res.first_positive_rank.tolist() == [2, 1]
    assert res.average_precision.tolist() == pytest.approx([0.5, 1.0])  # (1/2 + 2/4 + 3/6) / 3
    assert res.inverse_negative_penalty.tolist() == pytest.approx([0.5, 1.0])  # 3 / 6
    assert res.num_positives.tolist() == [3, 1]


def test_default_ks_keys():
    got = retrieval_metrics(SPEC_SIMILARITY, torch.eye(6), [3, 9], SPEC_GALLERY_IDS)
    assert list(got) == ["R1", "R5", "R10", "mAP", "mINP"]
    assert got["R1"] == 50.0 and got["R5"] == 100.0 and got["R10"] == 100.0


def test_ties_are_broken_by_gallery_index():
    # All scores equal: the ranking is the gallery order.
    sims = torch.full((2, 3), 0.5)
    res = retrieval_metrics_from_similarity(sims, [1, 2], [1, 2, 1], ks=(1,))
    # query id 1: positives at ranks 1 and 3 -> AP (1 + 2/3) / 2, INP 2/3; id 2: rank 2 -> AP 1/2, INP 1/2
    assert res["R1"] == 50.0
    assert res["mAP"] == pytest.approx(100 * ((1 + 2 / 3) / 2 + 0.5) / 2)
    assert res["mINP"] == pytest.approx(100 * (2 / 3 + 0.5) / 2)


def test_tie_between_positive_and_earlier_negative_counts_against_it():
    # gallery index 0 (negative) ties with index 2 (positive): the negative ranks first.
    sims = torch.tensor([[0.7, 0.1, 0.7, 0.2]])
    got = retrieval_metrics_from_similarity(sims, [5], [4, 4, 5, 4], ks=(1, 2))
    assert got == {"R1": 0.0, "R2": 100.0, "mAP": 50.0, "mINP": 50.0}
    # and with the positive first in index order it wins the tie
    got = retrieval_metrics_from_similarity(sims, [4], [5, 4, 4, 5], ks=(1,))
    assert got["R1"] == 0.0  # index 0 (id 5) still outranks index 2 (id 4) by index
    got = retrieval_metrics_from_similarity(sims, [5], [5, 4, 4, 4], ks=(1,))
    assert got["R1"] == 100.0 and got["mAP"] == 100.0


def test_string_person_ids():
    got = retrieval_metrics(
        SPEC_SIMILARITY, torch.eye(6), ["c", "i"], ["g", "c", "i", "c", "e", "c"], ks=(1, 2)
    )
    assert_metrics_close(got, SPEC_EXPECTED)


def test_bidirectional_swaps_roles():
    gen = np.random.default_rng(3)
    text = dyadic_embeddings(gen, 12, 16)
    image = dyadic_embeddings(gen, 6, 16)
    image_ids = [0, 0, 1, 2, 2, 3]
    text_ids = [0, 0, 0, 1, 1, 2, 2, 2, 3, 3, 1, 0]
    got = bidirectional_retrieval_metrics(
        torch.from_numpy(text), torch.from_numpy(image), text_ids, image_ids
    )
    sims = exact_cosines(text, image)
    assert_metrics_close(got["t2i"], reference_metrics(sims, text_ids, image_ids, (1, 5, 10)))
    assert_metrics_close(got["i2t"], reference_metrics(sims.T, image_ids, text_ids, (1, 5, 10)))


# ----------------------------------------------------------------------------------------------
# property tests against the reference


@st.composite
def retrieval_problems(draw):
    """A similarity matrix with many exact ties, repeated ids, several positives per query."""
    num_ids = draw(st.integers(1, 6))
    gallery_ids = draw(st.lists(st.integers(0, num_ids - 1), min_size=1, max_size=40))
    present = sorted(set(gallery_ids))
    query_ids = draw(st.lists(st.sampled_from(present), min_size=1, max_size=25))
    levels = draw(st.integers(1, 8))  # few distinct scores -> ties everywhere
    seed = draw(st.integers(0, 2**31 - 1))
    gen = np.random.default_rng(seed)
    sims = gen.integers(0, levels, size=(len(query_ids), len(gallery_ids))).astype(np.float32) / levels
    ks = tuple(draw(st.lists(st.integers(1, 45), min_size=1, max_size=4, unique=True)))
    chunk = draw(st.integers(1, 30))
    return sims, query_ids, gallery_ids, ks, chunk


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(retrieval_problems())
def test_matches_full_sort_reference_with_ties(problem):
    sims, query_ids, gallery_ids, ks, chunk = problem
    got = retrieval_metrics_from_similarity(
        torch.from_numpy(sims), query_ids, gallery_ids, ks, chunk_size=chunk
    )
    assert_metrics_close(got, reference_metrics(sims, query_ids, gallery_ids, ks))


@settings(max_examples=60, deadline=None)
@given(retrieval_problems())
def test_sort_path_matches_reference(problem):
    sims, query_ids, gallery_ids, ks, chunk = problem
    # route every query with more than one positive through the stable-sort path
    with mock.patch.object(retrieval_module, "SORT_THRESHOLD", 1):
        got = retrieval_metrics_from_similarity(
            torch.from_numpy(sims), query_ids, gallery_ids, ks, chunk_size=chunk
        )
    assert_metrics_close(got, reference_metrics(sims, query_ids, gallery_ids, ks))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(retrieval_problems())
def test_counting_path_matches_reference(problem):
    # the comparison-counting path (what non-CPU devices run) on CPU; by default the CPU ranks by
    # sorting each query's candidates (the test above), so both paths are held to the reference
    sims, query_ids, gallery_ids, ks, chunk = problem
    with mock.patch.object(retrieval_module, "CPU_CANDIDATE_SORT", False):
        got = retrieval_metrics_from_similarity(
            torch.from_numpy(sims), query_ids, gallery_ids, ks, chunk_size=chunk
        )
    assert_metrics_close(got, reference_metrics(sims, query_ids, gallery_ids, ks))


def test_candidate_sort_equals_counting_per_query():
    # continuous scores, several positives per query (ICFG-PEDES-like), exact ties planted across
    # positives and negatives and signed zeros (-0.0 == 0.0 is a tie): per-query results identical
    gen = torch.Generator().manual_seed(3)
    gallery_ids = torch.randint(0, 30, (600,), generator=gen)
    query_ids = gallery_ids[torch.randperm(600, generator=gen)[:250]]
    gallery = torch.randn(600, 24, generator=gen)
    queries = gallery[torch.randint(0, 600, (250,), generator=gen)] + torch.randn(250, 24, generator=gen)
    sims = torch.nn.functional.normalize(queries, dim=1) @ torch.nn.functional.normalize(gallery, dim=1).T
    sims[:, 500:550] = sims[:, 100:150]  # every query: 50 exact ties, positives among them
    sims[::7, 10:20] = 0.0
    sims[::7, 20:30] = -0.0
    positives = retrieval_module._group_positives(query_ids, gallery_ids)
    order = retrieval_module._processing_order(positives)
    cpu = torch.device("cpu")
    results = {}
    for flag in (True, False):
        with mock.patch.object(retrieval_module, "CPU_CANDIDATE_SORT", flag):
            chunks = retrieval_module._matrix_similarity_chunks(sims, order, 64, cpu)
            results[flag] = retrieval_module._run(chunks, positives, query_ids, gallery_ids, cpu)
    for field in ("first_positive_rank", "average_precision", "inverse_negative_penalty"):
        assert torch.equal(getattr(results[True], field), getattr(results[False], field)), field
    ref = reference_metrics(sims.numpy(), query_ids.tolist(), gallery_ids.tolist(), (1, 5, 10))
    assert_metrics_close(retrieval_metrics_from_similarity(sims, query_ids, gallery_ids), ref)


@settings(max_examples=60, deadline=None)
@given(retrieval_problems())
def test_tiny_scratch_buffers_match_reference(problem):
    sims, query_ids, gallery_ids, ks, chunk = problem
    # scratch space smaller than a row: comparisons run in row and column blocks
    with (
        mock.patch.object(retrieval_module, "_WORK_ELEMENTS", 5),
        mock.patch.object(retrieval_module, "_SORT_ELEMENTS", 3),
        mock.patch.object(retrieval_module, "SORT_THRESHOLD", 2),
    ):
        got = retrieval_metrics_from_similarity(
            torch.from_numpy(sims), query_ids, gallery_ids, ks, chunk_size=chunk
        )
    assert_metrics_close(got, reference_metrics(sims, query_ids, gallery_ids, ks))


def test_queries_with_many_positives_use_sort_path_correctly():
    gen = np.random.default_rng(0)
    n_gallery = 300
    gallery_ids = [0] * 150 + list(gen.integers(1, 20, size=n_gallery - 150))  # id 0: 150 positives
    query_ids = [0, 0, 3, 0, 7, 1]
    sims = gen.integers(0, 16, size=(len(query_ids), n_gallery)).astype(np.float32) / 16
    got = retrieval_metrics_from_similarity(
        torch.from_numpy(sims), query_ids, gallery_ids, (1, 5, 10), chunk_size=4
    )
    assert_metrics_close(got, reference_metrics(sims, query_ids, gallery_ids, (1, 5, 10)))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_embeddings_match_reference_any_chunking(seed, dtype):
    gen = np.random.default_rng(seed)
    n_gallery, n_queries, dim = 70, 45, 16
    gallery_ids = list(gen.integers(0, 12, size=n_gallery))
    query_ids = list(gen.choice(sorted(set(gallery_ids)), size=n_queries))
    gallery = dyadic_embeddings(gen, n_gallery, dim)
    queries = dyadic_embeddings(gen, n_queries, dim)
    ref = reference_metrics(exact_cosines(queries, gallery), query_ids, gallery_ids, (1, 3, 5, 10))
    q, g = torch.from_numpy(queries).to(dtype), torch.from_numpy(gallery).to(dtype)
    chunkings = [(None, None), (7, 5), (64, 1), (4, 1000)] + ([(1, None)] if seed == 0 else [])
    for chunk, block in chunkings:
        got = retrieval_metrics(
            q, g, query_ids, gallery_ids, (1, 3, 5, 10), chunk_size=chunk, gallery_block_size=block
        )
        assert_metrics_close(got, ref)


def test_random_embeddings_match_reference():
    gen = torch.Generator().manual_seed(0)
    gallery_ids = torch.randint(0, 40, (400,), generator=gen)
    query_ids = gallery_ids[torch.randint(0, 400, (300,), generator=gen)]
    gallery = torch.randn(400, 32, generator=gen)
    queries = torch.randn(300, 32, generator=gen) + gallery[torch.randint(0, 400, (300,), generator=gen)]
    sims = torch.nn.functional.normalize(queries, dim=1) @ torch.nn.functional.normalize(gallery, dim=1).T
    ref = reference_metrics(sims.numpy(), query_ids.tolist(), gallery_ids.tolist(), (1, 5, 10))
    assert_metrics_close(retrieval_metrics(queries, gallery, query_ids, gallery_ids), ref)
    assert_metrics_close(
        retrieval_metrics(queries.numpy(), gallery.numpy(), query_ids.numpy(), gallery_ids.numpy()), ref
    )


def test_inputs_that_require_grad_are_fine():
    queries = SPEC_SIMILARITY.clone().requires_grad_()
    got = retrieval_metrics(queries, torch.eye(6).requires_grad_(), [3, 9], SPEC_GALLERY_IDS, ks=(1, 2))
    assert_metrics_close(got, SPEC_EXPECTED)
    got = retrieval_metrics_from_similarity(queries * 2, [3, 9], SPEC_GALLERY_IDS, ks=(1, 2))
    assert_metrics_close(got, SPEC_EXPECTED)


# ----------------------------------------------------------------------------------------------
# errors


def test_query_without_positive_is_an_error_naming_the_count():
    with pytest.raises(NoPositiveError, match=r"2 of 3 queries have no positive"):
        retrieval_metrics(torch.randn(3, 4), torch.randn(4, 4), [1, 8, 9], [1, 1, 2, 3])
    with pytest.raises(ValueError, match="no positive"):  # NoPositiveError is a ValueError
        retrieval_metrics_from_similarity(torch.randn(1, 4), [5], [1, 1, 2, 3])
    # string ids are coded internally; the message names the ids as given
    with pytest.raises(NoPositiveError, match=r"1 of 2 queries .* person ids \['zed'\]"):
        retrieval_metrics(torch.eye(3)[:2], torch.eye(3), ["alice", "zed"], ["alice", "bob", "carol"])


@pytest.mark.parametrize(
    "args, message",
    [
        ((torch.randn(2, 4), torch.randn(3, 5), [1, 1], [1, 1, 1]), "dimension"),
        ((torch.randn(2, 4), torch.randn(3, 4), [1], [1, 1, 1]), "2 queries but 1 query ids"),
        ((torch.randn(2, 4), torch.randn(3, 4), [1, 1], [1, 1]), "3 gallery items but 2"),
        ((torch.randn(4), torch.randn(3, 4), [1], [1, 1, 1]), "2-D"),
        ((torch.ones(2, 4, dtype=torch.int64), torch.randn(3, 4), [1, 1], [1, 1, 1]), "floating point"),
    ],
)
def test_bad_inputs(args, message):
    with pytest.raises((ValueError, TypeError), match=message):
        retrieval_metrics(*args)


def test_non_finite_embeddings_rejected():
    gallery = torch.randn(5, 4)
    gallery[3, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        retrieval_metrics(torch.randn(2, 4), gallery, [1, 1], [1] * 5)
    queries = torch.randn(2, 4)
    queries[1, 0] = float("inf")
    with pytest.raises(ValueError, match="NaN or infinite"):
        retrieval_metrics(queries, torch.randn(5, 4), [1, 1], [1] * 5)


@pytest.mark.parametrize("ks", [(), (0,), (1, -2), (1.5,), (True,)])
def test_bad_ks(ks):
    with pytest.raises(ValueError, match="ks"):
        retrieval_metrics(torch.randn(2, 4), torch.randn(3, 4), [1, 1], [1, 1, 1], ks=ks)


# ----------------------------------------------------------------------------------------------
# memory and devices


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="peak RSS via /proc (Linux)")
def test_peak_memory_is_chunk_by_gallery_not_queries_by_gallery():
    gen = torch.Generator().manual_seed(0)
    n_queries, n_gallery, dim = 12000, 5000, 16
    gallery_ids = torch.arange(n_gallery) // 4
    query_ids = gallery_ids[torch.randint(0, n_gallery, (n_queries,), generator=gen)]
    gallery = torch.randn(n_gallery, dim, generator=gen)
    queries = torch.randn(n_queries, dim, generator=gen)
    retrieval_metrics(queries[:100], gallery, query_ids[:100], gallery_ids, chunk_size=600)  # warm-up
    if not _reset_peak_rss():
        pytest.skip("cannot reset the peak RSS (/proc/self/clear_refs)")
    before = _status_kib("VmRSS")
    retrieval_metrics(queries, gallery, query_ids, gallery_ids, chunk_size=600)
    increase_mib = (_status_kib("VmHWM") - before) / 1024
    full_matrix_mib = n_queries * n_gallery * 4 / 2**20  # 229 MiB: a Q x G float32 matrix
    print(f"peak RSS increase {increase_mib:.1f} MiB")
    assert increase_mib < full_matrix_mib / 4, increase_mib


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_gpu_matches_cpu():
    gen = np.random.default_rng(1)
    gallery_ids = list(gen.integers(0, 30, size=500))
    query_ids = list(gen.choice(sorted(set(gallery_ids)), size=300))
    gallery = torch.from_numpy(dyadic_embeddings(gen, 500, 32))
    queries = torch.from_numpy(dyadic_embeddings(gen, 300, 32))
    ref = reference_metrics(
        exact_cosines(queries.numpy(), gallery.numpy()), query_ids, gallery_ids, (1, 5, 10)
    )
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        got = retrieval_metrics(
            queries.cuda().to(dtype), gallery.cuda().to(dtype), query_ids, gallery_ids, chunk_size=64
        )
        assert_metrics_close(got, ref)
    got = retrieval_metrics(queries, gallery, query_ids, gallery_ids, device="cuda")
    assert_metrics_close(got, ref)


# ----------------------------------------------------------------------------------------------
# the `evaluate` module


def test_evaluate_module_wraps_the_function():
    evaluate = pytest.importorskip("evaluate")
    from pathlib import Path

    metric = evaluate.load(
        str(Path(__file__).resolve().parents[1] / "evaluation" / "metrics" / "person_retrieval")
    )
    got = metric.compute(
        predictions=SPEC_SIMILARITY.tolist(),
        references=[3, 9],
        gallery_embeddings=np.eye(6),
        gallery_ids=SPEC_GALLERY_IDS,
        ks=[1, 2],
    )
    assert_metrics_close(got, SPEC_EXPECTED)
    gen = np.random.default_rng(5)
    gallery_ids = list(gen.integers(0, 10, size=50))
    query_ids = [int(i) for i in gen.choice(sorted(set(gallery_ids)), size=30)]
    gallery, queries = dyadic_embeddings(gen, 50, 16), dyadic_embeddings(gen, 30, 16)
    for start in range(0, 30, 8):  # incremental add_batch as in an evaluation loop
        metric.add_batch(
            predictions=queries[start : start + 8].tolist(), references=query_ids[start : start + 8]
        )
    got = metric.compute(gallery_embeddings=torch.from_numpy(gallery), gallery_ids=gallery_ids)
    assert_metrics_close(
        got, reference_metrics(exact_cosines(queries, gallery), query_ids, gallery_ids, (1, 5, 10))
    )
    with pytest.raises(ValueError, match="gallery_embeddings"):
        metric.compute(predictions=[[1.0, 0.0]], references=[1])
