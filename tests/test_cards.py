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


def test_card_names_the_script_and_objective_that_trained_it(synthetic, tmp_path):
    """pretrain.py (training data set) with either objective, finetune.py (a benchmark); the objective described
    as what it is: IRRA has no dual masking."""
    from training.card import write_model_card

    cases = [(_config(data=str(synthetic["webperson"])), "training/pretrain.py` with the gadms objective",
              "dual masking"),
             (_config(data=str(synthetic["webperson"]), objective="irra"),
              "training/pretrain.py` with the irra objective", "the IRRA recipe"),
             (_config(objective="irra", benchmark="cuhk-pedes", data_root=str(synthetic["cuhk"])),
              "training/finetune.py` with the irra objective", "the IRRA recipe")]
    for number, (config, script, objective) in enumerate(cases):
        folder = tmp_path / str(number)
        folder.mkdir()
        write_model_card(folder, config, METRICS, final_directory=folder)
        text = " ".join((folder / "README.md").read_text().split())
        assert script in text and objective in text, text[:600]
        if config.objective == "irra":
            assert "dual masking" not in text


def test_card_says_what_was_trained_when_it_differs_from_the_plan(synthetic, tmp_path):
    from training.card import write_model_card

    write_model_card(tmp_path, _config(data=str(synthetic["webperson"]), epochs=2), METRICS,
                     final_directory=tmp_path, trained="4 steps (0.25 of 2 epochs)")
    rows = [line for line in (tmp_path / "README.md").read_text().splitlines() if line.startswith("| ")]
    assert rows[rows.index("| epochs | 2 |") + 1] == "| trained | 4 steps (0.25 of 2 epochs) |"


def test_merged_copy_of_a_pushed_adapter_is_loaded_from_its_subfolder(tiny_gadms_dir, synthetic, tmp_path):
    """The adapter's card and the merged copy's name the hub repo's `merged/` subfolder (not a local path), with
    `adapter_kwargs` so that transformers does not take the adapter at the repo's root instead; the same call
    loads a local folder laid out that way."""
    import shutil

    from transformers import AutoModel

    from training.card import write_model_card

    config = _config(model="org/gadms-base", lora=True, data=str(synthetic["webperson"]))
    adapter, merged = tmp_path / "last", tmp_path / "last" / "merged"
    merged.mkdir(parents=True)
    write_model_card(adapter, config, METRICS, repo_id="org/gadms-lora", final_directory=adapter,
                     base_model="org/gadms-base", merged=True)
    write_model_card(merged, config, METRICS, repo_id="org/gadms-lora", final_directory=merged)
    call = 'from_pretrained("org/gadms-lora", subfolder="merged", adapter_kwargs={"subfolder": "merged"})'
    assert call in (adapter / "README.md").read_text() and call in (merged / "README.md").read_text()
    assert str(tmp_path) not in (adapter / "README.md").read_text()
    # a folder with an adapter at its root (base: a path that does not exist here) and a full model in merged/
    local = tmp_path / "repo"
    shutil.copytree(tiny_gadms_dir, local / "merged")
    (local / "adapter_config.json").write_text('{"peft_type": "LORA", "base_model_name_or_path": "../nowhere"}')
    model = AutoModel.from_pretrained(str(local), subfolder="merged", adapter_kwargs={"subfolder": "merged"})
    assert type(model).__name__ == "GADMSModel"
