"""The evaluation CLI end to end on a tiny saved GA-DMS model and generated benchmark fixtures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from evaluation import bidirectional_retrieval_metrics
from evaluation.benchmarks import load_retrieval_split
from evaluation.embedding import embed_images, embed_texts, load_model_and_processor
from test_benchmark_loaders import write_benchmark

REPO = Path(__file__).resolve().parents[1]
CLI = REPO / "evaluation" / "evaluate_retrieval.py"

# person id -> (split, images); captions use only words of the tiny tokenizer's vocabulary
LAYOUT = {
    1: ("train", 2),
    2: ("train", 1),
    3: ("val", 1),
    4: ("test", 2),
    5: ("test", 1),
    6: ("test", 3),
    7: ("test", 1),
}


@pytest.fixture(scope="module")
def tiny_model(tiny_gadms_dir):
    return load_model_and_processor(tiny_gadms_dir)


def _tensor(output):
    return output if isinstance(output, torch.Tensor) else output.pooler_output  # transformers' CLIPModel


def reference_embeddings(model, processor, view):
    """Embed one item at a time, straight through the model API (no batching, no helpers)."""
    with torch.no_grad():
        images = []
        for path in view.image_files():
            pixels = processor(images=[Image.open(path)], return_tensors="pt")["pixel_values"]
            images.append(_tensor(model.get_image_features(pixel_values=pixels)))
        texts = []
        for caption in view.captions:
            enc = processor(text=[caption], return_tensors="pt")
            out = model.get_text_features(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
            texts.append(_tensor(out))
    return torch.cat(images), torch.cat(texts)


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory, tiny_tokenizer):
    """A plain transformers CLIPModel + CLIPProcessor (no GA-DMS code): the zero-shot case."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(tiny_tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
            num_attention_heads=2, max_position_embeddings=77, eos_token_id=tiny_tokenizer.eos_token_id,
            bos_token_id=tiny_tokenizer.bos_token_id, pad_token_id=0,
        ),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=16),
        projection_dim=16,
    )  # fmt: skip
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    path = tmp_path_factory.mktemp("tiny_clip")
    CLIPModel(config).eval().save_pretrained(path)
    CLIPProcessor(image_processor=image_processor, tokenizer=tiny_tokenizer).save_pretrained(path)
    return path


def test_embedding_helpers_match_one_by_one(tmp_path, tiny_model):
    model, processor = tiny_model
    write_benchmark(tmp_path, "rstpreid", LAYOUT)
    view = load_retrieval_split("rstpreid", tmp_path)
    ref_images, ref_texts = reference_embeddings(model, processor, view)
    images = embed_images(model, processor, view.image_files(), batch_size=3, progress=False)
    texts = embed_texts(model, processor, view.captions, batch_size=4, progress=False)
    assert images.dtype == torch.float32 and images.shape == ref_images.shape
    torch.testing.assert_close(images, ref_images, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(texts, ref_texts, atol=1e-5, rtol=1e-4)
    # undecoded datasets rows and PIL images are accepted as well as paths
    undecoded = view.gallery.cast_column("image", type(view.gallery.features["image"])(decode=False))["image"]
    torch.testing.assert_close(embed_images(model, processor, list(undecoded), progress=False), images)
    pil = [Image.open(p) for p in view.image_files()]
    torch.testing.assert_close(embed_images(model, processor, pil, batch_size=64, progress=False), images)
    model.train()  # the helpers embed in eval mode and give the model back in its previous mode
    again = embed_texts(model, processor, view.captions, batch_size=4, progress=False)
    assert model.training
    model.eval()
    torch.testing.assert_close(again, texts)
    bf16 = embed_images(model, processor, view.image_files(), precision="bf16", progress=False)
    assert bf16.dtype == torch.float32 and torch.nn.functional.cosine_similarity(bf16, images).min() > 0.95


def test_cli_end_to_end(tmp_path, tiny_gadms_dir, tiny_model):
    model, processor = tiny_model
    data = tmp_path / "data"
    write_benchmark(data / "CUHK-PEDES", "cuhk-pedes", LAYOUT)
    write_benchmark(data / "RSTPReid", "rstpreid", {pid: (s, n + 1) for pid, (s, n) in LAYOUT.items()})
    output = tmp_path / "out" / "results.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(
        [
            sys.executable, str(CLI), "--model", str(tiny_gadms_dir), "--benchmark", "cuhk-pedes", "rstpreid",
            "--data-root", str(data), "--batch-size", "4", "--device", "cpu", "--precision", "fp32",
            "--output", str(output),
        ],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(output.read_text())
    assert report["model"] == str(tiny_gadms_dir) and report["split"] == "test"
    assert set(report["results"]) == {"cuhk-pedes", "rstpreid"}
    # independent recomputation: item-by-item embeddings, then the metric
    for key in ("cuhk-pedes", "rstpreid"):
        root = data / {"cuhk-pedes": "CUHK-PEDES", "rstpreid": "RSTPReid"}[key]
        view = load_retrieval_split(key, root)
        images, texts = reference_embeddings(model, processor, view)
        expected = bidirectional_retrieval_metrics(texts, images, view.query_ids, view.gallery_ids)
        entry = report["results"][key]
        assert entry["num_images"] == view.gallery.num_rows and entry["num_captions"] == view.queries.num_rows
        for task in ("t2i", "i2t"):
            assert entry[task].keys() == expected[task].keys()
            for metric, value in expected[task].items():
                assert entry[task][metric] == pytest.approx(value, abs=1e-6), (key, task, metric)
    # the standard table is printed: header and one row per benchmark and task
    lines = proc.stdout.splitlines()
    header = next(line for line in lines if line.startswith("benchmark"))
    assert header.split()[-5:] == ["R1", "R5", "R10", "mAP", "mINP"]
    row = next(line for line in lines if line.startswith("CUHK-PEDES") and " t2i " in line)
    assert [float(v) for v in row.split()[-5:]] == pytest.approx(
        [report["results"]["cuhk-pedes"]["t2i"][m] for m in ("R1", "R5", "R10", "mAP", "mINP")], abs=0.006
    )
    assert "captions" in proc.stderr  # tqdm progress bars (stderr)


def test_cli_in_process_options(tmp_path, tiny_gadms_dir, capsys):
    from evaluation.evaluate_retrieval import main

    write_benchmark(tmp_path / "icfg", "icfg-pedes", LAYOUT)
    report = main(
        [
            "--model", str(tiny_gadms_dir), "--benchmark", "ICFG-PEDES",
            "--data-root", str(tmp_path / "icfg"),
            "--split", "validation", "--ks", "1", "2", "--output", str(tmp_path / "r.json"), "--no-progress",
            "--precision", "bf16",
        ]
    )  # fmt: skip
    entry = report["results"]["icfg-pedes"]
    assert entry["split"] == "validation" and set(entry["t2i"]) == {"R1", "R2", "mAP", "mINP"}
    assert entry["num_images"] == entry["num_captions"]  # ICFG-PEDES: one caption per image
    assert json.loads((tmp_path / "r.json").read_text())["precision"] == "bf16"
    assert "ICFG-PEDES" in capsys.readouterr().out


def test_zero_shot_plain_clip_is_the_same_command(tmp_path, tiny_clip_dir):
    from evaluation.evaluate_retrieval import main

    write_benchmark(tmp_path, "ufine6926", LAYOUT)
    report = main(
        ["--model", str(tiny_clip_dir), "--benchmark", "ufine6926", "--data-root", str(tmp_path),
         "--output", str(tmp_path / "zs.json"), "--no-progress", "--batch-size", "2"]
    )  # fmt: skip
    model, processor = load_model_and_processor(tiny_clip_dir)
    view = load_retrieval_split("ufine6926", tmp_path)
    images, texts = reference_embeddings(model, processor, view)
    expected = bidirectional_retrieval_metrics(texts, images, view.query_ids, view.gallery_ids)
    for task in ("t2i", "i2t"):
        for metric, value in expected[task].items():
            assert report["results"]["ufine6926"][task][metric] == pytest.approx(value, abs=1e-6)


def test_cli_errors(tmp_path, tiny_gadms_dir):
    from evaluation.evaluate_retrieval import main

    write_benchmark(tmp_path, "rstpreid", LAYOUT)
    (tmp_path / "imgs" / "test_query" / "p5" / "p5_s0.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="p5_s0.jpg"):
        main(
            [
                "--model",
                str(tiny_gadms_dir),
                "--benchmark",
                "rstpreid",
                "--data-root",
                str(tmp_path),
                "--no-progress",
            ]
        )
    with pytest.raises(SystemExit):
        main(["--model", "x", "--benchmark", "rstpreid", "cuhk-pedes", "--data-root", "a", "b", "c"])
    with pytest.raises(ValueError, match="unknown benchmark"):
        main(["--model", "x", "--benchmark", "market", "--data-root", "a"])


def test_cli_help(capsys):
    from evaluation.evaluate_retrieval import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for option in (
        "--model",
        "--benchmark",
        "--data-root",
        "--split",
        "--batch-size",
        "--device",
        "--precision",
    ):
        assert option in out
    assert "cuhk-pedes" in out and "ufine6926" in out
