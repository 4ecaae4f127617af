"""GA-DMS pretraining step throughput and peak memory on one GPU, and the GA-DMS / IRRA step ratio.

One optimizer step = forward of `GADMSForPreTraining` (the recipe's objective), backward, `torch.optim.Adam` step, as the
trainer does it. The GA-DMS step reads and writes a GASS score bank kept on the CPU (as in
`training/trainer.py`). Default: `GADMSConfig()` (CLIP ViT-B/16 at 384x128, random weights), batch 128,
CUDA, bf16 autocast over fp32 weights (what `mixed_precision: bf16` does through accelerate). Random
captions (77 tokens, 12-60 real tokens) and random pixels; two captions per person id, as in WebPerson.

Warm-up steps are not timed; then the two objectives alternate step by step (the order flips every step),
each step timed between `torch.cuda.synchronize()` calls; figures are medians. Peak memory is
`torch.cuda.max_memory_allocated()` over the timed GA-DMS steps (reset before each step), in GB (1e9 bytes).

Imports only torch, transformers (through `modeling_gadms`) and this source tree: it runs where `datasets`
and `evaluate` are not installed. CPU smoke test: `--device cpu --batch 2 --steps 2` (add `--tiny` for the
2-layer `GADMSConfig.tiny()` at 64x32).

Usage: PYTHONPATH=. python benchmarks/gpu_step.py [--device cuda] [--batch 128] [--steps 10] [--warmup 3]
The last line printed is a JSON object: {"gadms_samples_per_s", "irra_samples_per_s", "gadms_over_irra",
"peak_memory_gb", "batch", "device", ...}. Out of memory: the JSON has "error": "out of memory" and the exit
status is 3.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # `python benchmarks/gpu_step.py` from anywhere: this tree's modeling_gadms
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

OOM_EXIT = 3


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="cuda, cuda:N or cpu (default: cuda when available)")
    parser.add_argument("--batch", type=int, default=128, help="samples per step (default: 128)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per objective (default: 10)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps of each first (default: 3)")
    parser.add_argument("--precision", choices=["bf16", "fp16", "fp32"], default=None,
                        help="autocast dtype (default: bf16 on cuda, fp32 on cpu); weights stay fp32")
    parser.add_argument("--tiny", action="store_true", help="GADMSConfig.tiny() (64x32): smoke tests")
    parser.add_argument("--activation-checkpointing", action="store_true",
                        help="recompute encoder activations in backward (less memory, slower)")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def make_batch(config, batch: int, device: torch.device, generator: torch.Generator) -> dict:
    """Random captions in the model's token layout (SOT, words, EOT, zero padding), images and person ids."""
    text = config.text_config
    vocab, length = text.vocab_size, text.max_position_embeddings
    sot, eot, mask = text.bos_token_id, text.eos_token_id, config.mask_token_id
    ids = torch.randint(1, min(sot, eot, mask), (batch, length), generator=generator)
    ids[:, 0] = sot
    lengths = torch.randint(min(12, length - 2), min(60, length - 1), (batch,), generator=generator)
    for row, eos in enumerate(lengths.tolist()):
        ids[row, eos], ids[row, eos + 1:] = eot, 0
    assert int(ids.max()) < vocab
    attention_mask = (torch.arange(length)[None] <= lengths[:, None]).long()
    height, width = config.image_size
    pixels = torch.randn(batch, 3, height, width, generator=generator)
    return {
        "input_ids": ids.to(device),
        "attention_mask": attention_mask.to(device),
        "pixel_values": pixels.to(device),
        "person_ids": (torch.arange(batch) // 2).to(device),  # two captions per person
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(args) -> dict:
    from modeling_gadms import GADMSConfig, GADMSForPreTraining, GADMSObjectiveConfig, ScoreBank

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda, but torch sees no CUDA device (use --device cpu for a smoke test)")
    precision = args.precision or ("bf16" if device.type == "cuda" else "fp32")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[precision]

    torch.manual_seed(args.seed)
    config = GADMSConfig.tiny() if args.tiny else GADMSConfig()
    model = GADMSForPreTraining(config).to(device).train()
    recipes = {name: GADMSObjectiveConfig(recipe=name) for name in ("gadms", "irra")}
    if args.activation_checkpointing:
        enable = (getattr(model, "activation_checkpointing_enable", None)
                  or model.gradient_checkpointing_enable)
        enable()
    # the trainer's score bank (CPU, float16) over a few batches' worth of samples, visited in turn
    bank = ScoreBank.from_config(config, num_samples=4 * args.batch)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-5, betas=(0.9, 0.999), eps=1e-3, weight_decay=4e-5)
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    data_generator = torch.Generator().manual_seed(args.seed)
    masks = torch.Generator().manual_seed(args.seed + 1)
    batch = make_batch(config, args.batch, device, data_generator)
    visits = {"n": 0}

    def autocast():
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=dtype)

    def step(objective: str) -> tuple[float, int]:
        offset = (visits["n"] % 4) * args.batch
        visits["n"] += 1
        sample_index = torch.arange(offset, offset + args.batch, device=device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        _sync(device)
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        model.objective = recipes[objective]
        with autocast():
            out = model(**batch, token_scores=bank.get(sample_index), generator=masks)
        if out.token_scores is not None:  # the trainer writes the new scores back
            bank.update(sample_index.cpu(), out.token_scores.float().cpu())
        if scaler is not None:
            scaler.scale(out.loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            out.loss.backward()
            optimizer.step()
        _sync(device)
        elapsed = time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
        if not torch.isfinite(out.loss.detach()).item():
            raise RuntimeError(f"{objective} loss is not finite: {out.loss.item()}")
        return elapsed, peak

    times = {"gadms": [], "irra": []}
    peaks = {"gadms": 0, "irra": 0}
    for _ in range(args.warmup):
        step("gadms"), step("irra")
    for index in range(args.steps):
        for objective in (("gadms", "irra") if index % 2 == 0 else ("irra", "gadms")):
            elapsed, peak = step(objective)
            times[objective].append(elapsed)
            peaks[objective] = max(peaks[objective], peak)

    median = {k: statistics.median(v) for k, v in times.items()}
    for name in ("gadms", "irra"):
        print(f"{name:6s} step median {median[name] * 1e3:9.1f} ms  "
              f"({args.batch / median[name]:8.1f} samples/s)  peak {peaks[name] / 1e9:6.2f} GB", flush=True)
    import transformers

    return {
        "gadms_samples_per_s": round(args.batch / median["gadms"], 2),
        "irra_samples_per_s": round(args.batch / median["irra"], 2),
        "gadms_over_irra": round(median["gadms"] / median["irra"], 4),
        "peak_memory_gb": round(peaks["gadms"] / 1e9, 3) if device.type == "cuda" else None,
        "irra_peak_memory_gb": round(peaks["irra"] / 1e9, 3) if device.type == "cuda" else None,
        "batch": args.batch,
        "device": (torch.cuda.get_device_name(device) if device.type == "cuda"
                   else f"cpu ({platform.machine()})"),
        "precision": precision,
        "model": "tiny" if args.tiny else "ViT-B/16 384x128",
        "parameters": sum(p.numel() for p in model.parameters()),
        "gadms_step_s": round(median["gadms"], 4),
        "irra_step_s": round(median["irra"], 4),
        "steps": args.steps,
        "warmup": args.warmup,
        "activation_checkpointing": bool(args.activation_checkpointing),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    if args.batch < 2 or args.steps < 1 or args.warmup < 0:
        raise SystemExit("--batch must be >= 2, --steps >= 1, --warmup >= 0")
    try:
        result = run(args)
    except getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError) as error:
        print(f"out of memory at batch {args.batch}: {str(error).splitlines()[0]}", file=sys.stderr,
              flush=True)
        print(json.dumps({"error": "out of memory", "batch": args.batch, "device": args.device,
                          "activation_checkpointing": bool(args.activation_checkpointing)}), flush=True)
        raise SystemExit(OOM_EXIT) from None
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
