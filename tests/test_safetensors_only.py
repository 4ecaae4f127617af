"""GA-DMS model folders load from safetensors only: a folder holding only `pytorch_model.bin` is refused with
the command that converts it, the conversion reads tensors only, and a pickle that would run code runs nothing."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import modeling_gadms  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
MARKER = Path(os.environ.get("TMPDIR", "/tmp")) / "gadms-pickle-ran"


def _pickled_copy(source: Path, target: Path, state_dict) -> Path:
    """`source` (a saved model folder) with its safetensors weights replaced by `pytorch_model.bin`."""
    target.mkdir()
    for path in source.iterdir():
        if path.name != "model.safetensors":
            (target / path.name).write_bytes(path.read_bytes())
    torch.save(state_dict, target / "pytorch_model.bin")
    return target


class _RunsCode:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


def test_pickled_weights_are_refused_with_the_conversion_command(tiny_gadms_dir, tmp_path):
    from transformers import AutoModel

    from evaluation.embedding import load_model_and_processor

    reference = AutoModel.from_pretrained(tiny_gadms_dir)
    pickled = _pickled_copy(tiny_gadms_dir, tmp_path / "pickled", reference.state_dict())
    with pytest.raises(OSError, match=r"pickled weights .*python -m modeling_gadms.convert bin"):
        AutoModel.from_pretrained(pickled)
    with pytest.raises(OSError, match="safetensors only"):
        load_model_and_processor(pickled)
    # the conversion: tensors only, same weights, and the copy loads everywhere
    out = tmp_path / "converted"
    result = subprocess.run([sys.executable, "-m", "modeling_gadms.convert", "bin", str(pickled), str(out)],
                            cwd=REPO, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "model.safetensors").is_file() and not (out / "pytorch_model.bin").exists()
    converted, processor = load_model_and_processor(out)
    for (name, a), b in zip(reference.state_dict().items(), converted.state_dict().values()):
        assert torch.equal(a, b), name
    assert processor.tokenizer.mask_token_id == reference.config.mask_token_id


def test_a_pickle_that_runs_code_runs_nothing(tiny_gadms_dir, tmp_path):
    from transformers import AutoModel

    from modeling_gadms.convert import main

    MARKER.unlink(missing_ok=True)
    state = dict(AutoModel.from_pretrained(tiny_gadms_dir).state_dict())
    state["payload"] = _RunsCode()
    pickled = _pickled_copy(tiny_gadms_dir, tmp_path / "evil", state)
    with pytest.raises(OSError):
        AutoModel.from_pretrained(pickled)
    with pytest.raises(Exception):  # transformers reads with weights_only=True: the payload is refused
        AutoModel.from_pretrained(pickled, use_safetensors=False)
    with pytest.raises(Exception):
        main(["bin", str(pickled), str(tmp_path / "out")])
    assert not MARKER.exists()
