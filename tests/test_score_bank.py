"""ScoreBank (docs/method.md section 3): initial value, get/update, checkpointing, errors, memory, dtype."""

import pytest
import torch

from modeling_gadms import GADMSConfig, GADMSObjectiveConfig
from modeling_gadms.score_bank import ScoreBank


def test_initial_value_shape_and_dtypes():
    bank = ScoreBank(10)
    assert len(bank) == 10 and bank.num_samples == 10 and bank.seq_len == 77
    assert bank.dtype == torch.float16 and bank.device == torch.device("cpu")
    got = bank.get(torch.tensor([0, 3, 9]))
    assert got.dtype == torch.float32 and got.shape == (3, 77)
    # exactly 0.85 (as float32) until written, although 0.85 is not a float16 number
    assert torch.equal(got, torch.full((3, 77), 0.85))
    assert not bank.visited.any()


def test_from_config_uses_initial_score_and_context_length():
    # The context length comes from the model config, the initial score from the objective settings.
    config = GADMSConfig(text_config={"max_position_embeddings": 32})
    objective = GADMSObjectiveConfig(initial_token_score=0.5)
    bank = ScoreBank.from_config(config, num_samples=4, objective=objective)
    assert bank.seq_len == 32 and (bank.get(torch.arange(4)) == 0.5).all()
    assert ScoreBank.from_config(GADMSConfig(), 2).seq_len == 77
    # Without objective settings: the default 0.85; an explicit initial_score wins.
    default = ScoreBank.from_config(config, 3)
    assert default.initial_score == 0.85 == GADMSObjectiveConfig().initial_token_score
    assert torch.equal(default.get(torch.arange(3)), torch.full((3, 32), 0.85))
    explicit = ScoreBank.from_config(config, 3, objective=objective, initial_score=0.25, dtype=torch.float32)
    assert explicit.dtype == torch.float32 and (explicit.get(torch.arange(3)) == 0.25).all()


def test_update_then_get_round_trip():
    bank = ScoreBank(20)
    g = torch.Generator().manual_seed(0)
    new = torch.rand(4, 77, generator=g)
    idx = torch.tensor([2, 17, 5, 0])
    before_others = bank.get(torch.tensor([1, 3, 19]))
    bank.update(idx, new)
    got = bank.get(idx)
    assert (got - new).abs().max() < 5e-4  # float16 storage: below half a float16 step in [0, 1]
    assert torch.equal(got, new.half().float())
    assert torch.equal(bank.get(torch.tensor([1, 3, 19])), before_others)  # others untouched
    # get returns a copy: modifying it does not touch the bank
    got.zero_()
    assert torch.equal(bank.get(idx), new.half().float())
    # indices in another integer dtype, scores in another float dtype
    bank.update(torch.tensor([7], dtype=torch.int32), torch.zeros(1, 77, dtype=torch.float64))
    assert (bank.get(torch.tensor([7])) == 0).all()


def test_duplicate_indices_last_value_wins():
    bank = ScoreBank(5, seq_len=3)
    bank.update(torch.tensor([1, 2, 1, 1]), torch.tensor([[0.1] * 3, [0.2] * 3, [0.3] * 3, [0.5] * 3]))
    assert torch.allclose(bank.get(torch.tensor([1, 2])), torch.tensor([[0.5] * 3, [0.2] * 3]), atol=1e-3)


def test_float32_storage_and_memory_estimate():
    bank16 = ScoreBank(100)
    bank32 = ScoreBank(100, dtype=torch.float32)
    assert bank16.bytes_per_sample == 77 * 2 == 154 and bank32.bytes_per_sample == 308
    assert bank16.nbytes == bank16.scores.numel() * bank16.scores.element_size() == 15400
    assert bank32.nbytes == 30800
    new = torch.rand(1, 77, dtype=torch.float64)
    bank32.update(torch.tensor([4]), new)
    assert torch.equal(bank32.get(torch.tensor([4])), new.float())
    # WebPerson: 10,005,446 captions fit in about 1.54 GB at float16.
    webperson = ScoreBank.estimate_nbytes(10_005_446)
    assert webperson == 10_005_446 * 154 and 1.5e9 < webperson < 1.6e9
    assert ScoreBank.estimate_nbytes(10, dtype=torch.float32) == 10 * 77 * 4
    assert "nbytes=15400" in repr(bank16)
    with pytest.raises(ValueError, match="floating-point"):
        ScoreBank(3, dtype=torch.int64)


def test_out_of_range_and_malformed_arguments():
    bank = ScoreBank(6)
    with pytest.raises(IndexError, match="sample index 6 is out of range.*6 samples"):
        bank.get(torch.tensor([0, 6]))
    with pytest.raises(IndexError, match="sample index -1"):
        bank.get(torch.tensor([-1]))
    with pytest.raises(IndexError, match="sample index 100"):
        bank.update(torch.tensor([1, 100]), torch.zeros(2, 77))
    assert (bank.get(torch.tensor([1])) == bank.get(torch.tensor([2]))).all()  # failed update changed nothing
    with pytest.raises(ValueError, match="shape"):
        bank.update(torch.tensor([1, 2]), torch.zeros(2, 76))
    with pytest.raises(ValueError, match="shape"):
        bank.update(torch.tensor([1, 2]), torch.zeros(3, 77))
    with pytest.raises(ValueError, match="1-D"):
        bank.get(torch.tensor([[1]]))
    with pytest.raises(TypeError, match="integer"):
        bank.get(torch.tensor([1.0]))
    assert bank.get(torch.tensor([], dtype=torch.long)).shape == (0, 77)
    bank.update(torch.tensor([], dtype=torch.long), torch.zeros(0, 77))  # no-op


def test_state_dict_round_trip(tmp_path):
    bank = ScoreBank(8, initial_score=0.85)
    bank.update(torch.tensor([1, 6]), torch.rand(2, 77, generator=torch.Generator().manual_seed(1)))
    state = bank.state_dict()
    assert state["scores"].dtype == torch.float16 and state["scores"].shape == (8, 77)
    torch.save(state, tmp_path / "bank.pt")
    other = ScoreBank(8)
    other.update(torch.tensor([0]), torch.zeros(1, 77))
    other.load_state_dict(torch.load(tmp_path / "bank.pt"))
    assert torch.equal(other.scores, bank.scores)
    assert torch.equal(other.get(torch.arange(8)), bank.get(torch.arange(8)))
    # the state is a copy: later updates do not change it
    bank.update(torch.tensor([1]), torch.zeros(1, 77))
    assert not torch.equal(state["scores"], bank.scores)
    # a float32 bank loads a float16 state (converted)
    wide = ScoreBank(8, dtype=torch.float32)
    wide.load_state_dict(state)
    assert wide.scores.dtype == torch.float32 and torch.equal(wide.scores, state["scores"].float())
    assert wide.visited.tolist() == [False, True, False, False, False, False, True, False]


def test_unwritten_samples_read_the_exact_initial_score_also_after_a_legacy_state():
    """Written samples read their stored (float16) scores, the others exactly 0.85; a state saved without
    `visited` marks a sample written when any of its scores differs from the stored initial value."""
    bank = ScoreBank(4)
    new = torch.full((1, 77), 0.3)
    bank.update(torch.tensor([2]), new)
    got = bank.get(torch.arange(4))
    assert torch.equal(got[[0, 1, 3]], torch.full((3, 77), 0.85))
    assert torch.equal(got[2], new[0].half().float())
    legacy = {k: v for k, v in bank.state_dict().items() if k != "visited"}
    other = ScoreBank(4)
    other.load_state_dict(legacy)
    assert other.visited.tolist() == [False, False, True, False]
    assert torch.equal(other.get(torch.arange(4)), got)


def test_load_state_dict_validates():
    bank = ScoreBank(8)
    with pytest.raises(ValueError, match=r"shape \(9, 77\).*\(8, 77\)"):
        bank.load_state_dict(ScoreBank(9).state_dict())
    with pytest.raises(ValueError, match=r"shape \(8, 32\)"):
        bank.load_state_dict(ScoreBank(8, seq_len=32).state_dict())
    with pytest.raises(KeyError, match="scores"):
        bank.load_state_dict({"initial_score": 0.85})
    with pytest.raises(TypeError, match="tensor"):
        bank.load_state_dict({"scores": [[0.0] * 77] * 8})
