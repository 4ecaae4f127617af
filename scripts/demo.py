"""`make demo`: build a small GA-DMS, save it, reload it through transformers' Auto classes, and rank
synthetic person images against captions (the embedded default data, generated on the fly, offline).

The model is randomly initialised until the training scripts land, so the ranking is not meaningful yet:
the demo shows the whole loading and retrieval path working end to end.
"""

import argparse
import re
from pathlib import Path

import torch
from transformers import AutoModel, AutoProcessor

from dataset_builders.synthetic import SyntheticPersonConfig, generate_records
from modeling_gadms import GADMSConfig, GADMSModel, GADMSProcessor, person_image_processor
from modeling_gadms.tokenization import build_tokenizer, merges_for_words


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo_output", help="where the demo model is saved (default: demo_output)")
    parser.add_argument("--people", type=int, default=5, help="number of synthetic people to rank (default: 5)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    data = SyntheticPersonConfig(num_identities=args.people, images_per_identity=1, image_size=(96, 32),
                                 split_fractions=(1.0, 0.0, 0.0), seed=args.seed)
    records = list(generate_records(data))
    captions = [record["captions"][0] for record in records]
    images = [record["image"] for record in records]

    # A small CLIP-format BPE vocabulary spelling every caption word as one token (the full CLIP vocabulary
    # comes with converted CLIP weights: see `python -m modeling_gadms.convert --help`).
    words = sorted({w for c in captions for w in re.findall(r"[a-z]+|[^\sa-z]", c.lower())})
    tokenizer = build_tokenizer(merges_for_words(words))
    config = GADMSConfig.tiny(vocab_size=len(tokenizer), image_size=(96, 32))
    model_dir = Path(args.out) / "gadms-tiny"
    fresh = GADMSModel(config)
    fresh.save_pretrained(model_dir)
    GADMSProcessor(person_image_processor(96, 32), tokenizer).save_pretrained(model_dir)
    print(f"saved a randomly initialised GA-DMS ({fresh.num_parameters():,} parameters) to {model_dir}")

    model = AutoModel.from_pretrained(model_dir).eval()
    processor = AutoProcessor.from_pretrained(model_dir)
    print(f"reloaded with AutoModel -> {type(model).__name__}, AutoProcessor -> {type(processor).__name__}")
    batch = processor(text=captions, images=images)
    with torch.inference_mode():
        out = model(**batch)
    similarity = out.logits_per_text * model.config.temperature  # cosine similarity

    print("\ncosine similarity, captions (rows) x images (columns); * marks each caption's top image")
    print("caption".ljust(62) + "".join(f"img{j + 1:<5d}" for j in range(len(images))))
    for i, caption in enumerate(captions):
        best = int(similarity[i].argmax())
        cells = "".join(f"{similarity[i, j]:+.3f}{'*' if j == best else ' '}  " for j in range(len(images)))
        short = caption if len(caption) <= 58 else caption[:55] + "..."
        print(f"{i + 1}. {short}".ljust(62) + cells)
    hits = sum(int(similarity[i].argmax()) == i for i in range(len(captions)))
    print(f"\nR@1 = {100 * hits / len(captions):.1f}% (chance {100 / len(captions):.1f}%; the model is untrained)")


if __name__ == "__main__":
    main()
