"""benchmarks/bench_method.py end to end at a toy size: runs in two worker processes, every run measured, and the
last line the JSON the README quotes."""

import json
import subprocess
import sys
from pathlib import Path

from conftest import launch_env

REPO = Path(__file__).resolve().parents[1]


def test_bench_method_runs_its_arms_in_two_workers_and_prints_its_json(tmp_path):
    result = subprocess.run(
        [sys.executable, "benchmarks/bench_method.py", "--identities", "60", "--test-persons", "10", "--max-steps",
         "3", "--seeds", "0", "--noise", "0.5", "--jobs", "2", "--threads", "2", "--work", str(tmp_path)],
        cwd=REPO, env=launch_env(), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    lines = result.stdout.strip().splitlines()
    summary = json.loads(lines[-1])
    for key in ("gain_r1", "gain_r1_noisy", "gass_noise_auc", "occlusion_noise_auc", "random_scores_gain_r1"):
        assert isinstance(summary[key], float), key
    assert summary["seeds"] == [0] and summary["noise"] == [0.5]
    assert summary["jobs"] == 2 and summary["threads_per_job"] == 1
    # each arm ran once and was reported once, in whatever order the workers finished
    reported = [line.split(":")[0].split()[-1] for line in lines if line.startswith("noise 0.5 seed 0 ")]
    assert sorted(reported) == ["gadms", "irra", "random"]
    assert set(summary["runs"]) == {"0.5/irra", "0.5/random", "0.5/gadms"}
    gadms = summary["runs"]["0.5/gadms"]
    assert summary["gain_r1"] == round(gadms["R1"] - summary["runs"]["0.5/irra"]["R1"], 2)
    # 40 training persons x 2 pictures x 2 captions = 2 steps of 64 an epoch: the bank was read after epoch 1 and
    # where the third step stopped the run in epoch 2; and the oracle ceilings
    banks = summary["bank_noise_auc_per_epoch"]
    assert len(banks) == 2 and all(0 <= auc <= 1 for auc in banks)
    ceiling = summary["noise_auc_ceiling"]
    assert 0.5 < ceiling["words"] < ceiling["image_aware"] <= 1


def test_bench_method_without_noise_reports_null_aucs_in_strict_json(tmp_path):
    """At noise 0 there is no noisy caption to score: the AUCs are null (strict JSON), not a crash or NaN."""
    result = subprocess.run(
        [sys.executable, "benchmarks/bench_method.py", "--identities", "40", "--test-persons", "4", "--max-steps",
         "2", "--seeds", "0", "--noise", "0", "--arms", "gadms", "--epochs", "1", "--jobs", "1",
         "--work", str(tmp_path)],
        cwd=REPO, env=launch_env(), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]

    def refuse(constant):
        raise ValueError(f"not strict JSON: {constant}")

    summary = json.loads(result.stdout.strip().splitlines()[-1], parse_constant=refuse)
    assert summary["gass_noise_auc"] is None and summary["noise_auc_ceiling"] == {"words": None, "image_aware": None}
