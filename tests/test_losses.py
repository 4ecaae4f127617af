"""Losses (docs/method.md section 5): SDM by hand and against a loop reference, MTP / ID by hand, and the two-process
(gloo, loopback) checks: gathered SDM equals one process on the concatenated batch, and ScoreBank sync (the
trainer's way: `all_gather_variable` of the step's indices and scores, then the same `update` everywhere)."""

import importlib
import math
import os
import socket
import sys
import types
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

WORKER_ENV = "GADMS_TEST_DIST_WORKER"


def _standalone_modules():
    """`losses`, `score_bank` and `distributed` imported from their files without the package `__init__` (which
    imports transformers, seconds per process): they need only torch. Used by the spawned worker processes."""
    name = "_gadms_losses_standalone"
    if name not in sys.modules:
        package = types.ModuleType(name)
        package.__path__ = [str(Path(__file__).resolve().parents[1] / "modeling_gadms")]
        sys.modules[name] = package
    modules = ("losses", "score_bank", "distributed")
    return tuple(importlib.import_module(f"{name}.{module}") for module in modules)


if os.environ.get(WORKER_ENV) == "1":  # a spawned worker process
    _losses, _score_bank, _distributed = _standalone_modules()
else:
    from modeling_gadms import distributed as _distributed
    from modeling_gadms import losses as _losses
    from modeling_gadms import score_bank as _score_bank

sdm_loss = _losses.sdm_loss
gather_features, all_gather_variable = _distributed.gather_features, _distributed.all_gather_variable
world_size = _distributed.world_size
id_loss, mtp_loss = _losses.id_loss, _losses.mtp_loss
ScoreBank = _score_bank.ScoreBank

EPS = 1e-8


def softmax(xs: list[float]) -> list[float]:
    m = max(xs)
    e = [math.exp(x - m) for x in xs]
    return [x / sum(e) for x in e]


def ref_sdm(images: list[list[float]], texts: list[list[float]], ids: list[int], scale: float) -> float:
    """Straightforward loop reference of SDM (docs/method.md section 5) in plain Python floats."""

    def unit(v):
        n = math.sqrt(sum(x * x for x in v))
        return [x / n for x in v]

    images, texts = [unit(v) for v in images], [unit(t) for t in texts]
    n = len(ids)
    cos = [[sum(a * b for a, b in zip(images[i], texts[j])) for j in range(n)] for i in range(n)]

    def direction(sim):
        total = 0.0
        for i in range(n):
            p = softmax([sim[i][j] * scale for j in range(n)])
            y = [1.0 if ids[i] == ids[j] else 0.0 for j in range(n)]
            q = [y_j / sum(y) for y_j in y]
            total += sum(p[j] * (math.log(p[j]) - math.log(q[j] + EPS)) for j in range(n))
        return total / n

    cos_t = [[cos[j][i] for j in range(n)] for i in range(n)]
    return direction(cos) + direction(cos_t)


# -- SDM --------------------------------------------------------------------------------------------------------


def test_sdm_hand_computed_2x2():
    # v1 = (1, 0), v2 = (0, 1); t1 = (2, 0) -> (1, 0), t2 = (1, 1) -> (1, 1)/sqrt(2); logit scale 2.
    # cos (images x texts) = [[1, r], [0, r]] with r = 1/sqrt(2).
    images = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    texts = torch.tensor([[2.0, 0.0], [1.0, 1.0]])
    r = 1 / math.sqrt(2)

    def kl_row(logits, q):
        z = sum(math.exp(x) for x in logits)
        p = [math.exp(x) / z for x in logits]
        return sum(pj * (math.log(pj) - math.log(qj + EPS)) for pj, qj in zip(p, q))

    # Different persons: q = identity.
    i2t = (kl_row([2.0, 2 * r], [1, 0]) + kl_row([0.0, 2 * r], [0, 1])) / 2
    t2i = (kl_row([2.0, 0.0], [1, 0]) + kl_row([2 * r, 2 * r], [0, 1])) / 2
    got = sdm_loss(images, texts, torch.tensor([3, 8]), logit_scale=2.0)
    assert got.item() == pytest.approx(i2t + t2i, rel=1e-5)
    # Hand numbers of one term: p(row 1 of i2t) = softmax(2, 1.41421) = (0.64239, 0.35761).
    assert kl_row([2.0, 2 * r], [1, 0]) == pytest.approx(
        0.64239 * math.log(0.64239) + 0.35761 * (math.log(0.35761) - math.log(1e-8)), rel=1e-4
    )
    # Same person: q = 1/2 everywhere.
    i2t = (kl_row([2.0, 2 * r], [0.5, 0.5]) + kl_row([0.0, 2 * r], [0.5, 0.5])) / 2
    t2i = (kl_row([2.0, 0.0], [0.5, 0.5]) + kl_row([2 * r, 2 * r], [0.5, 0.5])) / 2
    got = sdm_loss(images, texts, torch.tensor([4, 4]), logit_scale=2.0)
    assert got.item() == pytest.approx(i2t + t2i, rel=1e-5)
    # Text rows 2 of t2i: equal logits, p = q = 1/2: a zero term (up to epsilon).
    assert kl_row([2 * r, 2 * r], [0.5, 0.5]) == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sdm_matches_loop_reference(seed):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(7, 5, generator=g, dtype=torch.float64)
    texts = torch.randn(7, 5, generator=g, dtype=torch.float64)
    ids = torch.randint(0, 4, (7,), generator=g)
    for scale in (1.0, 50.0):
        expected = ref_sdm(images.tolist(), texts.tolist(), ids.tolist(), scale)
        got = sdm_loss(images, texts, ids, logit_scale=scale)
        assert got.dtype == torch.float32
        assert got.item() == pytest.approx(expected, rel=1e-4)
        # A tensor logit scale and half inputs are accepted (upcast to float32 inside).
        got_t = sdm_loss(images.half(), texts.half(), ids, logit_scale=torch.tensor(scale), gather=False)
        assert got_t.item() == pytest.approx(expected, rel=2e-2)


def test_sdm_is_scale_invariant_in_embedding_norm_and_checks_shapes():
    g = torch.Generator().manual_seed(3)
    images, texts = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)
    ids = torch.tensor([0, 1, 1, 2])
    a = sdm_loss(images, texts, ids, 50.0)
    b = sdm_loss(3.0 * images, 0.5 * texts, ids, 50.0)
    assert a.item() == pytest.approx(b.item(), rel=1e-5)
    with pytest.raises(ValueError, match="same shape"):
        sdm_loss(images, texts[:3], ids, 50.0)
    with pytest.raises(ValueError, match="person_ids"):
        sdm_loss(images, texts, ids[:3], 50.0)


# -- MTP / ID -----------------------------------------------------------------------------------------------------


def test_mtp_loss_hand_computed():
    logits = torch.tensor([[[1.0, 2.0, 3.0], [0.0, 0.0, 0.0], [5.0, 1.0, 1.0]]])  # [1, 3, 3]
    labels = torch.tensor([[0, -100, 2]])
    ce0 = -math.log(math.exp(1) / (math.exp(1) + math.exp(2) + math.exp(3)))  # 2.40761
    ce2 = -math.log(math.exp(1) / (math.exp(5) + 2 * math.exp(1)))  # 4.03629
    assert ce0 == pytest.approx(2.40761, rel=1e-5)
    assert mtp_loss(logits, labels).item() == pytest.approx((ce0 + ce2) / 2, rel=1e-6)
    # Token-level mean over the whole batch: a second caption with one target.
    logits2 = torch.cat([logits, torch.tensor([[[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]])])
    labels2 = torch.cat([labels, torch.tensor([[-100, 1, -100]])])
    assert mtp_loss(logits2, labels2).item() == pytest.approx((ce0 + ce2 + math.log(3)) / 3, rel=1e-6)


def test_mtp_loss_without_targets_is_zero_not_nan():
    logits = torch.randn(2, 4, 10, requires_grad=True)
    loss = mtp_loss(logits, torch.full((2, 4), -100))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))
    with pytest.raises(ValueError, match="do not match"):
        mtp_loss(logits, torch.zeros(2, 3, dtype=torch.long))


def test_id_loss_hand_computed():
    image_logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    text_logits = torch.tensor([[0.0, 0.0], [3.0, 0.0]])
    ids = torch.tensor([0, 1])
    ce_image = (-math.log(math.exp(2) / (math.exp(2) + 1)) - math.log(math.exp(1) / (1 + math.exp(1)))) / 2
    ce_text = (math.log(2) - math.log(1 / (math.exp(3) + 1))) / 2
    assert id_loss(image_logits, text_logits, ids).item() == pytest.approx((ce_image + ce_text) / 2, rel=1e-6)


def test_gather_features_single_process_is_identity():
    x = torch.randn(3, 4, requires_grad=True)
    assert gather_features(x) is x
    assert world_size() == 1
    assert all_gather_variable(x) is x
    gathered, sizes = all_gather_variable(x, return_sizes=True)
    assert gathered is x and sizes == [3]


# -- two processes (gloo on loopback) -----------------------------------------------------------------------------

SPLITS = [(0, 3), (3, 8)]  # unequal local batches: 3 and 5 rows
BANK_UPDATES = [([1, 4, 7], 0.25), ([2, 5, 7, 9], 0.75)]  # index 7 on both: the later rank wins


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, folder: str) -> None:
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
        timeout=timedelta(seconds=60),
    )
    try:
        data = torch.load(Path(folder) / "data.pt")
        lo, hi = SPLITS[rank]
        images = data["images"][lo:hi].clone().requires_grad_(True)
        texts = data["texts"][lo:hi].clone().requires_grad_(True)
        loss = sdm_loss(images, texts, data["ids"][lo:hi], logit_scale=50.0)
        loss.backward()
        order = gather_features(torch.arange(lo, hi))

        processes = world_size()
        bank = ScoreBank(12, seq_len=4)
        indices, value = BANK_UPDATES[rank]
        before = bank.get(torch.tensor([0, 11]))
        local_indices, local_scores = torch.tensor(indices), torch.full((len(indices), 4), value)
        # As the trainer does: gather every process's rows, then the same update on every process.
        gathered_indices = all_gather_variable(local_indices)
        gathered_scores = all_gather_variable(local_scores)
        bank.update(gathered_indices, gathered_scores)
        # The bank itself does not communicate: an update with local rows only stays local.
        local = ScoreBank(12, seq_len=4)
        local.update(local_indices, local_scores)
        torch.save(
            {
                "loss": loss.detach(),
                "image_grad": images.grad,
                "text_grad": texts.grad,
                "order": order,
                "bank": bank.state_dict()["scores"],
                "local_bank": local.state_dict()["scores"],
                "gathered_indices": gathered_indices,
                "world_size": processes,
                "before": before,
            },
            Path(folder) / f"rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dist")
    g = torch.Generator().manual_seed(0)
    data = {
        "images": torch.randn(8, 16, generator=g, dtype=torch.float64),
        "texts": torch.randn(8, 16, generator=g, dtype=torch.float64),
        "ids": torch.tensor([0, 1, 0, 2, 3, 1, 3, 4]),  # positives across the two processes
    }
    torch.save(data, folder / "data.pt")
    os.environ[WORKER_ENV] = "1"  # inherited by the spawned processes
    try:
        mp.spawn(_worker, args=(2, _free_port(), str(folder)), nprocs=2, join=True)
    finally:
        del os.environ[WORKER_ENV]
    return data, [torch.load(folder / f"rank{r}.pt") for r in range(2)]


def test_gathered_sdm_equals_single_process(two_process_run):
    data, results = two_process_run
    images = data["images"].clone().requires_grad_(True)
    texts = data["texts"].clone().requires_grad_(True)
    loss = sdm_loss(images, texts, data["ids"], logit_scale=50.0)
    loss.backward()
    for rank, (lo, hi) in enumerate(SPLITS):
        res = results[rank]
        assert res["order"].tolist() == list(range(8))  # rank order
        assert res["loss"].item() == pytest.approx(loss.item(), rel=1e-6)
        assert torch.allclose(res["image_grad"], images.grad[lo:hi], rtol=1e-4, atol=1e-7)
        assert torch.allclose(res["text_grad"], texts.grad[lo:hi], rtol=1e-4, atol=1e-7)
        assert res["image_grad"].abs().sum() > 0


def test_score_bank_identical_on_all_processes(two_process_run):
    _, results = two_process_run
    assert [res["world_size"] for res in results] == [2, 2]
    for res in results:  # every process's indices, in rank order
        assert res["gathered_indices"].tolist() == BANK_UPDATES[0][0] + BANK_UPDATES[1][0]
    bank0, bank1 = results[0]["bank"], results[1]["bank"]
    assert torch.equal(bank0, bank1)
    expected = torch.full((12, 4), 0.85).half()
    for indices, value in BANK_UPDATES:
        expected[indices] = value
    assert torch.equal(bank0, expected)  # both processes' updates, index 7 from rank 1
    assert expected[7, 0].item() == 0.75 and expected[1, 0].item() == 0.25 and expected[2, 0].item() == 0.75
    assert torch.allclose(results[0]["before"], torch.full((2, 4), 0.85), atol=5e-4)
    # Without the gather each process's bank holds its own update only.
    for rank, (indices, value) in enumerate(BANK_UPDATES):
        own = torch.full((12, 4), 0.85).half()
        own[indices] = value
        assert torch.equal(results[rank]["local_bank"], own)
    assert not torch.equal(results[0]["local_bank"], results[1]["local_bank"])
