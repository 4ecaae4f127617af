"""Which splits WebPerson-schema training data holds (`training.data.available_splits` / `has_split`) and how
`training.pretrain.retrieval_split` uses it: a missing split is `None` (train without that evaluation), data
that cannot be read raises its own error."""

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from training.data import available_splits, has_split
from training.pretrain import retrieval_split


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Tiny synthetic WebPerson folders: one with train/validation/test, one with only train."""
    from dataset_builders.synthetic import SyntheticPersonConfig, write_webperson

    root = tmp_path_factory.mktemp("splits")
    common = dict(images_per_identity=2, image_size=(64, 32), seed=1)
    full = SyntheticPersonConfig(num_identities=10, split_fractions=(0.6, 0.2, 0.2), **common)
    train_only = SyntheticPersonConfig(num_identities=6, split_fractions=(1.0, 0.0, 0.0), **common)
    configs = {"full": full, "train_only": train_only}
    return {name: write_webperson(config, root / name) for name, config in configs.items()}


def _config(data):
    return SimpleNamespace(benchmark=None, data=str(data), data_root=None)


def _copy(folder, to):
    return Path(shutil.copytree(folder, to))


def test_available_splits_of_folders_and_parquet_files(folders):
    assert available_splits(str(folders["full"])) == ["train", "validation", "test"]
    assert available_splits(str(folders["train_only"])) == ["train"]
    shard = next((folders["full"] / "data").glob("validation-*.parquet"))
    assert available_splits(str(shard)) == ["train"]  # parquet files / a glob: their one split
    assert available_splits(str(folders["full"] / "data" / "*.parquet")) == ["train"]
    assert has_split(str(folders["full"]), "validation[:50%]+test")
    assert has_split(str(folders["full"]), "test")
    assert not has_split(str(folders["train_only"]), "validation")
    assert not has_split(str(folders["train_only"]), "train[:2]+test")


def test_retrieval_split_of_a_missing_split_is_none(folders):
    assert retrieval_split(_config(folders["train_only"]), "validation") is None
    assert retrieval_split(_config(folders["train_only"]), "test") is None
    assert retrieval_split(_config(folders["train_only"]), None) is None
    view = retrieval_split(_config(folders["full"]), "validation")
    assert len(view.gallery) == 4 and len(view.queries) == 8  # 2 identities x 2 images, 2 captions each


def test_unreadable_data_raises_its_own_error(folders, tmp_path):
    # The README declares a validation split whose files are gone: the old "split in the message" check
    # took the error ("Couldn't infer the same data file format for all splits") for a missing split.
    gone = _copy(folders["full"], tmp_path / "gone")
    for shard in (gone / "data").glob("validation-*.parquet"):
        shard.unlink()
    with pytest.raises(ValueError, match="data file format"):
        retrieval_split(_config(gone), "validation")
    # A validation shard that is not parquet: the split exists, reading it fails.
    from datasets.exceptions import DatasetGenerationError

    corrupt = _copy(folders["full"], tmp_path / "corrupt")
    next((corrupt / "data").glob("validation-*.parquet")).write_bytes(b"not a parquet file")
    with pytest.raises(DatasetGenerationError):
        retrieval_split(_config(corrupt), "validation")
    # Neither a folder nor parquet files.
    with pytest.raises(ValueError, match="is a file but not a .parquet file"):
        retrieval_split(_config(folders["full"] / "README.md"), "validation")
    with pytest.raises(FileNotFoundError):
        available_splits(str(tmp_path / "missing"))


def test_train_only_folder_trains_without_validation(folders, tmp_path):
    from training.pretrain import main

    out = tmp_path / "out"
    config = {"objective": "gadms", "model": "tiny", "image_size": [64, 32], "epochs": 1, "max_steps": 2,
              "batch_size": 4, "learning_rate": 1.0e-3, "warmup_epochs": 0, "log_every_steps": 1,
              "eval_batch_size": 16, "seed": 3, "data": str(folders["train_only"]), "output_dir": str(out),
              "eval_split": "validation", "test_split": "test", "keep_last": 1}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    main(["--config", str(tmp_path / "c.yaml")])
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert log and not any(key.startswith(("val_", "test_")) for record in log for key in record)
    assert (out / "last" / "model.safetensors").is_file()


def test_held_out_fractions_hold_out_that_many_persons():
    from dataset_builders.synthetic import held_out_fractions

    assert held_out_fractions(10000, 200) == (0.96, 0.02, 0.02)
    assert held_out_fractions(12000, 200) == (0.96666667, 0.01666667, 0.01666667)
    with pytest.raises(ValueError, match="400 identities must exceed twice the 200 held-out persons"):
        held_out_fractions(400, 200)
