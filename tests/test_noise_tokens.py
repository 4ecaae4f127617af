"""The noise-token AUC (evaluation.noise_tokens) against hand-computed cases, and the shuffled-score ablation."""

import math

import pytest
import torch
import torch.nn.functional as F

from dataset_builders.synthetic import SyntheticPersonConfig, generate_records
from evaluation import noise_token_auc, noise_token_auc_of, noise_token_auc_on_split, noise_token_labels
from evaluation.noise_tokens import label_noise_tokens, noise_token_auc_ceiling, occlusion_scores
from modeling_gadms import GADMSModel
from modeling_gadms.masking import shuffle_scores


def test_auc_hand_computed():
    # clean {0.9, 0.5} above noise {0.1, 0.1}: every pair ordered right
    assert noise_token_auc([0.9, 0.1, 0.5, 0.1], [False, True, False, True]) == 1.0
    # clean {0.3, 0.5}, noise {0.3, 0.1}: pairs (0.3, 0.3) a tie = 1/2, the other three right: 3.5 / 4
    assert noise_token_auc([0.3, 0.3, 0.1, 0.5], [False, True, True, False]) == 0.875
    # all wrong
    assert noise_token_auc([0.0, 1.0], [False, True]) == 0.0
    # positions outside `valid` do not count: only (clean 0.2, noise 0.4) is left
    assert noise_token_auc([9.0, 0.2, 0.4, 9.0], [False, False, True, False], valid=[False, True, True, False]) == 0.0
    # nothing to rank
    assert noise_token_auc([0.1, 0.2], [False, False]) is None
    assert noise_token_auc([0.1, 0.2], [True, True]) is None
    with pytest.raises(ValueError, match="one entry per position"):
        noise_token_auc([0.1, 0.2], [True])


def test_labels_from_a_token_diff():
    # an inserted token, a replaced token, a removed one (nothing to label in the noisy caption)
    assert noise_token_labels([1, 2, 9, 3, 4], [1, 2, 3, 4]) == [False, False, True, False, False]
    assert noise_token_labels([1, 5, 3], [1, 2, 3]) == [False, True, False]
    assert noise_token_labels([1, 3], [1, 2, 3]) == [False, False]
    # an inserted sentence that repeats words of the caption: only the insertion is noise
    clean = [7, 1, 2, 3, 8]
    noisy = [7, 1, 2, 3, 1, 2, 8]
    assert sum(noise_token_labels(noisy, clean)) == 2


def _noisy_records(kinds, count=40):
    config = SyntheticPersonConfig(num_identities=20, images_per_identity=2, noise_rate=1.0, noise_kinds=kinds,
                                   seed=3)
    records = []
    for record in generate_records(config):
        for text, clean, noise in zip(record["captions"], record["clean_captions"], record["noise"]):
            records.append((record["image"], text, clean, noise))
        if len(records) >= count:
            break
    return records


def test_labels_on_synthetic_captions_find_exactly_the_fillers():
    from modeling_gadms.tokenization import build_tokenizer, merges_for_words
    from training.trainer import words_of

    records = _noisy_records(("filler",))
    # a vocabulary of the captions' words, as a from-scratch (`model: tiny`) training run builds it
    tokenizer = build_tokenizer(merges_for_words(words_of([r[1] for r in records] + [r[2] for r in records])))
    for _, text, clean, noise in records:
        noisy_ids, clean_ids = tokenizer(text)["input_ids"], tokenizer(clean)["input_ids"]
        labels = noise_token_labels(noisy_ids, clean_ids)
        found = [tokenizer.decode([t]).strip() for t, noisy in zip(noisy_ids, labels) if noisy]
        fillers = [tokenizer.decode(tokenizer.convert_tokens_to_ids([w])).strip()
                   for event in noise for words in event["detail"].split("; ") for w in tokenizer.tokenize(words)]
        # the fillers, and "an" where a filler before a vowel changed the article ("a white" -> "an actually white")
        assert sorted(w for w in found if w != "an") == sorted(fillers), (text, clean)


@pytest.fixture(scope="module")
def tiny_model(tiny_config):
    torch.manual_seed(0)
    return GADMSModel(tiny_config).eval()


def test_occlusion_scores_against_a_direct_computation(tiny_model, tiny_tokenizer, tiny_processor):
    image = _noisy_records(("irrelevant",), count=1)[0][0]
    ids = tiny_tokenizer("a man in a red coat")["input_ids"]
    pixel_values = tiny_processor(images=[image])["pixel_values"]
    with torch.no_grad():
        image_embeds = tiny_model.get_image_features(pixel_values)[0]
        scores = occlusion_scores(tiny_model, ids, image_embeds)

        def cosine(tokens):
            text = tiny_model.get_text_features(torch.tensor([tokens]), torch.ones(1, len(tokens), dtype=torch.long))
            return F.cosine_similarity(text[0], image_embeds, dim=0).item()

        full = cosine(ids)
        for j in range(1, len(ids) - 1):
            assert scores[j].item() == pytest.approx(full - cosine(ids[:j] + ids[j + 1:]), abs=1e-5)
    assert scores[0] == 0 and scores[-1] == 0


def test_auc_of_a_model_on_a_split(tiny_model, tiny_processor):
    records = _noisy_records(("irrelevant", "filler", "wrong_colour"), count=24)
    images, texts, clean = zip(*[(image, text, c) for image, text, c, _ in records])
    for method in ("gass-paper", "gass-released", "occlusion"):
        result = noise_token_auc_of(tiny_model, tiny_processor, images, texts, clean, method=method, batch_size=7)
        assert result.captions == len(records)  # every caption here is noisy and keeps some clean tokens
        assert 0.0 <= result.auc <= 1.0 and result.noise_tokens > 0 and result.clean_tokens > result.noise_tokens
        values = [v for v in result.per_caption if v is not None]
        assert math.isclose(result.auc, sum(values) / len(values))
    # the split form picks the noisy captions of each record, and names what is missing
    rows = [{"image": image, "caption1": text, "caption2": c, "caption1_clean": c, "caption2_clean": c}
            for image, text, c, _ in records[:5]]
    assert noise_token_auc_on_split(tiny_model, tiny_processor, rows, method="occlusion").captions == 5
    with pytest.raises(ValueError, match="caption1_clean"):
        noise_token_auc_on_split(tiny_model, tiny_processor, [{"image": None, "caption1": "a", "caption2": "b"}])
    with pytest.raises(ValueError, match="unknown method"):
        noise_token_auc_of(tiny_model, tiny_processor, images, texts, clean, method="attention")
    # a split without noise (built with noise 0): no caption to score, an AUC of nan, not a crash
    clean_rows = [{**row, "caption1": row["caption1_clean"]} for row in rows]
    for method in ("gass-paper", "occlusion"):
        empty = noise_token_auc_on_split(tiny_model, tiny_processor, clean_rows, method=method)
        assert empty.captions == 0 and math.isnan(empty.auc)
    assert label_noise_tokens(tiny_processor, [], []) == []
    assert noise_token_auc_ceiling(tiny_processor, [], [], {"red"})["captions"] == 0


def test_an_oracle_score_gets_auc_one_and_its_reverse_zero(tiny_model, tiny_processor, monkeypatch):
    """Token scores that are exactly `not noise` reach AUC 1 (and their reverse 0): the labels line up with the
    positions the scores are read at."""
    records = _noisy_records(("irrelevant", "filler", "wrong_colour"), count=12)
    images, texts, clean = zip(*[(image, text, c) for image, text, c, _ in records])
    tokenizer = tiny_processor.tokenizer

    def tokens(batch):
        return tokenizer(list(batch), truncation=True, max_length=tokenizer.model_max_length)["input_ids"]

    labels = {tuple(ids): noise_token_labels(ids, clean_ids) for ids, clean_ids in zip(tokens(texts), tokens(clean))}

    def oracle(sign):
        def scores(input_ids, pixel_values, variant, num_layers, scales):
            out = torch.zeros(input_ids.shape)
            for row, ids in enumerate(input_ids.tolist()):
                length = ids.index(tokenizer.eos_token_id) + 1
                out[row, :length] = torch.tensor([sign * (0.0 if noisy else 1.0) for noisy in labels[tuple(ids[:length])]])
            return out
        return scores

    monkeypatch.setattr(tiny_model, "compute_token_scores", oracle(1.0))
    assert noise_token_auc_of(tiny_model, tiny_processor, images, texts, clean).auc == 1.0
    monkeypatch.setattr(tiny_model, "compute_token_scores", oracle(-1.0))
    assert noise_token_auc_of(tiny_model, tiny_processor, images, texts, clean).auc == 0.0


def test_shuffle_scores_permutes_each_row_among_its_eligible_positions():
    generator = torch.Generator().manual_seed(0)
    scores = torch.rand(6, 12, generator=generator)
    eligible = torch.zeros(6, 12, dtype=torch.bool)
    for row, (start, stop) in enumerate([(1, 11), (1, 5), (1, 2), (3, 9), (1, 1), (0, 12)]):
        eligible[row, start:stop] = True
    moved = 0
    for seed in range(20):
        shuffled = shuffle_scores(scores, eligible, torch.Generator().manual_seed(seed))
        assert torch.equal(shuffled[~eligible], scores[~eligible])  # untouched elsewhere
        for row in range(6):
            assert torch.equal(shuffled[row][eligible[row]].sort().values, scores[row][eligible[row]].sort().values)
        moved += int((shuffled[0] != scores[0]).any())
    assert moved >= 18  # a 10-token row is almost never left in place
    # each eligible position of a row receives each value equally often (uniform permutation)
    counts = torch.zeros(4)
    row = torch.tensor([[0.0, 1.0, 2.0, 3.0, 4.0, 0.0]])
    mask = torch.tensor([[False, True, True, True, True, False]])
    for seed in range(2000):
        counts[int(shuffle_scores(row, mask, torch.Generator().manual_seed(seed))[0, 1].item()) - 1] += 1
    assert (counts - 500).abs().max() < 80


def _word_tokenizer(words):
    from modeling_gadms.tokenization import build_tokenizer, merges_for_words

    return build_tokenizer(merges_for_words(words))


def test_ceiling_oracles_hand_computed():
    from evaluation import noise_token_auc_ceiling

    tokenizer = _word_tokenizer(["a", "man", "in", "red", "blue", "coat", "basically"])
    # ordinary tokens: a man basically in a blue coat; noise: "basically" (filler) and "blue" (wrong colour)
    clean, noisy = "a man in a red coat", "a man basically in a blue coat"
    result = noise_token_auc_ceiling(tokenizer, [noisy], [clean], {"man", "red", "blue", "coat"})
    # words: clean scores {a 0, man 1, in 0, a 0, coat 1}; against basically (0): 2 above + 3 ties = 3.5,
    # against blue (1): 2 ties + 0 = 1; 4.5 of 10 pairs
    assert result["words"] == pytest.approx(0.45)
    # image-aware: blue scores -1, all 5 clean tokens above it: 3.5 + 5 of 10
    assert result["image_aware"] == pytest.approx(0.85)
    assert result["captions"] == 1
    # a clean caption has no noise token and does not count
    assert noise_token_auc_ceiling(tokenizer, [clean], [clean], {"man"})["captions"] == 0


def test_ceiling_oracles_put_split_words_back_together():
    from evaluation.noise_tokens import _word_membership

    tokenizer = _word_tokenizer(["a", "red"])  # "coat" has no merges: it becomes several byte-level tokens
    ids = tokenizer("a red coat")["input_ids"]
    pieces = tokenizer.convert_ids_to_tokens(ids)
    assert len(pieces) > 5  # SOT a red c o a t EOT (or similar)
    member = _word_membership(tokenizer, ids, {"coat"})
    assert member == [False, False, False] + [True] * (len(ids) - 4) + [False]


def test_stored_score_report_hand_computed():
    from types import SimpleNamespace

    from evaluation import stored_score_report

    tokenizer = _word_tokenizer(["a", "man", "in", "red", "coat", "basically"])
    clean, noisy = "a man in a red coat", "a man basically in a red coat"
    # positions: SOT a man basically in a red coat EOT (9); ordinary 1..7; noise at 3
    scores = torch.tensor([[0.9, 0.2, 0.8, 0.1, 0.3, 0.2, 0.7, 0.9, 0.5, 0.0],
                           [0.5] * 10])
    settings = SimpleNamespace(mask_alpha_noise=0.6, mask_lambda=10.0, mask_gamma_noise=0.5,
                               mask_alpha_informative=0.4, mask_gamma_informative=0.6, mask_scores="gass")
    report = stored_score_report(scores, tokenizer, [noisy, clean], [clean, clean], settings)
    assert report["captions"] == 1  # the clean caption does not count
    # clean {0.2, 0.8, 0.3, 0.2, 0.7, 0.9} all above noise 0.1
    assert report["auc"] == 1.0

    def sigmoid(x):
        return 1 / (1 + math.exp(-x))

    clean_scores = [0.2, 0.8, 0.3, 0.2, 0.7, 0.9]
    assert report["noise_view_noise"] == pytest.approx(0.6 * sigmoid(10 * (0.9 - 0.5)))
    assert report["noise_view_clean"] == pytest.approx(
        sum(0.6 * sigmoid(10 * ((1 - s) - 0.5)) for s in clean_scores) / 6)
    assert report["mtp_view_noise"] == pytest.approx(0.4 * sigmoid(10 * (0.1 - 0.6)))
    assert report["mtp_view_clean"] == pytest.approx(sum(0.4 * sigmoid(10 * (s - 0.6)) for s in clean_scores) / 6)
    # shuffled scores: every token of the caption gets the caption's mean chance
    settings.mask_scores = "shuffled"
    shuffled = stored_score_report(scores[:1], tokenizer, [noisy], [clean], settings)
    everything = clean_scores + [0.1]
    mean_noise_view = sum(0.6 * sigmoid(10 * ((1 - s) - 0.5)) for s in everything) / 7
    assert shuffled["noise_view_noise"] == pytest.approx(mean_noise_view)
    assert shuffled["noise_view_clean"] == pytest.approx(mean_noise_view)
    assert shuffled["auc"] == 1.0  # the AUC is of the stored scores themselves
    # labels computed once give the same report without the captions
    from evaluation import label_noise_tokens

    labels = label_noise_tokens(tokenizer, [noisy, clean], [clean, clean])
    assert labels[0][1] == [False, False, False, True, False, False, False, False, False]  # "basically"
    settings.mask_scores = "gass"
    assert stored_score_report(scores, tokenizer, None, None, settings, labels=labels) == report
    # without settings: the AUC alone
    assert set(stored_score_report(scores[:1], tokenizer, [noisy], [clean])) == {"auc", "captions"}
    with pytest.raises(ValueError, match="one row per caption"):
        stored_score_report(scores, tokenizer, [noisy], [clean])
