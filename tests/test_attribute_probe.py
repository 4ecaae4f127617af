"""Attribute probes (evaluation.attribute_probe): hand-computed majority rates, probes on features whose
information is known by construction, and the whole path through a model and its processor."""

import numpy as np
import pytest
import torch
from PIL import Image

from evaluation.attribute_probe import (
    AttributeProbeResult,
    attribute_oracle_r1,
    majority_rate,
    probe_accuracy,
    probe_attributes,
)

pytest.importorskip("sklearn")


def test_majority_rate_hand_computed():
    # the fitting split's most common value is "a": one of four scored labels is "a"
    assert majority_rate(["a", "a", "b"], ["a", "b", "b", "b"]) == 0.25
    # a tie goes to the value seen first
    assert majority_rate(["b", "a"], ["a", "a"]) == 0.0
    assert majority_rate(["b", "a"], ["b", "a"]) == 0.5
    with pytest.raises(ValueError, match="labels on both"):
        majority_rate([], ["a"])


def _labels(n, seed):
    rng = np.random.default_rng(seed)
    return [str(v) for v in rng.choice(["red", "blue", "green"], size=n, p=[0.5, 0.3, 0.2])]


def test_a_probe_reads_an_attribute_the_features_encode():
    fit_y, score_y = _labels(300, 0), _labels(200, 1)
    codes = {"red": 0, "blue": 1, "green": 2}
    rng = np.random.default_rng(2)

    def encode(labels):  # one direction per value, plus noise in 5 more dimensions
        x = rng.normal(0, 0.1, size=(len(labels), 8))
        x[np.arange(len(labels)), [codes[v] for v in labels]] += 1.0
        return x

    fit_x, score_x = encode(fit_y), encode(score_y)
    assert probe_accuracy(fit_x, fit_y, score_x, score_y) == 1.0
    # rows are L2-normalised first: scaling a row does not change the answer
    scale = rng.uniform(0.01, 100, size=(len(score_y), 1))
    assert probe_accuracy(fit_x, fit_y, torch.tensor(score_x * scale), score_y) == 1.0


def test_features_without_the_attribute_give_the_majority_rate():
    fit_y, score_y = _labels(300, 0), _labels(200, 1)
    same = np.ones((300, 4)), np.ones((200, 4))  # every row alike: the probe can only answer the prior
    assert probe_accuracy(same[0], fit_y, same[1], score_y) == majority_rate(fit_y, score_y)
    # an attribute with one value on the fitting split has nothing to fit
    assert probe_accuracy(np.eye(3), ["x"] * 3, np.eye(3)[:2], ["x", "y"]) == 0.5
    with pytest.raises(ValueError, match="differ in length"):
        probe_accuracy(np.eye(3), ["a", "b"], np.eye(3), ["a", "b", "c"])
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        probe_accuracy(np.ones(3), ["a", "b", "a"], np.ones((1, 3)), ["a"])


class _ColourModel(torch.nn.Module):
    """Image features: the mean colour of the picture (which knows the garment colour); text features: one
    constant vector (which knows nothing)."""

    def get_image_features(self, pixel_values):
        return pixel_values.mean(dim=(2, 3))

    def get_text_features(self, input_ids, attention_mask=None):
        return torch.ones(input_ids.shape[0], 3)


def test_probe_attributes_through_a_model_and_its_processor(tiny_processor):
    from datasets import Dataset

    colours = {"red": (200, 20, 20), "blue": (20, 20, 200), "green": (20, 200, 20)}

    def table(labels):
        return Dataset.from_dict({
            "image": [Image.new("RGB", (32, 64), colours[v]) for v in labels],
            "caption1": [f"a {v} coat" for v in labels],
            "top_colour": labels,
        })

    fit_y, score_y = _labels(60, 3), _labels(30, 4)
    results = probe_attributes(_ColourModel(), tiny_processor, table(fit_y), table(score_y))
    assert results == [AttributeProbeResult("top_colour", majority_rate(fit_y, score_y), 1.0,
                                            majority_rate(fit_y, score_y), 3)]
    with pytest.raises(ValueError, match="no column"):
        probe_attributes(_ColourModel(), tiny_processor, table(fit_y), table(score_y), ["hat"])
    with pytest.raises(ValueError, match="none of the synthetic"):
        probe_attributes(_ColourModel(), tiny_processor, table(fit_y).remove_columns("top_colour"),
                         table(score_y))


def test_attribute_oracle_r1_hand_computed():
    # persons 1 and 2 share (red, blue), person 3 alone has (red, black); two images each
    ids = [1, 1, 2, 2, 3, 3]
    rows = [("red", "blue")] * 4 + [("red", "black")] * 2
    # persons 1 and 2: their first answer is one of 4 tied images, 2 of them right: 1/2; person 3: 1
    assert attribute_oracle_r1(ids, rows) == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    # knowing only the first attribute: all three tie, 1/3 each
    assert attribute_oracle_r1(ids, [r[:1] for r in rows]) == pytest.approx(1 / 3)
    # one more image of person 3's attributes, of a fourth person: person 3's query now has 2 right of 3 tied
    expected = (0.5 + 0.5 + 2 / 3 + 1 / 3) / 4
    assert attribute_oracle_r1([*ids, 4], [*rows, ("red", "black")]) == pytest.approx(expected)
    # against a brute-force count over random galleries (1 to 3 images a person): the share of tied images
    # that are the query's own
    rng = np.random.default_rng(0)
    for _ in range(5):
        person_rows = {pid: tuple(rng.integers(0, 3, size=2)) for pid in range(30)}
        ids = [pid for pid in person_rows for _ in range(int(rng.integers(1, 4)))]
        rows = [person_rows[pid] for pid in ids]
        expected = np.mean([sum(i == pid for i, r in zip(ids, rows) if r == person_rows[pid])
                            / sum(r == person_rows[pid] for r in rows) for pid in person_rows])
        assert attribute_oracle_r1(ids, rows) == pytest.approx(expected)
    with pytest.raises(ValueError, match="different attributes"):
        attribute_oracle_r1([1, 1], [("red",), ("blue",)])
    with pytest.raises(ValueError, match="person ids but"):
        attribute_oracle_r1([1], [])


def test_probe_attributes_script_on_a_synthetic_set(tmp_path, tiny_gadms_dir, capsys):
    import json
    import sys

    from dataset_builders.synthetic import SyntheticPersonConfig, webperson_folder

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1] / "benchmarks"))
    import probe_attributes

    config = SyntheticPersonConfig(num_identities=40, images_per_identity=2, image_size=(64, 32),
                                   noise_rate=0.3, split_fractions=(0.5, 0.0, 0.5), seed=0)
    data = webperson_folder(config, tmp_path / "data")
    report = probe_attributes.main([str(tiny_gadms_dir), "--data", str(data), "--fit-rows", "30"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == report
    assert report["fit_rows"] == 30 and report["score_rows"] == 40
    assert set(report["attributes"]) >= {"gender", "top_colour", "shoe_colour", "glasses"}
    assert all(0 <= v <= 1 for a in report["attributes"].values() for v in a.values())
    # knowing more attributes never makes the oracle's first answer worse; all five single out almost everyone
    oracle = list(report["oracle_r1"].values())
    assert oracle[0] <= oracle[1] <= oracle[2] <= oracle[4] and oracle[1] <= oracle[3] <= oracle[4]
    assert oracle[4] >= 90
