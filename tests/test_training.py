"""Training scripts end to end on a tiny model and tiny synthetic data: accelerate launch, two processes, exact
resume, LoRA, corrupt images, the model card and the hub upload call."""

import io
import json
import math
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
import torch
import yaml
from conftest import launch_env

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _run(command, timeout=600):
    result = subprocess.run(command, cwd=REPO, env=launch_env(), capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-4000:])
    return result


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A tiny synthetic WebPerson folder and a CUHK-PEDES-format folder."""
    from dataset_builders.synthetic import SyntheticPersonConfig, write_cuhk_pedes, write_webperson

    root = tmp_path_factory.mktemp("data")
    config = SyntheticPersonConfig(num_identities=20, images_per_identity=2, image_size=(64, 32), seed=1,
                                   split_fractions=(0.6, 0.2, 0.2))
    return {"webperson": write_webperson(config, root / "webperson"), "cuhk": write_cuhk_pedes(config, root / "cuhk")}


def _config(path, **values):
    base = {"objective": "gadms", "model": "tiny", "image_size": [64, 32], "epochs": 2, "batch_size": 6,
            "learning_rate": 1.0e-3, "adam_eps": 1.0e-8, "warmup_epochs": 0.5, "log_every_steps": 1,
            "eval_batch_size": 64, "seed": 3}
    base.update(values)
    path.write_text(yaml.safe_dump(base))
    return path


def _weights(directory):
    from safetensors.torch import load_file

    return load_file(str(Path(directory) / "model.safetensors"))


def test_pretrain_with_accelerate_launch(data, tmp_path):
    config = _config(tmp_path / "c.yaml", data=str(data["webperson"]), output_dir=str(tmp_path / "out"), keep_last=1)
    result = _run([str(BIN / "accelerate"), "launch", "--cpu", "--num_processes", "1", "training/pretrain.py",
                   "--config", str(config)])
    out = tmp_path / "out"
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(summary["last"]) == {"R1", "R5", "R10", "mAP", "mINP", "num_images", "num_queries",
                                    "skipped_images", "skipped_queries", "skipped_files"}
    assert summary["last"]["skipped_images"] == 0 and summary["last"]["skipped_files"] == []
    assert (out / "training_config.yaml").is_file() and (out / "results.json").is_file()
    assert len(list((out / "checkpoints").iterdir())) == 1  # keep_last
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert any("sdm_loss" in r and "mtp_loss" in r for r in log) and any("val_R1" in r for r in log)
    from transformers import AutoModel

    import modeling_gadms  # noqa: F401

    model = AutoModel.from_pretrained(out / "last")
    assert model.config.image_size == (64, 32)
    card = (out / "last" / "README.md").read_text()
    assert "model-index" in card and "R1" in card
    assert (out / "best" / "config.json").is_file()


def test_finetune_with_accelerate_launch(data, tmp_path):
    config = _config(tmp_path / "c.yaml", objective="irra", benchmark="cuhk-pedes", data_root=str(data["cuhk"]),
                     output_dir=str(tmp_path / "ft"), epochs=1)
    result = _run([str(BIN / "accelerate"), "launch", "--cpu", "--num_processes", "1", "training/finetune.py",
                   "--config", str(config)])
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["last"]["R1"] >= 0
    log = [json.loads(line) for line in (tmp_path / "ft" / "log.jsonl").read_text().splitlines()]
    assert any("id_loss" in r and "mlm_loss" in r for r in log)


def test_two_processes_share_one_score_bank(data, tmp_path):
    config = _config(tmp_path / "c.yaml", data=str(data["webperson"]), output_dir=str(tmp_path / "ddp"), epochs=1,
                     batch_size=4, eval_split=None, test_split=None, model_overrides={"temperature": 0.6},
                     final_temperature=0.1)
    env_launch = [str(BIN / "torchrun"), "--nproc_per_node", "2", "--master_port", "29533", "training/pretrain.py",
                  "--config", str(config)]
    result = subprocess.run(env_launch, cwd=REPO, env={**launch_env(), "ACCELERATE_USE_CPU": "true"}, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    results = json.loads((tmp_path / "ddp" / "results.json").read_text())
    digests = results["score_bank_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]
    assert results["score_bank_updated_rows"] > 0
    # 24 training images x 2 captions / (2 processes x 4) = 6 steps: the schedules run their course in those 6
    # steps, not in the 12 batches of the unsharded loader (the warm-up, cosine and temperature anneal end together)
    log = [json.loads(line) for line in (tmp_path / "ddp" / "log.jsonl").read_text().splitlines()]
    steps = [r for r in log if "lr" in r]
    assert [r["step"] for r in steps] == list(range(1, 7))
    assert steps[-1]["temperature"] == pytest.approx(0.1)
    # the rate each step used (by hand: warm-up from 0.1 x 1e-3 over half the epoch, then cosine to 0 at its end;
    # step k uses the factor at (k - 1) / 6 of the epoch)
    assert [r["lr"] for r in steps] == pytest.approx([1e-4, 4e-4, 7e-4, 1e-3, 7.5e-4, 2.5e-4], rel=1e-6)
    assert steps[2]["temperature"] == pytest.approx(0.6 * (0.1 / 0.6) ** 0.5)


def test_accumulation_that_does_not_divide_the_batches_keeps_whole_steps_and_epochs(data, tmp_path):
    """48 captions in batches of 5 are 9 batches; accumulating 2, an epoch is 4 steps of 2 batches (the ninth
    batch's captions wait for another epoch): 3 epochs are 12 steps, the schedule's epochs are the data's, and
    each step's logged rate is the one it used (warm-up from 0.1 x lr over half an epoch, then cosine to 0)."""
    config = _config(tmp_path / "c.yaml", data=str(data["webperson"]), output_dir=str(tmp_path / "ga"), epochs=3,
                     batch_size=5, gradient_accumulation_steps=2, eval_split=None, test_split=None)
    _run([str(BIN / "accelerate"), "launch", "--cpu", "--num_processes", "1", "training/pretrain.py",
          "--config", str(config)])
    log = [json.loads(line) for line in (tmp_path / "ga" / "log.jsonl").read_text().splitlines()]
    steps = [r for r in log if "lr" in r]
    assert [r["step"] for r in steps] == list(range(1, 13))
    assert [r["epoch"] for r in steps] == [0] * 4 + [1] * 4 + [2] * 4

    def factor(epoch):  # docs/method.md section 6, with warmup_epochs 0.5 and 3 epochs
        if epoch < 0.5:
            return 0.1 + 0.9 * epoch / 0.5
        return 0.5 * (1 + math.cos(math.pi * (epoch - 0.5) / 2.5))

    assert [r["lr"] for r in steps] == pytest.approx([1e-3 * factor(k / 4) for k in range(12)], rel=1e-6)


def test_resume_mid_epoch_gives_the_same_weights(data, tmp_path):
    # with the temperature annealed too: the resumed run must anneal from the step it resumes at
    common = dict(data=str(data["webperson"]), eval_split=None, test_split=None, epochs=2, save_every_steps=3,
                  batch_size=4, model_overrides={"temperature": 0.5}, final_temperature=0.05)
    full = _config(tmp_path / "full.yaml", output_dir=str(tmp_path / "full"), **common)
    part = _config(tmp_path / "part.yaml", output_dir=str(tmp_path / "part"), **common)
    launch = [str(BIN / "accelerate"), "launch", "--cpu", "--num_processes", "1", "training/pretrain.py"]
    _run(launch + ["--config", str(full), "--max-steps", "7"])
    _run(launch + ["--config", str(part), "--max-steps", "3"])  # stops after step 3 (mid-epoch), checkpointed
    assert (tmp_path / "part" / "checkpoints" / "checkpoint-3").is_dir()
    _run(launch + ["--config", str(part), "--max-steps", "7", "--resume", "latest"])
    a, b = _weights(tmp_path / "full" / "last"), _weights(tmp_path / "part" / "last")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    bank = [torch.load(tmp_path / run / "checkpoints" / "checkpoint-7" / "custom_checkpoint_2.pkl", weights_only=False)
            for run in ("full", "part")]
    assert torch.equal(bank[0]["scores"], bank[1]["scores"])


def test_lora_train_save_reload_merge(data, tmp_path):
    from peft import PeftModel
    from transformers import AutoModel, AutoModelForPreTraining

    import modeling_gadms  # noqa: F401
    from training.pretrain import main

    base = tmp_path / "base"
    main(["--config", str(_config(tmp_path / "b.yaml", data=str(data["webperson"]), output_dir=str(base),
                                  epochs=1, eval_split=None, test_split=None))])
    lora_out = tmp_path / "lora"
    main(["--config", str(_config(tmp_path / "l.yaml", data=str(data["webperson"]), output_dir=str(lora_out),
                                  model=str(base / "last"), epochs=1, eval_split=None, lora_rank=4)),
          "--lora", "--merge-lora"])
    adapter = lora_out / "last"
    assert (adapter / "adapter_config.json").is_file() and (adapter / "adapter_model.safetensors").is_file()
    # adapters are trained on the pretraining model (the dual encoder's layers sit under `gadms.`)
    reloaded = PeftModel.from_pretrained(AutoModelForPreTraining.from_pretrained(base / "last"), adapter).eval()
    merged = AutoModel.from_pretrained(adapter / "merged").eval()
    ids = torch.randint(1, 50, (2, 77))
    ids[:, 0], ids[:, 5], ids[:, 6:] = merged.config.text_config.bos_token_id, merged.config.text_config.eos_token_id, 0
    with torch.no_grad():
        a = reloaded.get_base_model().gadms.get_text_features(ids)
        b = merged.get_text_features(ids)
        plain = AutoModel.from_pretrained(base / "last").eval().get_text_features(ids)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(a, plain)  # the adapters changed the model


def test_corrupt_images_are_skipped_and_counted(tmp_path):
    import datasets
    from PIL import Image

    from training.pretrain import main

    rows = {"image": [], "caption1": [], "caption2": []}
    colours = ["red", "blue", "green", "black", "white", "yellow", "pink", "gray"]
    for index, colour in enumerate(colours):
        buffer = io.BytesIO()
        Image.new("RGB", (32, 64), colour).save(buffer, format="JPEG")
        payload = buffer.getvalue() if index not in (2, 5) else b"this is not a jpeg"
        rows["image"].append({"bytes": payload, "path": f"img{index}.jpg"})
        rows["caption1"].append(f"a person in {colour}")
        rows["caption2"].append(f"someone wearing {colour} clothes")
    features = datasets.Features({"image": datasets.Image(), "caption1": datasets.Value("string"),
                                  "caption2": datasets.Value("string")})
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(tmp_path / "train.parquet"))
    out = tmp_path / "out"
    main(["--config", str(_config(tmp_path / "c.yaml", data=str(tmp_path / "train.parquet"), output_dir=str(out),
                                  epochs=1, batch_size=4, eval_split=None, test_split=None))])
    results = json.loads((out / "results.json").read_text())
    assert results["skipped_images"] == 4  # two corrupt images x two captions, one epoch
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert log[-1]["skipped_images"] == 4


def test_push_to_hub_up_to_the_upload_call(tmp_path):
    from training.hub import push_model

    (tmp_path / "config.json").write_text("{}")
    api = mock.Mock()
    push_model(tmp_path, "org/gadms-test", private=True, api=api)
    api.create_repo.assert_called_once_with("org/gadms-test", private=True, exist_ok=True, repo_type="model")
    kwargs = api.upload_folder.call_args.kwargs
    assert kwargs["repo_id"] == "org/gadms-test" and kwargs["folder_path"] == str(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a saved model directory"):
        push_model(tmp_path / "missing", "org/x", api=api)
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "../base/last"}))
    with pytest.raises(ValueError, match="local model ../base/last, which is not on the hub"):
        push_model(adapter, "org/x", api=api)
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "org/gadms-base"}))
    push_model(adapter, "org/y", api=api)
    assert api.upload_folder.call_args.kwargs["repo_id"] == "org/y"


def test_config_errors(tmp_path):
    from training.config import load_config

    path = tmp_path / "c.yaml"
    path.write_text("objective: gadms\nbatchsize: 3\n")
    with pytest.raises(ValueError, match=r"unknown training config keys in .*c.yaml: \['batchsize'\]"):
        load_config(path)
    with pytest.raises(ValueError, match="objective must be one of"):
        load_config(None, ["objective=clip"])
    config = load_config(None, ["learning_rate=1e-4", "image_size=[96, 32]", "objective_overrides.gass_variant=released",
                                "model_overrides.temperature=0.5"])
    assert config.learning_rate == 1e-4 and config.image_size == [96, 32]
    assert config.objective_overrides == {"gass_variant": "released"} and config.model_overrides == {"temperature": 0.5}
    settings = config.objective_settings()
    assert (settings.recipe, settings.gass_variant, settings.mtp_loss_weight) == ("gadms", "released", 0.4)
    released = load_config(None, ["objective_preset=released", "objective=irra"]).objective_settings()
    assert (released.recipe, released.gass_variant, released.mtp_loss_weight) == ("irra", "released", 0.3)
    with pytest.raises(ValueError, match="objective_preset / objective_overrides: unknown GA-DMS preset 'papr'"):
        load_config(None, ["objective_preset=papr"])


def test_schedule_warmup_then_cosine():
    from training.config import TrainingConfig
    from training.trainer import warmup_cosine

    config = TrainingConfig(epochs=10, warmup_epochs=2, warmup_start_factor=0.1)
    factor = warmup_cosine(config, steps_per_epoch=10)
    assert factor(0) == pytest.approx(0.1) and factor(10) == pytest.approx(0.55) and factor(20) == pytest.approx(1.0)
    assert factor(60) == pytest.approx(0.5) and factor(100) == pytest.approx(0.0, abs=1e-12)
    per_epoch = warmup_cosine(TrainingConfig(epochs=10, warmup_epochs=2, schedule_unit="epoch"), steps_per_epoch=10)
    assert per_epoch(5) == per_epoch(0) and per_epoch(15) == pytest.approx(0.55)


def test_temperature_anneals_geometrically_to_final_temperature(data, tmp_path):
    from training.pretrain import main

    out = tmp_path / "anneal"
    # 24 training images x 2 captions / batch 6 = 8 steps an epoch, 2 epochs: 16 steps from 0.6 to 0.1
    main(["--config", str(_config(tmp_path / "c.yaml", data=str(data["webperson"]), output_dir=str(out),
                                  batch_size=6, model_overrides={"temperature": 0.6}, final_temperature=0.1,
                                  eval_split=None, test_split=None))])
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    steps = [r for r in log if "temperature" in r]
    total = max(r["step"] for r in steps)
    assert total == 16 and len(steps) == 16
    for record in steps:  # logged after the step: the temperature the next step uses, 0.6 * (1/6) ** (step / 16)
        assert record["temperature"] == pytest.approx(0.6 * (0.1 / 0.6) ** (record["step"] / 16))
    assert steps[7]["temperature"] == pytest.approx((0.6 * 0.1) ** 0.5)  # halfway: the geometric mean
    saved = json.loads((out / "last" / "config.json").read_text())
    assert saved["temperature"] == pytest.approx(0.1)


def test_each_epoch_reports_how_the_score_bank_ranks_the_recorded_noise(data, tmp_path):
    """With clean captions in the training data, every epoch's record says how the score bank ranks the noise
    tokens of the noisy training captions: the figures of `stored_score_report` on the bank as checkpointed."""
    from datasets import load_dataset

    from evaluation import stored_score_report
    from modeling_gadms import GADMSObjectiveConfig, GADMSProcessor
    from training.pretrain import main

    out = tmp_path / "bank"
    main(["--config", str(_config(tmp_path / "c.yaml", data=str(data["webperson"]), output_dir=str(out),
                                  eval_split=None, test_split=None, keep_last=2))])
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    epochs = [r for r in log if "bank_auc" in r]
    assert [r["epoch"] for r in epochs] == [0, 1]
    train = load_dataset(str(data["webperson"]), split="train")
    texts = [row[c] for row in train for c in ("caption1", "caption2")]
    clean = [row[f"{c}_clean"] for row in train for c in ("caption1", "caption2")]
    noisy = [i for i, (t, c) in enumerate(zip(texts, clean)) if t != c]
    assert noisy and epochs[-1]["bank_captions"] == len(noisy)
    bank = torch.load(out / "checkpoints" / "checkpoint-16" / "custom_checkpoint_2.pkl", weights_only=False)
    expected = stored_score_report(bank["scores"][noisy], GADMSProcessor.from_pretrained(out / "last"),
                                   [texts[i] for i in noisy], [clean[i] for i in noisy], GADMSObjectiveConfig())
    for key, value in expected.items():
        assert epochs[-1][f"bank_{key}"] == pytest.approx(value), key
    assert 0.0 <= epochs[-1]["bank_auc"] <= 1.0
    assert epochs[0]["bank_auc"] != epochs[-1]["bank_auc"]  # the second epoch rewrote the scores


def test_final_temperature_is_checked():
    from training.config import TrainingConfig

    assert TrainingConfig(final_temperature="5e-2").final_temperature == 0.05  # YAML's no-dot float
    assert TrainingConfig(max_grad_norm="1e0").max_grad_norm == 1.0  # every field that is a number or null
    steps = TrainingConfig(max_steps="1e3").max_steps
    assert steps == 1000 and isinstance(steps, int)
    with pytest.raises(ValueError, match="final_temperature must be positive"):
        TrainingConfig(final_temperature=0)
    with pytest.raises(ValueError, match="final_temperature must be a number"):
        TrainingConfig(final_temperature="low")


def _card_paths(text):
    import re

    return re.findall(r'from_pretrained\("([^"]+)"', text)


def test_run_shorter_than_an_epoch_validates_logs_and_writes_final_cards(data, tmp_path):
    from huggingface_hub import ModelCard
    from huggingface_hub.repocard import metadata_load

    from training.pretrain import main

    out = tmp_path / "short"
    # 24 training images x 2 captions / batch 6 = 8 steps an epoch: stopped after 2, logging every 100 steps
    main(["--config", str(_config(tmp_path / "c.yaml", data=str(data["webperson"]), output_dir=str(out),
                                  log_every_steps=100)), "--max-steps", "2"])
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert any(r["step"] == 2 and "loss" in r for r in log)
    assert any(r["step"] == 2 and "val_R1" in r and r["step_in_epoch"] == 2 for r in log)
    results = json.loads((out / "results.json").read_text())
    assert results["best_epoch"] == 0 and results["best"]["R1"] >= 0
    assert (out / "best" / "config.json").is_file()
    for name in ("last", "best"):
        card = ModelCard.load(out / name / "README.md")
        meta = metadata_load(out / name / "README.md")
        assert card.data.model_name == name and meta["model-index"][0]["name"] == name
        assert ".tmp-" not in card.text
        dataset = meta["model-index"][0]["results"][0]["dataset"]
        assert dataset == {"name": "synthetic persons (generated, seed 1)", "type": "synthetic-persons",
                           "split": "test"}
        paths = _card_paths(card.text)
        assert paths and all(Path(p).exists() for p in paths), paths


def test_lora_finetune_names_its_base_and_keeps_the_classifier(data, tiny_gadms_dir, tmp_path):
    from huggingface_hub.repocard import metadata_load
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForPreTraining

    import modeling_gadms  # noqa: F401
    from training.finetune import main

    out = tmp_path / "lora"
    main(["--config", str(_config(tmp_path / "c.yaml", objective="irra", benchmark="cuhk-pedes",
                                  data_root=str(data["cuhk"]), model=str(tiny_gadms_dir), output_dir=str(out),
                                  epochs=1, lora_rank=4, learning_rate=1.0e-2)),
          "--lora", "--merge-lora", "--max-steps", "3"])
    adapter = out / "last"
    base = json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert not Path(base).is_absolute() and (adapter / base).resolve() == Path(tiny_gadms_dir).resolve()
    meta = metadata_load(adapter / "README.md")
    assert meta["base_model"] == base and meta["library_name"] == "peft"
    assert meta["model-index"][0]["name"] == "last"
    assert meta["model-index"][0]["results"][0]["dataset"]["name"] == "synthetic persons (generated, seed 1)"
    assert metadata_load(adapter / "merged" / "README.md")["model-index"][0]["name"] == "merged"
    text = (adapter / "README.md").read_text()
    assert all(Path(p).exists() for p in _card_paths(text)), _card_paths(text)
    trained = load_file(str(adapter / "merged" / "model.safetensors"))["classifier.weight"]
    num_identities = trained.shape[0]
    assert f"num_identities={num_identities}" in text
    # the card's reload path: the base with a classifier of the trained shape, then the adapter (holding it)
    reloaded = PeftModel.from_pretrained(
        AutoModelForPreTraining.from_pretrained(adapter / base, num_identities=num_identities), adapter)
    restored = reloaded.get_base_model().classifier.weight.detach()
    torch.testing.assert_close(restored, trained)
    fresh = AutoModelForPreTraining.from_pretrained(adapter / base, num_identities=num_identities)
    fresh = fresh.classifier.weight
    assert not torch.allclose(fresh, trained)


def test_finetune_names_a_split_without_training_records(data, tiny_gadms_dir, tmp_path, capsys):
    from training.finetune import main

    config = _config(tmp_path / "c.yaml", objective="irra", benchmark="cuhk-pedes", data_root=str(data["cuhk"]),
                     model=str(tiny_gadms_dir), output_dir=str(tmp_path / "ft"), data_split="training")
    with pytest.raises(SystemExit) as exit_info:
        main(["--config", str(config)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "no training records in split 'training'" in err and "test, train, validation" in err


def test_finetune_checks_before_loading_data(tiny_gadms_dir, tmp_path):
    from training.config import load_config
    from training.finetune import main, preflight

    root = tmp_path / "bench"
    root.mkdir()
    config = load_config(None, [f"model={tiny_gadms_dir}", "benchmark=cuhk-pedes", f"data_root={root}",
                                "mixed_precision=bf16", "num_workers=100000", "objective=irra"])
    config.image_size = None  # `image_size: null` in the presets: the model's
    preflight(config, cuda=False)
    assert config.image_size == [64, 32] and config.mixed_precision == "no"
    assert 1 <= config.num_workers <= (__import__("os").cpu_count() or 1)
    wrong = _config(tmp_path / "w.yaml", objective="irra", benchmark="cuhk-pedes", data_root=str(root),
                    model=str(tiny_gadms_dir), image_size=[384, 128])
    with mock.patch("evaluation.load_benchmark") as loader, pytest.raises(SystemExit):
        main(["--config", str(wrong)])
    assert not loader.called  # refused before any data was read
    pushed = load_config(None, [f"model={tiny_gadms_dir}", "benchmark=cuhk-pedes", f"data_root={root}",
                                "objective=irra", "lora=true", "push_to_hub=org/x", "image_size=[64, 32]"])
    with pytest.raises(ValueError, match="is a local folder, which nobody could load from the hub"):
        preflight(pushed, cuda=False)
    for preset in sorted((REPO / "configs").glob("finetune_*.yaml")):
        assert yaml.safe_load(preset.read_text())["image_size"] is None, preset
