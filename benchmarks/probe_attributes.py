"""Which person attributes a trained model's image and text embeddings carry (`evaluation.attribute_probe`).

A logistic probe per attribute of the synthetic person set (gender, age, hair, garment types and colours,
accessories), fitted on the frozen embeddings of part of the training split and scored on the test split,
beside the majority rate. An attribute a tower's probe cannot predict above the majority rate is one the model
does not use to retrieve. Beside them, the test R@1 of retrievers that know exactly a few attributes and
nothing else (`attribute_oracle_r1`), to compare with the model's own R@1.

Usage:
    python benchmarks/probe_attributes.py demo_output/run/last --data demo_output/data

The last line printed is one JSON object: {"attributes": {name: {"majority", "image", "text"}}, "oracle_r1":
{"top_colour+bottom_colour": ..., ...}, "fit_rows", "score_rows", "load_avg"}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


#: the attribute sets of the oracle retrievers, from the largest garments down
ORACLE_ATTRIBUTES = (
    ("top_colour",),
    ("top_colour", "bottom_colour"),
    ("top_colour", "bottom_colour", "gender"),
    ("top_colour", "bottom_colour", "shoe_colour"),
    ("top_colour", "bottom_colour", "shoe_colour", "gender", "hair_colour"),
)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a model folder or hub id (e.g. demo_output/run/last)")
    parser.add_argument("--data", default="demo_output/data",
                        help="a synthetic person set in WebPerson format (default: demo_output/data)")
    parser.add_argument("--fit-split", default="train",
                        help="split the probes are fitted on (default: train)")
    parser.add_argument("--score-split", default="test", help="split they are scored on (default: test)")
    parser.add_argument("--fit-rows", type=int, default=3000,
                        help="rows of the fitting split used (default: 3000; 0 for all)")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1), help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.fit_rows < 0:
        parser.error(f"--fit-rows must be >= 0, got {args.fit_rows}")

    import torch

    from evaluation.attribute_probe import attribute_oracle_r1, probe_attributes
    from evaluation.embedding import load_model_and_processor
    from training.data import load_training_table

    torch.set_num_threads(args.threads)
    model, processor = load_model_and_processor(args.model)
    fit = load_training_table(args.data, args.fit_split)
    if args.fit_rows:
        fit = fit.select(range(min(args.fit_rows, len(fit))))
    score = load_training_table(args.data, args.score_split)
    results = probe_attributes(model, processor, fit, score, progress=True)
    print(f"{'attribute':14s} {'values':>6s} {'majority':>8s} {'image':>6s} {'text':>6s}")
    for r in results:
        print(f"{r.attribute:14s} {r.values:6d} {r.majority:8.3f} {r.image:6.3f} {r.text:6.3f}")
    oracle = {}
    for known in ORACLE_ATTRIBUTES:
        rows = list(zip(*[score[a] for a in known]))
        oracle["+".join(known)] = round(100 * attribute_oracle_r1(score["person_id"], rows), 2)
    print("\nR@1 of a retriever that knows exactly these attributes (ties in random order):")
    for name, r1 in oracle.items():
        print(f"  {r1:6.2f}  {name}")
    report = {"attributes": {r.attribute: {"majority": round(r.majority, 4), "image": round(r.image, 4),
                                           "text": round(r.text, 4)} for r in results},
              "oracle_r1": oracle, "fit_rows": len(fit), "score_rows": len(score),
              "load_avg": round(os.getloadavg()[0], 2)}
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
