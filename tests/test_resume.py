"""Kill -9 a training run in the middle of epoch 1 of 3, resume it with `--resume latest`, and get the same
run as one that was never interrupted: bit-identical final weights and score bank, identical per-step losses.

The resumed process starts at a later epoch than 0, which is where accelerate's data loader used to replay
epoch 0's order and augmentation (its epoch counter restarts at 0 in every new process). Checked with the
loader in the main process, with 2 data-loader workers, and with two training processes.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import launch_env

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
EPOCHS = 3


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """24 training images of 20 synthetic persons (48 captions)."""
    from dataset_builders.synthetic import SyntheticPersonConfig, write_webperson

    root = tmp_path_factory.mktemp("resume-data")
    config = SyntheticPersonConfig(num_identities=20, images_per_identity=2, image_size=(64, 32), seed=1,
                                   split_fractions=(0.6, 0.2, 0.2))
    return write_webperson(config, root / "webperson")


def _config(tmp_path, name, data, **values):
    base = {"objective": "gadms", "model": "tiny", "image_size": [64, 32], "epochs": EPOCHS, "batch_size": 4,
            "learning_rate": 1.0e-3, "adam_eps": 1.0e-8, "warmup_epochs": 0.5, "log_every_steps": 1, "seed": 5,
            "data": str(data), "eval_split": None, "test_split": None, "save_every_steps": 5, "keep_last": 2,
            "output_dir": str(tmp_path / name)}
    base.update(values)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(base))
    return path


def _command(config, processes, port):
    if processes == 1:
        return [str(BIN / "accelerate"), "launch", "--cpu", "--num_processes", "1", "training/pretrain.py",
                "--config", str(config)]
    return [str(BIN / "torchrun"), "--nproc_per_node", str(processes), "--master_port", str(port),
            "training/pretrain.py", "--config", str(config)]


def _env_for(processes):
    return launch_env(ACCELERATE_USE_CPU="true") if processes > 1 else launch_env()


def _run(command, processes):
    result = subprocess.run(command, cwd=REPO, env=_env_for(processes), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-4000:])


def _logged_steps(out: Path) -> list[dict]:
    log = out / "log.jsonl"
    if not log.is_file():
        return []
    records = []
    for line in log.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:  # a line being written
            pass
    return [r for r in records if "loss" in r]


def _kill_after(command, processes, out: Path, step: int) -> int:
    """Start the run and SIGKILL its whole process group once it has logged `step`; return the last step logged."""
    process = subprocess.Popen(command, cwd=REPO, env=_env_for(processes), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 600
    try:
        while time.monotonic() < deadline:
            steps = [r["step"] for r in _logged_steps(out)]
            if steps and max(steps) >= step:
                os.killpg(process.pid, signal.SIGKILL)
                break
            if process.poll() is not None:
                raise AssertionError(f"the run ended before step {step}: {process.stderr.read()[-3000:]}")
            time.sleep(0.02)
        else:
            raise AssertionError(f"step {step} not reached in time")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not (out / "results.json").exists()
    return max(r["step"] for r in _logged_steps(out))


def _weights(out: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(out / "last" / "model.safetensors"))


def _losses(out: Path) -> list[tuple]:
    return [(r["step"], r["epoch"], r["loss"], r["sdm_loss"], r["mtp_loss"]) for r in _logged_steps(out)]


def _assert_same_run(reference: Path, resumed: Path, steps_per_epoch: int):
    a, b = _weights(reference), _weights(resumed)
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} of {len(a)} tensors differ after resuming, e.g. {different[:3]}"
    losses = _losses(reference)
    assert [s for s, *_ in losses] == list(range(1, EPOCHS * steps_per_epoch + 1))
    assert _losses(resumed) == losses  # each step logged once, with the uninterrupted run's losses
    banks = []
    for run in (reference, resumed):
        final = max((run / "checkpoints").iterdir(), key=lambda p: int(p.name.split("-")[1]))
        banks.append(torch.load(final / "custom_checkpoint_2.pkl", weights_only=False)["scores"])
    assert torch.equal(banks[0], banks[1])


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """The uninterrupted single-process run (12 steps an epoch, 3 epochs)."""
    tmp_path = tmp_path_factory.mktemp("reference")
    _run(_command(_config(tmp_path, "ref", data), 1, None), 1)
    return tmp_path / "ref"


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2])
def test_kill_in_epoch_1_then_resume_is_exact(data, reference, tmp_path, workers):
    config = _config(tmp_path, "run", data, num_workers=workers)
    command = _command(config, 1, None)
    last = _kill_after(command, 1, tmp_path / "run", step=16)  # epoch 1 is steps 13-24
    assert 16 <= last < 24, f"killed at step {last}, not inside epoch 1"
    _run(command + ["--resume", "latest"], 1)
    _assert_same_run(reference, tmp_path / "run", steps_per_epoch=12)


@pytest.mark.slow
def test_kill_in_epoch_1_then_resume_is_exact_with_two_processes(data, tmp_path):
    # two processes of 4 samples each: 6 steps an epoch, epoch 1 is steps 7-12
    _run(_command(_config(tmp_path, "ref2", data, save_every_steps=2), 2, 29541), 2)
    command = _command(_config(tmp_path, "run2", data, save_every_steps=2), 2, 29542)
    last = _kill_after(command, 2, tmp_path / "run2", step=8)
    assert 8 <= last < 12, f"killed at step {last}, not inside epoch 1"
    _run(command + ["--resume", "latest"], 2)
    _assert_same_run(tmp_path / "ref2", tmp_path / "run2", steps_per_epoch=6)
