"""benchmarks/gpu_step.py: a tiny CPU smoke run, in a process where `datasets` and `evaluate` cannot be
imported (as on a lent GPU machine, which has neither)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEYS = {"gadms_samples_per_s", "irra_samples_per_s", "gadms_over_irra", "peak_memory_gb", "batch", "device"}

# `None` in sys.modules: `import datasets` fails and importlib.util.find_spec("datasets") is None, as if
# the package were not installed
RUN_WITHOUT_DATASETS = """
import runpy, sys
for name in ("datasets", "evaluate"):
    sys.modules[name] = None
sys.argv = ["benchmarks/gpu_step.py", *sys.argv[1:]]
runpy.run_path("benchmarks/gpu_step.py", run_name="__main__")
loaded = sorted(m for m in ("datasets", "evaluate") if sys.modules.get(m) is not None)
assert not loaded, loaded
"""


def test_gpu_step_cpu_smoke_without_datasets_or_evaluate():
    command = [sys.executable, "-c", RUN_WITHOUT_DATASETS, "--device", "cpu", "--tiny", "--batch", "2",
               "--steps", "1", "--warmup", "0"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1",
                               "TOKENIZERS_PARALLELISM": "false", "HOME": str(Path.home())})
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert KEYS <= set(result)
    assert result["batch"] == 2 and result["device"].startswith("cpu") and result["model"] == "tiny"
    assert result["gadms_samples_per_s"] > 0 and result["irra_samples_per_s"] > 0
    assert result["gadms_over_irra"] > 0
    assert result["peak_memory_gb"] is None  # CUDA only


def test_make_batch_token_layout():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import torch
        from gpu_step import make_batch

        from modeling_gadms import GADMSConfig

        config = GADMSConfig.tiny()
        batch = make_batch(config, 6, torch.device("cpu"), torch.Generator().manual_seed(0))
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert ids.shape == (6, 77) and batch["pixel_values"].shape == (6, 3, *config.image_size)
    text = config.text_config
    assert (ids[:, 0] == text.bos_token_id).all()
    assert ((ids == text.eos_token_id).sum(1) == 1).all()  # one EOT per caption, padding after it is 0
    assert (ids[mask == 0] == 0).all() and not (ids == config.mask_token_id).any()
    assert batch["person_ids"].tolist() == [0, 0, 1, 1, 2, 2]
