#!/usr/bin/env bash
# GPU check for a lent H100 / H200 (under 5 minutes, no network): ViT-B/16 GA-DMS pretraining samples/s and
# peak memory in bf16 at batch 128 (384x128 inputs, random weights, GADMSConfig()), and the GA-DMS / IRRA step
# ratio.
#
#   bash benchmarks/gpu_check.sh         # from anywhere; runs in the repository root with PYTHONPATH=<root>
#   OUT=/some/dir bash benchmarks/gpu_check.sh
#
# Needs only torch, transformers (and what they import) and this source tree; checks first that importing
# modeling_gadms pulls in neither datasets nor evaluate. Writes to $OUT when it is set (else a temporary
# folder): nvidia_smi.txt, environment.txt, gpu_step.log (everything gpu_step.py printed) and gpu_step.json
# (its last line, also the last line this script prints). If batch 128 runs out of memory it is retried once
# with activation checkpointing (the JSON then says so).
# Environment: BATCH (128), STEPS (10), WARMUP (3), STEP_TIMEOUT (seconds for a gpu_step.py run, 170; a
# retry gets what is left of 280 s), DEVICE (cuda), PYTHON (python), GPU_STEP_ARGS (more gpu_step.py flags).
# Plumbing check without a GPU:
#   DEVICE=cpu BATCH=2 STEPS=1 WARMUP=0 GPU_STEP_ARGS=--tiny bash benchmarks/gpu_check.sh
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 1
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PYTHON="${PYTHON:-python}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
BATCH="${BATCH:-128}"
STEPS="${STEPS:-10}"
WARMUP="${WARMUP:-3}"
STEP_TIMEOUT="${STEP_TIMEOUT:-170}"
DEVICE="${DEVICE:-cuda}"
GPU_STEP_ARGS="${GPU_STEP_ARGS:-}"
DEST="${OUT:-}"
if [ -n "$DEST" ]; then mkdir -p "$DEST"; else DEST="$(mktemp -d)"; fi
started=$(date +%s)

echo "== GPU"
{
    nvidia-smi --format=csv \
        --query-gpu=name,memory.total,memory.used,driver_version,clocks.max.sm,power.limit,temperature.gpu \
        2>&1 || echo "nvidia-smi --query-gpu failed"
    nvidia-smi 2>&1 || echo "nvidia-smi not available"
} | tee "$DEST/nvidia_smi.txt"

echo "== environment"
timeout 60 "$PYTHON" - <<'EOF' 2>&1 | tee "$DEST/environment.txt"
import sys
import torch, transformers
print("python", sys.version.split()[0], "| torch", torch.__version__, "| cuda", torch.version.cuda,
      "| transformers", transformers.__version__)
try:
    import accelerate
    print("accelerate", accelerate.__version__)
except ImportError:
    print("accelerate not installed")
print("cuda available:", torch.cuda.is_available(), "| devices:", torch.cuda.device_count(),
      "| bf16 supported:", torch.cuda.is_available() and torch.cuda.is_bf16_supported())
import modeling_gadms
pulled = sorted({m.split(".")[0] for m in sys.modules} & {"datasets", "evaluate"})
print("import modeling_gadms pulled in:", pulled or "neither datasets nor evaluate")
EOF

run_step() {  # run_step SECONDS [extra flags]
    local limit="$1"
    shift
    echo "== benchmarks/gpu_step.py --device $DEVICE --batch $BATCH --steps $STEPS --warmup $WARMUP" \
        "$GPU_STEP_ARGS $*" | tee -a "$DEST/gpu_step.log"
    # shellcheck disable=SC2086  # GPU_STEP_ARGS is a list of flags
    timeout --kill-after=10 "$limit" "$PYTHON" benchmarks/gpu_step.py --device "$DEVICE" --batch "$BATCH" \
        --steps "$STEPS" --warmup "$WARMUP" $GPU_STEP_ARGS "$@" 2>&1 | tee -a "$DEST/gpu_step.log"
    return "${PIPESTATUS[0]}"
}

: > "$DEST/gpu_step.log"
run_step "$STEP_TIMEOUT"
status=$?
left=$(( 280 - ($(date +%s) - started) ))
if [ "$status" -eq 3 ] && [ "$left" -gt 30 ]; then  # out of memory: once more, with activation checkpointing
    run_step "$left" --activation-checkpointing
    status=$?
fi
if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then echo "gpu_step.py timed out" | tee -a "$DEST/gpu_step.log"; fi
last=$(grep '^{' "$DEST/gpu_step.log" | tail -n 1)
if [ -n "$last" ]; then echo "$last" > "$DEST/gpu_step.json"; fi

echo "== done in $(( $(date +%s) - started ))s, exit status $status; outputs in $DEST"
[ -n "$last" ] && echo "$last"
exit "$status"
