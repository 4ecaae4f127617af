"""Dual masking and random MLM masking (docs/method.md section 4): eligibility, rates, 80/10/10 split, forced targets."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from modeling_gadms import GADMSConfig, GADMSObjectiveConfig
from modeling_gadms.masking import (
    DualMaskingOutput,
    dual_masking,
    informative_mask_probability,
    noise_mask_probability,
    ordinary_token_mask,
    random_mlm_masking,
    replace_tokens,
)

CONFIG = GADMSConfig()  # the ids: mask 49405, SOT 49406, EOT 49407
SETTINGS = GADMSObjectiveConfig()  # alpha 0.2 / 0.3, lambda 20, gamma 0.9 / 0.1; MLM 0.15; 80/10/10
MASK, SOT, EOT = 49405, 49406, 49407
SCORE_VALUES = [0.0, 0.05, 0.1, 0.15, 0.2, 0.5, 0.85, 1.0]


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def ref_noise(s: float) -> float:
    return 0.2 * sigmoid(20.0 * ((1.0 - s) - 0.9))


def ref_informative(s: float) -> float:
    return 0.3 * sigmoid(20.0 * (s - 0.1))


def within(count: int, n: int, p: float, sigmas: float = 5.0) -> bool:
    """`count` successes of `n` Bernoulli(p) draws lie within `sigmas` binomial standard deviations (+1 slack)."""
    return abs(count - n * p) <= sigmas * math.sqrt(n * p * (1 - p)) + 1


def make_batch(n: int, min_len: int, max_len: int, seed: int, premasked: float = 0.02, pad_id: int = 0):
    """Captions of `min_len..max_len` ordinary tokens (a few already `<|mask|>`), SOT/EOT, padded to 77;
    per-token scores drawn from SCORE_VALUES. Returns (input_ids, scores, eos positions)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, MASK, (n, 77), generator=g)
    ids[torch.rand(n, 77, generator=g) < premasked] = MASK
    lengths = torch.randint(min_len, max_len + 1, (n,), generator=g)
    pos = torch.arange(77).unsqueeze(0)
    eos = (lengths + 1).unsqueeze(1)
    ids = torch.where(pos == eos, torch.full_like(ids, EOT), ids)
    ids = torch.where(pos > eos, torch.full_like(ids, pad_id), ids)
    ids[:, 0] = SOT
    values = torch.tensor(SCORE_VALUES)
    scores = values[torch.randint(0, len(SCORE_VALUES), (n, 77), generator=g)]
    return ids, scores, eos.squeeze(1)


def reference_ordinary(row: list[int], eos_id: int, mask_id: int) -> list[bool]:
    """Loop reference: positions 1 <= j < first EOS that are not the mask token."""
    eos = row.index(eos_id) if eos_id in row else len(row)
    return [1 <= j < eos and tok != mask_id for j, tok in enumerate(row)]


# -- eligibility ---------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.lists(st.sampled_from([0, 1, 7, 500, 49404, MASK, SOT, EOT]), min_size=12, max_size=12),
        min_size=1,
        max_size=6,
    )
)
def test_ordinary_token_mask_matches_loop_reference(rows):
    ids = torch.tensor(rows)
    got = ordinary_token_mask(ids, EOT, MASK)
    assert got.dtype == torch.bool and got.shape == ids.shape
    assert got.tolist() == [reference_ordinary(r, EOT, MASK) for r in rows]


def test_ordinary_token_mask_example_and_eos_padding(tiny_tokenizer, tiny_config):
    ids = torch.tensor([[SOT, 11, MASK, 12, EOT, 0, 0], [SOT, EOT, 0, 0, 0, 0, 0], [SOT, 3, 4, 5, 6, 7, 8]])
    expected = [[0, 1, 0, 1, 0, 0, 0], [0] * 7, [0, 1, 1, 1, 1, 1, 1]]  # no EOT: everything after SOT counts
    assert ordinary_token_mask(ids, EOT, MASK).int().tolist() == expected
    # The tiny tokenizer pads with its EOT id: only the FIRST EOT ends the caption.
    enc = tiny_tokenizer(["a man in a red coat"], padding="max_length", max_length=12, return_tensors="pt")
    mask = ordinary_token_mask(enc.input_ids, tiny_config.text_config.eos_token_id, tiny_config.mask_token_id)
    row = enc.input_ids[0].tolist()
    eos = row.index(tiny_config.text_config.eos_token_id)
    assert 5 <= eos < 11 and set(row[eos:]) == {tiny_config.text_config.eos_token_id}  # EOT-padded
    assert mask.int().tolist() == [[0] + [1] * (eos - 1) + [0] * (12 - eos)]


def test_probability_curves_match_formula():
    s = torch.tensor(SCORE_VALUES + [0.37, 0.93])
    noise = noise_mask_probability(s, 0.2, 20, 0.9)
    inform = informative_mask_probability(s, 0.3, 20, 0.1)
    for i, value in enumerate(s.tolist()):
        assert noise[i].item() == pytest.approx(ref_noise(value), rel=1e-5, abs=1e-9)
        assert inform[i].item() == pytest.approx(ref_informative(value), rel=1e-5, abs=1e-9)
    # Both curves are centred at s = 0.1 (half their maximum there).
    assert noise_mask_probability(torch.tensor(0.1), 0.2, 20, 0.9).item() == pytest.approx(0.1)
    assert informative_mask_probability(torch.tensor(0.1), 0.3, 20, 0.1).item() == pytest.approx(0.15)
    # Half-precision scores are computed in float32.
    assert noise_mask_probability(s.half(), 0.2, 20, 0.9).dtype == torch.float32


# -- dual masking: rates, specials, independence ---------------------------------------------------------------


@pytest.fixture(scope="module")
def drawn():
    """Several thousand long captions (forced MTP targets are then vanishingly rare) and one dual masking draw."""
    ids, scores, eos = make_batch(4000, 55, 75, seed=1)
    out = dual_masking(ids, scores, SETTINGS, CONFIG, generator=torch.Generator().manual_seed(2))
    return ids, scores, eos, out


def test_empirical_rates_match_formula_per_score(drawn):
    ids, scores, _, out = drawn
    assert isinstance(out, DualMaskingOutput)
    eligible = torch.tensor([reference_ordinary(r, EOT, MASK) for r in ids.tolist()])
    for value in SCORE_VALUES:
        sel = eligible & (scores == value)
        n = int(sel.sum())
        assert n > 20000
        k_noise = int((out.noise_mask & sel).sum())
        k_mtp = int((out.mtp_mask & sel).sum())
        assert within(k_noise, n, ref_noise(value)), (value, k_noise / n, ref_noise(value))
        assert within(k_mtp, n, ref_informative(value)), (value, k_mtp / n, ref_informative(value))


def test_specials_never_chosen_or_changed(drawn):
    ids, _, eos, out = drawn
    eligible = torch.tensor([reference_ordinary(r, EOT, MASK) for r in ids.tolist()])
    assert torch.equal(out.eligible, eligible)
    for chosen, new_ids in ((out.noise_mask, out.noise_input_ids), (out.mtp_mask, out.mtp_input_ids)):
        assert not (chosen & ~eligible).any()
        changed = new_ids != ids
        assert not (changed & ~chosen).any()  # only chosen positions change
        assert (new_ids[:, 0] == SOT).all()
        assert (new_ids.gather(1, eos.unsqueeze(1)) == EOT).all()
        assert (new_ids[torch.arange(77).unsqueeze(0) > eos.unsqueeze(1)] == 0).all()
        assert not (chosen & (ids == MASK)).any()  # existing mask tokens are never chosen
        assert (new_ids[changed] <= MASK).all()  # replacements are the mask token or ordinary ids


def test_mtp_labels(drawn):
    ids, _, _, out = drawn
    assert out.mtp_labels.dtype == torch.long
    assert torch.equal(out.mtp_labels[out.mtp_mask], ids[out.mtp_mask])
    assert (out.mtp_labels[~out.mtp_mask] == -100).all()


def test_views_are_independent(drawn):
    ids, scores, _, out = drawn
    eligible = out.eligible
    p_joint = [ref_noise(v) * ref_informative(v) for v in scores[eligible].tolist()]
    expected = sum(p_joint)
    var = sum(p * (1 - p) for p in p_joint)
    joint = int((out.noise_mask & out.mtp_mask).sum())
    assert abs(joint - expected) <= 5 * math.sqrt(var) + 1, (joint, expected)
    # At s = 0.1 both curves are at half height: joint rate 0.1 * 0.15.
    sel = eligible & (scores == 0.1)
    n = int(sel.sum())
    assert within(int((out.noise_mask & out.mtp_mask & sel).sum()), n, 0.1 * 0.15)


def test_replacement_split_80_10_10(drawn):
    ids, _, _, out = drawn
    for chosen, new_ids in ((out.noise_mask, out.noise_input_ids), (out.mtp_mask, out.mtp_input_ids)):
        n = int(chosen.sum())
        to_mask = int((chosen & (new_ids == MASK)).sum())
        unchanged = int((chosen & (new_ids == ids)).sum())
        to_random = n - to_mask - unchanged
        p_same = 1.0 / MASK  # a random draw equal to the original id
        assert within(to_mask, n, 0.8)
        assert within(unchanged, n, 0.1 + 0.1 * p_same)
        assert within(to_random, n, 0.1 * (1 - p_same))


def test_replace_tokens_random_ids_are_uniform_ordinary_ids(tiny_config):
    mask_id = tiny_config.mask_token_id  # 713: a small vocabulary shows the range well
    g = torch.Generator().manual_seed(3)
    ids = torch.full((3000, 77), 5)
    chosen = torch.ones_like(ids, dtype=torch.bool)
    new = replace_tokens(ids, chosen, mask_id, 0.0, 1.0, generator=g)  # every chosen token: a random id
    assert new.min() >= 0 and new.max() < mask_id
    counts = torch.bincount(new.flatten(), minlength=mask_id).double()
    expected = new.numel() / mask_id
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    dof = mask_id - 1
    assert abs(chi2 - dof) < 6 * math.sqrt(2 * dof), chi2
    # Unchosen positions never change; the input is not modified.
    none = replace_tokens(ids, torch.zeros_like(chosen), mask_id, generator=g)
    assert torch.equal(none, ids) and (ids == 5).all()
    with pytest.raises(ValueError, match="sum to <= 1"):
        replace_tokens(ids, chosen, mask_id, 0.8, 0.3)


def test_forced_mtp_target_when_nothing_can_be_chosen():
    objective = GADMSObjectiveConfig(mask_alpha_informative=0.0)  # informative probability 0 everywhere
    ids = torch.tensor(
        [
            [SOT, 11, 12, 13, EOT, 0, 0, 0],
            [SOT, MASK, MASK, 14, 15, EOT, 0, 0],  # first ordinary token is position 3
            [SOT, EOT, 0, 0, 0, 0, 0, 0],  # no ordinary token: no target
            [SOT, MASK, EOT, 0, 0, 0, 0, 0],  # only a mask token: no target
        ]
    )
    scores = torch.zeros(ids.shape)
    for seed in range(5):
        out = dual_masking(ids, scores, objective, CONFIG, generator=torch.Generator().manual_seed(seed))
        assert out.mtp_mask.int().tolist() == [
            [0, 1, 0, 0, 0, 0, 0, 0],
            [0, 0, 0, 1, 0, 0, 0, 0],
            [0] * 8,
            [0] * 8,
        ]
        assert out.mtp_labels[0].tolist() == [-100, 11] + [-100] * 6
        assert out.mtp_labels[1].tolist() == [-100] * 3 + [14] + [-100] * 4


def test_no_forcing_when_a_target_was_drawn(drawn):
    ids, _, _, out = drawn
    # With many eligible tokens nearly every caption has >1 natural target: the first ordinary token is not
    # systematically chosen (it would be, if targets were forced regardless).
    first = out.eligible.int().argmax(dim=1)
    first_rate = out.mtp_mask[torch.arange(ids.shape[0]), first].float().mean().item()
    assert first_rate < 0.3


def test_seeded_generator_is_deterministic(drawn):
    ids, scores, _, _ = drawn
    ids, scores = ids[:500], scores[:500]
    a = dual_masking(ids, scores, SETTINGS, CONFIG, generator=torch.Generator().manual_seed(7))
    b = dual_masking(ids, scores, SETTINGS, CONFIG, generator=torch.Generator().manual_seed(7))
    c = dual_masking(ids, scores, SETTINGS, CONFIG, generator=torch.Generator().manual_seed(8))
    for field in ("noise_input_ids", "mtp_input_ids", "mtp_labels", "noise_mask", "mtp_mask"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field
    assert not torch.equal(a.noise_mask, c.noise_mask) and not torch.equal(a.mtp_mask, c.mtp_mask)
    # The global RNG is used without a generator and follows torch.manual_seed.
    torch.manual_seed(11)
    d = dual_masking(ids, scores, SETTINGS, CONFIG)
    torch.manual_seed(11)
    e = dual_masking(ids, scores, SETTINGS, CONFIG)
    assert torch.equal(d.mtp_input_ids, e.mtp_input_ids) and torch.equal(d.noise_input_ids, e.noise_input_ids)


def test_dual_masking_accepts_half_scores_and_checks_shapes(drawn):
    ids, scores, _, _ = drawn
    generator = torch.Generator().manual_seed(0)
    out = dual_masking(ids[:10], scores[:10].half(), SETTINGS, CONFIG, generator=generator)
    assert out.noise_input_ids.dtype == ids.dtype and out.noise_input_ids.shape == (10, 77)
    with pytest.raises(ValueError, match="same shape"):
        dual_masking(ids[:10], scores[:9], SETTINGS, CONFIG)


# -- random MLM masking ------------------------------------------------------------------------------------------


def test_random_mlm_rate_split_and_labels():
    ids, _, _ = make_batch(3000, 55, 75, seed=4)
    out = random_mlm_masking(ids, SETTINGS, CONFIG, generator=torch.Generator().manual_seed(5))
    eligible = torch.tensor([reference_ordinary(r, EOT, MASK) for r in ids.tolist()])
    n = int(eligible.sum())
    assert not (out.mask & ~eligible).any()
    assert within(int(out.mask.sum()), n, 0.15)
    assert torch.equal(out.labels[out.mask], ids[out.mask]) and (out.labels[~out.mask] == -100).all()
    k = int(out.mask.sum())
    assert within(int((out.mask & (out.input_ids == MASK)).sum()), k, 0.8)
    assert within(int((out.mask & (out.input_ids == ids)).sum()), k, 0.1 + 0.1 / MASK)
    assert not ((out.input_ids != ids) & ~out.mask).any()


def test_random_mlm_forces_one_target_and_explicit_arguments():
    ids = torch.tensor([[SOT, 11, 12, EOT, 0], [SOT, EOT, 0, 0, 0]])
    out = random_mlm_masking(
        ids, probability=0.0, mask_token_id=MASK, eos_token_id=EOT, generator=torch.Generator().manual_seed(0)
    )
    assert out.mask.int().tolist() == [[0, 1, 0, 0, 0], [0] * 5]
    assert out.labels.tolist() == [[-100, 11, -100, -100, -100], [-100] * 5]
    everything = random_mlm_masking(ids, SETTINGS, CONFIG, probability=1.0, replace_prob=1.0, random_prob=0.0)
    assert everything.input_ids.tolist() == [[SOT, MASK, MASK, EOT, 0], [SOT, EOT, 0, 0, 0]]
    with pytest.raises(ValueError, match="mask_token_id"):
        random_mlm_masking(ids, probability=0.15, eos_token_id=EOT)


def test_curves_come_from_the_settings_and_ids_from_the_config(tiny_config):
    """`settings` (GADMSObjectiveConfig) gives the probabilities and the replacement split; `config`
    (GADMSConfig) gives the mask and end-of-text ids."""
    mask = tiny_config.mask_token_id
    sot, eot = tiny_config.text_config.bos_token_id, tiny_config.text_config.eos_token_id
    ids = torch.tensor([[sot, 11, 12, 13, 14, eot, 0, 0]] * 200)
    scores = torch.full(ids.shape, 0.5)
    always = GADMSObjectiveConfig(mask_alpha_noise=1.0, mask_lambda=0.0, mask_gamma_noise=0.0,
                                  mask_alpha_informative=0.0, mask_replace_prob=1.0, mask_random_prob=0.0)
    # lambda 0: p_noise = alpha * sigmoid(0) = 0.5 everywhere; p_informative = 0 (forced first token only)
    out = dual_masking(ids, scores, always, tiny_config, generator=torch.Generator().manual_seed(0))
    eligible = out.eligible
    assert eligible.int().tolist()[0] == [0, 1, 1, 1, 1, 0, 0, 0]  # ended by the tiny config's EOT id
    assert within(int(out.noise_mask.sum()), int(eligible.sum()), 0.5)
    assert (out.noise_input_ids[out.noise_mask] == mask).all()  # replace_prob 1: the tiny config's mask id
    assert out.mtp_mask.int().tolist() == [[0, 1, 0, 0, 0, 0, 0, 0]] * 200
    # Random MLM: the rate and the split from the settings, the ids from the config.
    none = random_mlm_masking(ids, GADMSObjectiveConfig(mlm_probability=0.0), tiny_config)
    assert none.mask.int().tolist() == [[0, 1, 0, 0, 0, 0, 0, 0]] * 200  # only the forced target
    every = random_mlm_masking(ids, GADMSObjectiveConfig(mlm_probability=1.0, mask_replace_prob=1.0,
                                                         mask_random_prob=0.0), tiny_config)
    assert every.input_ids.tolist() == [[sot, mask, mask, mask, mask, eot, 0, 0]] * 200
