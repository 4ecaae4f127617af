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


def test_cli_no_progress_hides_every_bar(tmp_path, tiny_gadms_dir):
    """--no-progress: no bar at all on stderr, transformers' own (loading the weights) included."""
    write_benchmark(tmp_path / "data", "rstpreid", LAYOUT)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(
        [sys.executable, str(CLI), "--model", str(tiny_gadms_dir), "--benchmark", "rstpreid", "--data-root",
         str(tmp_path / "data"), "--device", "cpu", "--no-progress", "--output", str(tmp_path / "r.json")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "%|" not in proc.stderr and "it/s" not in proc.stderr, proc.stderr[-3000:]


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


def test_cli_errors(tmp_path, tiny_gadms_dir, capsys):
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
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["--model", "x", "--benchmark", "market", "--data-root", "a"])
    assert exit_info.value.code == 2
    assert "unknown benchmark 'market'" in capsys.readouterr().err


def _cli_error_cases(tmp_path: Path, model_dir: Path) -> dict[str, tuple[list[str], str]]:
    """Each usage error: the command line arguments and a piece of the one error line expected."""
    write_benchmark(tmp_path / "ok", "rstpreid", LAYOUT)
    no_test = {pid: spec for pid, spec in LAYOUT.items() if spec[0] != "test"}
    write_benchmark(tmp_path / "no_test", "rstpreid", no_test)
    ok = ["--data-root", str(tmp_path / "ok")]
    return {
        "unknown_benchmark": (
            ["--model", str(model_dir), "--benchmark", "market1501", *ok],
            "unknown benchmark 'market1501'; choose from: cuhk-pedes, icfg-pedes, rstpreid, ufine6926",
        ),
        "model_path_missing": (
            ["--model", str(tmp_path / "no" / "such" / "model"), "--benchmark", "rstpreid", *ok],
            f"model folder not found: {tmp_path / 'no' / 'such' / 'model'}",
        ),
        "relative_model_path_missing": (
            ["--model", "./checkpoints/best", "--benchmark", "rstpreid", *ok],
            "model folder not found: ./checkpoints/best",
        ),
        "hub_id_not_cached_offline": (
            ["--model", "no-such-org/no-such-model", "--benchmark", "rstpreid", *ok],
            "cannot load model no-such-org/no-such-model",
        ),
        "no_test_split": (
            ["--model", str(model_dir), "--benchmark", "rstpreid", "--data-root", str(tmp_path / "no_test")],
            f"has no 'test' split in {tmp_path / 'no_test' / 'data_captions.json'}",
        ),
    }


@pytest.mark.parametrize(
    "case",
    ["unknown_benchmark", "model_path_missing", "relative_model_path_missing", "hub_id_not_cached_offline",
     "no_test_split"],
)  # fmt: skip
def test_cli_usage_errors_are_one_line_exit_2(tmp_path, tiny_gadms_dir, case):
    args, expected = _cli_error_cases(tmp_path, tiny_gadms_dir)[case]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "HF_HOME": str(tmp_path / "hf_home")}  # fmt: skip
    proc = subprocess.run(
        [sys.executable, str(CLI), *args, "--no-progress", "--output", str(tmp_path / "r.json")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
    assert expected in lines[0]
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize(
    "args, expected",
    [(["--ks", "0"], "--ks: expected a positive integer, got 0"),
     (["--batch-size", "0"], "--batch-size: expected a positive integer, got 0"),
     (["--text-batch-size", "-4"], "--text-batch-size: expected a positive integer, got -4"),
     (["--num-workers", "x"], "--num-workers: expected a non-negative integer, got 'x'")],
)  # fmt: skip
def test_cli_rejects_bad_numbers_before_any_work(args, expected, capsys):
    """A K or batch size that cannot work is a usage error at parse time, not a traceback after embedding."""
    from evaluation.evaluate_retrieval import build_parser

    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["--model", "m", "--benchmark", "cuhk", "--data-root", "d", *args])
    assert exit_info.value.code == 2
    assert expected in capsys.readouterr().err


def test_cli_skips_an_unreadable_image_and_reports_it(tmp_path, tiny_gadms_dir, tiny_model, capsys):
    """A zero-byte and a truncated test image: skipped, counted, named, the metrics over the rest."""
    from evaluation.evaluate_retrieval import main

    model, processor = tiny_model
    write_benchmark(tmp_path, "rstpreid", LAYOUT)
    images = tmp_path / "imgs" / "test_query"
    empty = images / "p6" / "p6_s1.jpg"  # person 6 keeps two other images
    empty.write_bytes(b"")
    truncated = images / "p5" / "p5_s0.jpg"  # person 5's only image: its captions cannot be scored
    truncated.write_bytes(truncated.read_bytes()[:20])
    report = main(
        ["--model", str(tiny_gadms_dir), "--benchmark", "rstpreid", "--data-root", str(tmp_path),
         "--output", str(tmp_path / "r.json"), "--no-progress", "--batch-size", "2"]
    )  # fmt: skip
    entry = json.loads((tmp_path / "r.json").read_text())["results"]["rstpreid"]
    assert entry == json.loads(json.dumps(report["results"]["rstpreid"]))
    view = load_retrieval_split("rstpreid", tmp_path)
    files = view.image_files()
    bad = {str(empty.resolve()), str(truncated.resolve())}
    assert entry["skipped_images"] == 2 and {item["file"] for item in entry["skipped_files"]} == bad
    assert all(item["reason"] for item in entry["skipped_files"])
    reasons = {item["file"]: item["reason"] for item in entry["skipped_files"]}
    assert reasons[str(empty.resolve())] == "empty file (0 bytes)"
    assert entry["num_images"] == len(files) - 2
    assert entry["skipped_captions"] == 2 and entry["num_captions"] == view.queries.num_rows - 2
    assert entry["num_identities"] == len(set(view.gallery_ids)) - 1
    # the metrics are those of the readable images and the captions of persons that still have one
    keep = [i for i, f in enumerate(files) if f not in bad]
    gallery_ids = [view.gallery_ids[i] for i in keep]
    queries = [(c, p) for c, p in zip(view.captions, view.query_ids) if p in set(gallery_ids)]
    images_embeds = embed_images(model, processor, [files[i] for i in keep], progress=False)
    texts = embed_texts(model, processor, [c for c, _ in queries], progress=False)
    expected = bidirectional_retrieval_metrics(texts, images_embeds, [p for _, p in queries], gallery_ids)
    for task in ("t2i", "i2t"):
        assert entry[task] == pytest.approx(expected[task], abs=1e-6)
    out = capsys.readouterr().out
    assert "skipped 2 unreadable image(s)" in out and str(empty.resolve()) in out


def test_cli_warns_about_empty_captions_and_a_single_identity(tmp_path, tiny_gadms_dir, caplog):
    from evaluation.evaluate_retrieval import main

    records = write_benchmark(tmp_path, "rstpreid", {1: ("train", 1), 4: ("test", 3)})
    records[2]["captions"][1] = "  "  # records: p1 (train), p4 image 0, 1, 2 (test queries 0-1, 2-3, 4-5)
    (tmp_path / "data_captions.json").write_text(json.dumps(records), encoding="utf-8")
    with caplog.at_level("WARNING"):
        report = main(
            ["--model", str(tiny_gadms_dir), "--benchmark", "rstpreid", "--data-root", str(tmp_path),
             "--output", str(tmp_path / "r.json"), "--no-progress"]
        )  # fmt: skip
    entry = report["results"]["rstpreid"]
    assert entry["t2i"]["R1"] == 100.0  # what the warning is about
    messages = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("empty caption" in m and "query index 3" in m for m in messages), messages
    assert any("single identity" in m and "trivially 100" in m for m in messages), messages
    assert len(entry["warnings"]) == 2


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
