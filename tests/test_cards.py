"""Model cards written by training: named for the final folder, usage snippets that load paths that exist,
`model-index` that names the data set truly (synthetic data with its seed, hub ids, benchmarks) and its split,
LoRA adapter cards with `base_model` and `library_name: peft`. Parsed with huggingface_hub's card tools."""

import re
from pathlib import Path

import pytest
from huggingface_hub import ModelCard
from huggingface_hub.repocard import metadata_load

METRICS = {"R1": 50.0, "R5": 70.0, "R10": 80.0, "mAP": 40.0, "mINP": 20.0}


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    from dataset_builders.synthetic import SyntheticPersonConfig, write_cuhk_pedes, write_webperson

    root = tmp_path_factory.mktemp("synthetic")
    config = SyntheticPersonConfig(num_identities=6, images_per_identity=2, image_size=(64, 32), seed=7,
                                   split_fractions=(0.5, 0.25, 0.25))
    return {"webperson": write_webperson(config, root / "webperson"),
            "cuhk": write_cuhk_pedes(config, root / "cuhk")}


def _config(**values):
    from training.config import TrainingConfig

    return TrainingConfig(**{"image_size": [64, 32], **values})


def loaded_paths(card_text: str) -> list[str]:
    """The paths / repo ids the card's usage snippets load from."""
    return re.findall(r'from_pretrained\("([^"]+)"', card_text)


def test_synthetic_data_is_named_with_its_seed_whatever_loader_reads_it(synthetic):
    from training.card import describe_data, evaluation_data, synthetic_seed

    assert synthetic_seed(synthetic["webperson"]) == 7 and synthetic_seed(synthetic["cuhk"]) == 7
    name = {"name": "synthetic persons (generated, seed 7)", "type": "synthetic-persons"}
    assert describe_data(str(synthetic["webperson"])) == name
    assert describe_data(str(synthetic["webperson"] / "data" / "train-*.parquet")) == name
    # fine-tuning reads the synthetic CUHK-format folder with the cuhk-pedes loader: still synthetic data
    finetune = _config(objective="irra", benchmark="cuhk-pedes", data_root=str(synthetic["cuhk"]))
    assert evaluation_data(finetune) == name
    assert describe_data("org/webperson") == {"name": "org/webperson", "type": "org/webperson"}


def test_real_benchmark_and_plain_local_folders(tmp_path):
    from training.card import describe_data

    (tmp_path / "CUHK-PEDES").mkdir()
    assert describe_data(str(tmp_path / "CUHK-PEDES"), benchmark="cuhk") == {"name": "CUHK-PEDES",
                                                                            "type": "cuhk-pedes"}
    folder = tmp_path / "my persons"
    folder.mkdir()
    described = describe_data(str(folder))
    assert described["name"] == "my persons" and str(tmp_path) not in described["type"]


def test_card_is_written_for_the_final_folder_with_truthful_model_index(synthetic, tmp_path):
    from training.card import write_model_card

    temporary, final = tmp_path / ".tmp-last", tmp_path / "last"
    temporary.mkdir()
    write_model_card(temporary, _config(data=str(synthetic["webperson"])), METRICS, final_directory=final)
    temporary.rename(final)
    card = ModelCard.load(final / "README.md")
    meta = metadata_load(final / "README.md")
    assert card.data.model_name == "last" and meta["model-index"][0]["name"] == "last"
    assert ".tmp-" not in card.text and "# last" in card.text
    for result in meta["model-index"][0]["results"]:
        assert result["dataset"] == {"name": "synthetic persons (generated, seed 7)",
                                     "type": "synthetic-persons", "split": "test"}
    assert "synthetic persons (generated, seed 7), `test` split" in card.text
    paths = loaded_paths(card.text)
    assert paths and all(Path(path).exists() for path in paths), paths


def test_pushed_card_loads_the_hub_repo(synthetic, tmp_path):
    from training.card import write_model_card

    write_model_card(tmp_path, _config(data="org/webperson"), METRICS, repo_id="org/gadms",
                     final_directory=tmp_path / "last")
    meta = metadata_load(tmp_path / "README.md")
    assert meta["model-index"][0]["name"] == "last"
    assert meta["model-index"][0]["results"][0]["dataset"]["name"] == "org/webperson"
    assert set(loaded_paths((tmp_path / "README.md").read_text())) == {"org/gadms"}


def test_adapter_card_names_its_base_and_peft(tiny_gadms_dir, synthetic, tmp_path):
    from training.card import relative_base, write_model_card

    final = tmp_path / "run" / "last"
    base = relative_base(str(tiny_gadms_dir), final)
    assert not Path(base).is_absolute() and (final / base).resolve() == Path(tiny_gadms_dir).resolve()
    assert relative_base("org/gadms-base", final) == "org/gadms-base"
    folder = tmp_path / "run" / ".tmp-last"
    folder.mkdir(parents=True)
    write_model_card(folder, _config(model=str(tiny_gadms_dir), lora=True, data=str(synthetic["webperson"])),
                     METRICS, final_directory=final, base_model=base, num_identities=12)
    folder.rename(final)
    meta = metadata_load(final / "README.md")
    assert meta["base_model"] == base and meta["library_name"] == "peft"
    text = (final / "README.md").read_text()
    assert "num_identities=12" in text and "PeftModel.from_pretrained" in text
    paths = loaded_paths(text)
    assert str(final) in paths and all(Path(path).exists() for path in paths), paths
