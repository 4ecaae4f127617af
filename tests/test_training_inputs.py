"""Training configurations that must be refused before anything is trained, with a message that names the
problem: a batch larger than the data, model-config typos, dotted keys, and where an unknown key came from."""

import json
from pathlib import Path

import pytest
import yaml

from training.config import check_model_overrides, load_config


@pytest.fixture(scope="module")
def webperson(tmp_path_factory):
    from dataset_builders.synthetic import SyntheticPersonConfig, write_webperson

    config = SyntheticPersonConfig(num_identities=10, images_per_identity=2, image_size=(64, 32), seed=2,
                                   split_fractions=(0.6, 0.2, 0.2))
    return write_webperson(config, tmp_path_factory.mktemp("inputs") / "webperson")


def _config(path: Path, **values) -> Path:
    base = {"objective": "gadms", "model": "tiny", "image_size": [64, 32], "epochs": 1, "batch_size": 4,
            "learning_rate": 1.0e-3, "warmup_epochs": 0.5, "eval_split": None, "test_split": None, "seed": 1,
            "log_every_steps": 1}
    base.update(values)
    path.write_text(yaml.safe_dump(base))
    return path


def _exit_message(capsys, argv) -> str:
    from training.pretrain import main

    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    return capsys.readouterr().err


def test_batch_larger_than_the_data_is_refused_and_nothing_is_saved(webperson, tmp_path, capsys):
    out = tmp_path / "out"
    config = _config(tmp_path / "c.yaml", data=str(webperson), output_dir=str(out))
    err = _exit_message(capsys, ["--config", str(config), "--set", "batch_size=1000"])
    # 12 training images x 2 captions = 24 samples
    assert "batch_size 1000" in err and "24 samples" in err and "at most 24" in err
    assert not (out / "last").exists() and not (out / "results.json").exists()


def test_batch_equal_to_the_data_trains_one_step(webperson, tmp_path):
    from training.pretrain import main

    out = tmp_path / "out"
    main(["--config", str(_config(tmp_path / "c.yaml", data=str(webperson), output_dir=str(out), batch_size=24))])
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1]  # one training step (its epoch's record is at step 1 too)
    assert {r["step"] for r in log} == {1}


def test_model_override_typo_names_the_key_and_the_nearest(webperson, tmp_path, capsys):
    config = _config(tmp_path / "c.yaml", data=str(webperson), output_dir=str(tmp_path / "out"))
    err = _exit_message(capsys, ["--config", str(config), "--set", "model_overrides.projection_dimm=16"])
    assert "'projection_dimm'" in err and "did you mean 'projection_dim'" in err
    err = _exit_message(capsys, ["--config", str(config), "--set", "objective_overrides.gass_layerz=1"])
    assert "'gass_layerz'" in err and "did you mean 'gass_layers'" in err
    # an objective setting given as a model key says where it belongs
    with pytest.raises(ValueError, match="'gass_layers' is a setting of the training objective.*objective_overrides"):
        check_model_overrides({"gass_layers": 1})
    with pytest.raises(ValueError, match=r"'vision_config.patch_sise'.*did you mean 'vision_config.patch_size'"):
        check_model_overrides({"vision_config.patch_sise": 8})
    with pytest.raises(ValueError, match=r"'vision_conifg.patch_size'.*did you mean 'vision_config'"):
        check_model_overrides({"vision_conifg.patch_size": 8})
    with pytest.raises(ValueError, match="vision_config takes a mapping"):
        check_model_overrides({"vision_config": 8})
    # the same typo in the YAML file is refused too
    with pytest.raises(ValueError, match="'temprature'.*did you mean 'temperature'"):
        load_config(_config(tmp_path / "d.yaml", model_overrides={"temprature": 0.5}))


def test_dotted_model_overrides_reach_the_towers(webperson, tmp_path):
    from transformers import AutoConfig

    import modeling_gadms  # noqa: F401
    from training.pretrain import main

    config = load_config(None, ["model_overrides.vision_config.patch_size=8", "model_overrides.projection_dim=16"])
    assert config.model_overrides == {"vision_config": {"patch_size": 8}, "projection_dim": 16}
    out = tmp_path / "out"
    main(["--config", str(_config(tmp_path / "c.yaml", data=str(webperson), output_dir=str(out))),
          "--set", "model_overrides.vision_config.patch_size=8", "--set", "model_overrides.projection_dim=16"])
    saved = json.loads((out / "last" / "config.json").read_text())
    assert "vision_config.patch_size" not in saved
    assert saved["vision_config"]["patch_size"] == 8 and saved["projection_dim"] == 16
    assert saved["vision_config"]["hidden_size"] == 64  # the rest of the tiny tower is kept
    # starting from a saved model: a tower key changes that key only
    again = tmp_path / "again"
    main(["--config", str(_config(tmp_path / "d.yaml", data=str(webperson), output_dir=str(again),
                                  model=str(out / "last"), max_steps=1)),
          "--set", "model_overrides.text_config.attention_dropout=0.25"])
    loaded = AutoConfig.from_pretrained(again / "last")
    assert loaded.text_config.attention_dropout == 0.25 and loaded.vision_config.patch_size == 8


def test_unknown_key_says_where_it_came_from(tmp_path):
    path = _config(tmp_path / "c.yaml", batchsize=3)
    with pytest.raises(ValueError, match=r"unknown training config keys in .*c.yaml: \['batchsize'\]") as error:
        load_config(path)
    assert "did you mean 'batch_size'" in str(error.value)
    with pytest.raises(ValueError) as error:
        load_config(_config(tmp_path / "ok.yaml"), ["learning_rat=1e-4"])
    message = str(error.value)
    assert "given with --set: ['learning_rat']" in message and "ok.yaml" not in message
    assert "did you mean 'learning_rate'" in message


@pytest.mark.parametrize("step, step_in_epoch, expected", [
    (6, 0, ["end"]),          # checkpoint at the end of epoch 0: its validation is kept
    (9, 3, ["end", "stop"]),  # checkpoint re-saved after a max_steps stop validated at step 9
    (9, 5, ["end"]),          # a checkpoint at step 9 from another point of the epoch: that validation is not its
])
def test_resume_trims_the_log_to_the_checkpoint(tmp_path, step, step_in_epoch, expected):
    """On resume, `log.jsonl` keeps what the checkpoint covers: the steps up to it, and a validation at its own
    step only when that validation came before it (an epoch's end, or a `max_steps` stop at that point)."""
    from types import SimpleNamespace

    from training.trainer import Trainer, TrainState

    records = [{"step": 6, "loss": 1.0}, {"step": 6, "epoch": 0, "val_R1": 1.0, "tag": "end"},
               {"step": 9, "loss": 0.9}, {"step": 9, "epoch": 1, "step_in_epoch": 3, "val_R1": 2.0, "tag": "stop"},
               {"step": 10, "loss": 0.8}]
    log = tmp_path / "log.jsonl"
    log.write_text("".join(json.dumps(r) + "\n" for r in records) + '{"step": 11, "lo')  # a half-written line
    trainer = SimpleNamespace(log_file=log, state=TrainState(global_step=step, step_in_epoch=step_in_epoch))
    Trainer._truncate_log(trainer, step)
    kept = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["step"] for r in kept if "loss" in r] == [s for s in (6, 9) if s <= step]
    assert [r["tag"] for r in kept if "tag" in r] == expected


@pytest.mark.parametrize(
    "override, message",
    [("log_every_steps=0", "log_every_steps must be >= 1, got 0"),
     ("eval_every_epochs=0", "eval_every_epochs must be >= 1, got 0"),
     ("adam_betas=0.9", r"adam_betas must be a pair of numbers"),
     ("adam_betas=[0.9, 1.5]", r"adam_betas must lie in \[0, 1\)"),
     ("learning_rate=[1]", "learning_rate must be a number, got \\[1\\]"),
     ("epochs=2.5", "epochs must be a whole number, got 2.5"),
     ("augment=maybe", "augment must be true or false, got 'maybe'"),
     ("lora=1", "lora must be true or false, got 1"),
     ("warmup_epochs=-1", "warmup_epochs must be >= 0"),
     ("warmup_start_factor=2", r"warmup_start_factor .* must lie in \(0, 1\]"),
     ("random_erasing=1.5", "random_erasing is a probability"),
     ("max_grad_norm=0", "max_grad_norm must be positive"),
     ("max_steps=0", "max_steps must be >= 1"),
     ("learning_rate=nan", "learning_rate must be a number, got nan"),
     ("objective_overrides.mask_lambda=abc", "mask_lambda must be a number, got 'abc'")],
)  # fmt: skip
def test_bad_values_are_refused_when_the_config_loads(override, message):
    """Each is refused at load time, naming the key: not a crash after the first step or a silent default."""
    with pytest.raises(ValueError, match=message):
        load_config(None, [override])


def test_numbers_and_booleans_load_from_yaml_text():
    config = load_config(None, ["learning_rate=1e-4", "epochs=3.0", "augment=false", "adam_betas=[0.9, 0.98]",
                                "save_every_steps=0"])
    assert config.learning_rate == 1e-4 and config.epochs == 3 and isinstance(config.epochs, int)
    assert config.augment is False and config.adam_betas == [0.9, 0.98] and config.save_every_steps == 0
