"""The WebPerson command line: every subcommand's options, defaults and parsed values (the layout of
``dataset_builders.webperson.commands`` must not change them), the threshold table behind the stage
options, and the shared retry loop."""

from __future__ import annotations

import argparse
import io
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from dataset_builders.webperson import cli, retry
from dataset_builders.webperson.caption_filter import FilterRules
from dataset_builders.webperson.commands import COMMANDS
from dataset_builders.webperson.commands.common import add_settings_options, settings_from_args
from dataset_builders.webperson.detection import DetectionThresholds
from dataset_builders.webperson.images import ImageLimits, open_crop
from dataset_builders.webperson.pose import PoseThresholds
from dataset_builders.webperson.retry import TryAgain, retry_call
from dataset_builders.webperson.settings import option, settings_dict
from dataset_builders.webperson.shards import ShardSelection

STAGE = {"max_shards": None, "no_progress": False, "shard": ShardSelection(0, 1), "work": Path("W")}
#: the engine options of the stages that run on Ray (model stages also have --ray-actors)
ENGINE = {"engine": "local", "ray_address": None, "ray_max_retries": 3, "ray_num_cpus": 1.0, "ray_num_gpus": 0.0}
MODEL_ENGINE = {**ENGINE, "ray_actors": None}
ENGINE_OPTIONS = ["--engine", "--ray-address", "--ray-num-gpus", "--ray-num-cpus"]
MODEL_ENGINE_OPTIONS = [*ENGINE_OPTIONS, "--ray-actors", "--ray-max-retries"]

#: subcommand -> (its options in --help order, a shortest command line, the namespace that line gives)
COMMAND_LINES = {
    "ingest": (
        ["--work", "--shard", "--max-shards", "--no-progress", "--source", "--input", "--image-column",
         "--url-column", "--split", "--downloader", "--download-dir", "--timeout", "--retries",
         "--shard-size", "--min-side", "--max-pixels", "--workers", "--verify"],
        "ingest --work W --source folder --input pool",
        {**STAGE, "download_dir": None, "downloader": "builtin", "image_column": "image", "input": ["pool"],
         "max_pixels": 64_000_000, "min_side": 90, "retries": 1, "shard_size": 1000, "source": "folder",
         "split": "train", "timeout": 10.0, "url_column": "url", "verify": False, "workers": 8},
    ),
    "detect": (
        ["--work", "--shard", "--max-shards", "--no-progress", "--retry-errors", *MODEL_ENGINE_OPTIONS, "--detector",
         "--min-short-side", "--min-aspect", "--max-aspect", "--min-score", "--labels", "--max-per-image",
         "--batch-size", "--jpeg-quality"],
        "detect --work W",
        {**STAGE, **MODEL_ENGINE, "batch_size": 16, "detector": "transformers=PekingU/rtdetr_r50vd_coco_o365",
         "jpeg_quality": 95, "labels": ["person"], "max_aspect": 0.5, "max_per_image": 0, "min_aspect": 0.25,
         "min_score": 0.85, "min_short_side": 90.0, "retry_errors": False},
    ),
    "pose": (
        ["--work", "--shard", "--max-shards", "--no-progress", "--retry-errors", *MODEL_ENGINE_OPTIONS, "--pose-model",
         "--visibility", "--min-visible", "--min-hips", "--min-head", "--batch-size"],
        "pose --work W",
        {**STAGE, **MODEL_ENGINE, "batch_size": 32, "min_head": 2, "min_hips": 1, "min_visible": 8,
         "pose_model": "transformers=usyd-community/vitpose-base-simple", "retry_errors": False,
         "visibility": 0.5},
    ),
    "caption": (
        ["--work", "--shard", "--max-shards", "--no-progress", "--retry-errors", *MODEL_ENGINE_OPTIONS, "--captioner", "--templates",
         "--seed", "--max-words", "--batch-size", "--from"],
        "caption --work W --captioner openai=a,base_url=http://h/v1",
        {**STAGE, **MODEL_ENGINE, "batch_size": 64, "captioner": ["openai=a,base_url=http://h/v1"], "from_stage": "pose",
         "max_words": 60, "retry_errors": False, "seed": 0, "templates": "default_v1"},
    ),
    "filter": (
        ["--work", "--shard", "--max-shards", "--no-progress", *ENGINE_OPTIONS, "--ray-max-retries", "--min-words",
         "--max-words"],
        "filter --work W",
        {**STAGE, **ENGINE, "max_words": 80, "min_words": 8},
    ),
    "export": (
        ["--work", "--out", "--from", "--name", "--license", "--shard-size", "--samples", "--seed",
         "--overwrite"],
        "export --work W --out O",
        {"from_stage": "filter", "license": "other", "name": "WebPerson", "out": Path("O"),
         "overwrite": False, "samples": 8, "seed": 0, "shard_size": 5000, "work": Path("W")},
    ),
    "publish": (
        ["--folder", "--repo", "--private", "--token", "--revision", "--large"],
        "publish --folder F --repo org/x",
        {"folder": Path("F"), "large": False, "private": False, "repo": "org/x", "revision": None,
         "token": None},
    ),
    "templates-extract": (
        ["--captions", "--llm", "--out", "--limit", "--batch-size"],
        "templates-extract --captions c.txt --llm transformers=m --out t.txt",
        {"batch_size": 64, "captions": Path("c.txt"), "limit": None, "llm": "transformers=m",
         "out": Path("t.txt")},
    ),
    "templates-select": (
        ["--templates", "--embedder", "--clusters", "--random-per-cluster", "--seed", "--name", "--version",
         "--out-dir"],
        "templates-select --templates t.txt --embedder clip=m --clusters 4 --name b --version 2 --out-dir d",
        {"clusters": 4, "embedder": "clip=m", "name": "b", "out_dir": Path("d"), "random_per_cluster": 5,
         "seed": 0, "templates": Path("t.txt"), "version": 2},
    ),
    "status": (["--work"], "status --work W", {"work": Path("W")}),
}  # fmt: skip

#: a command line that sets every option of its subcommand, and the values that differ from the defaults
FULL_LINES = [
    (
        "ingest --work W --source urls --input urls.txt --downloader img2dataset --download-dir D "
        "--timeout 2.5 --retries 0 --shard-size 10 --min-side 32 --max-pixels 1000 --workers 2 --verify "
        "--shard 1/3 --max-shards 4 --no-progress --image-column img --url-column link --split test",
        {"download_dir": Path("D"), "downloader": "img2dataset", "image_column": "img", "input": ["urls.txt"],
         "max_pixels": 1000, "max_shards": 4, "min_side": 32, "no_progress": True, "retries": 0,
         "shard": ShardSelection(1, 3), "shard_size": 10, "source": "urls", "split": "test", "timeout": 2.5,
         "url_column": "link", "verify": True, "workers": 2},
    ),
    (
        "detect --work W --detector yolo=yolo11x.pt --min-short-side 50 --min-aspect 0.2 --max-aspect 0.6 "
        "--min-score 0.5 --labels person man --max-per-image 3 --batch-size 4 --jpeg-quality 90 "
        "--retry-errors --engine ray --ray-address auto --ray-num-gpus 0.5 --ray-num-cpus 2 --ray-actors 3 "
        "--ray-max-retries 1",
        {"engine": "ray", "ray_address": "auto", "ray_num_gpus": 0.5, "ray_num_cpus": 2.0, "ray_actors": 3,
         "ray_max_retries": 1, "batch_size": 4, "detector": "yolo=yolo11x.pt", "jpeg_quality": 90, "labels": ["person", "man"],
         "max_aspect": 0.6, "max_per_image": 3, "min_aspect": 0.2, "min_score": 0.5, "min_short_side": 50.0,
         "retry_errors": True},
    ),
    (
        "pose --work W --pose-model transformers=x --visibility 0 --min-visible 5 --min-hips 0 --min-head 1 "
        "--batch-size 8 --retry-errors --shard 0/2",
        {"batch_size": 8, "min_head": 1, "min_hips": 0, "min_visible": 5, "pose_model": "transformers=x",
         "retry_errors": True, "shard": ShardSelection(0, 2), "visibility": 0.0},
    ),
    (
        "caption --work W --captioner a --captioner b --templates t.json --seed 3 --max-words 40 "
        "--batch-size 2 --from detect --retry-errors",
        {"batch_size": 2, "captioner": ["a", "b"], "from_stage": "detect", "max_words": 40,
         "retry_errors": True, "seed": 3, "templates": "t.json"},
    ),
    (
        "filter --work W --min-words 3 --max-words 20 --max-shards 1 --engine ray --ray-address 10.0.0.1:6379 "
        "--ray-num-cpus 0.5 --ray-num-gpus 1 --ray-max-retries 0",
        {"max_shards": 1, "max_words": 20, "min_words": 3, "engine": "ray", "ray_address": "10.0.0.1:6379",
         "ray_num_cpus": 0.5, "ray_num_gpus": 1.0, "ray_max_retries": 0},
    ),
    (
        "export --work W --out O --from caption --name N --license cc-by-4.0 --shard-size 10 --samples 0 "
        "--seed 1 --overwrite",
        {"from_stage": "caption", "license": "cc-by-4.0", "name": "N", "overwrite": True, "samples": 0,
         "seed": 1, "shard_size": 10},
    ),
    (
        "publish --folder F --repo org/x --private --token T --revision dev --large",
        {"large": True, "private": True, "revision": "dev", "token": "T"},
    ),
    (
        "templates-extract --captions c.json --llm openai=m --out t.txt --limit 5 --batch-size 2",
        {"batch_size": 2, "captions": Path("c.json"), "limit": 5, "llm": "openai=m"},
    ),
    (
        "templates-select --templates t.txt --embedder clip=m --clusters 4 --name b --version 2 --out-dir d "
        "--random-per-cluster 1 --seed 7",
        {"random_per_cluster": 1, "seed": 7},
    ),
]  # fmt: skip


def _parse(line: str) -> dict:
    values = vars(cli.build_parser().parse_args(shlex.split(line)))
    values.pop("func")
    return values


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_subcommands_in_order_with_their_options():
    subcommands = _subcommands()
    assert list(subcommands) == list(COMMAND_LINES)
    for name, parser in subcommands.items():
        options = [s for a in parser._actions for s in a.option_strings if s.startswith("--")]
        options.remove("--help")
        assert options == COMMAND_LINES[name][0], name


@pytest.mark.parametrize("command", list(COMMAND_LINES))
def test_defaults(command):
    _, line, expected = COMMAND_LINES[command]
    assert _parse(line) == {"command": command, **expected}


@pytest.mark.parametrize("line, changed", FULL_LINES, ids=[line.split()[0] for line, _ in FULL_LINES])
def test_every_option_parses(line, changed):
    command = line.split()[0]
    assert _parse(line) == {"command": command, **COMMAND_LINES[command][2], **changed}


def test_each_module_registers_its_subcommand_and_run():
    names = {module.__name__.rsplit(".", 1)[1].replace("_", "-"): module for module in COMMANDS}
    assert list(names) == list(COMMAND_LINES)
    for name, module in names.items():
        args = cli.build_parser().parse_args(shlex.split(COMMAND_LINES[name][1]))
        assert args.func is module.run


def test_help_shows_defaults_of_the_threshold_options(capsys):
    with pytest.raises(SystemExit):
        cli.main(["detect", "--help"])
    out = " ".join(capsys.readouterr().out.split())  # as wrapped for any terminal width
    assert "class names that count as persons (default: ['person'])" in out
    assert "confidence must be above (default: 0.85)" in out
    with pytest.raises(SystemExit):
        cli.main(["status", "--help"])
    assert "default:" not in capsys.readouterr().out


@pytest.mark.parametrize(
    "command, settings_class",
    [
        ("ingest", ImageLimits),
        ("detect", DetectionThresholds),
        ("pose", PoseThresholds),
        ("filter", FilterRules),
    ],
)
def test_threshold_options_default_to_the_dataclass(command, settings_class):
    args = cli.build_parser().parse_args(shlex.split(COMMAND_LINES[command][1]))
    assert settings_from_args(settings_class, args) == settings_class()


def test_a_threshold_field_is_an_option_and_a_setting():
    @dataclass(frozen=True)
    class Rules:
        min_size: int = option(3, "smallest size", int)
        names: tuple[str, ...] = option(("a",), "names", str, nargs="+")
        hidden: str = "not an option"

    parser = argparse.ArgumentParser()
    add_settings_options(parser, Rules)
    assert settings_from_args(Rules, parser.parse_args([])) == Rules(3, ["a"])
    rules = settings_from_args(Rules, parser.parse_args(["--min-size", "5", "--names", "b", "c"]))
    assert settings_dict(rules) == {"min_size": 5, "names": ["b", "c"], "hidden": "not an option"}
    assert not hasattr(parser.parse_args([]), "hidden")


def test_retry_call_backs_off_and_gives_up(monkeypatch):
    delays, calls, retried = [], [], []
    monkeypatch.setattr(retry.time, "sleep", delays.append)

    def failing(number):
        calls.append(number)
        raise TryAgain(ValueError(f"attempt {number}"), after=50.0 if number == 2 else None)

    with pytest.raises(ValueError, match="attempt 5"):
        retry_call(failing, retries=4, backoff=0.2, max_backoff=2.0, on_retry=retried.append)
    assert calls == [1, 2, 3, 4, 5] and retried == [1, 2, 3, 4]
    assert delays == pytest.approx([0.2, 2.0, 0.8, 1.6])  # attempt 2 asked for 50 s: capped


def test_retry_call_returns_and_fails_at_once(monkeypatch):
    monkeypatch.setattr(retry.time, "sleep", lambda seconds: None)
    answers = iter([TryAgain(OSError("busy")), "ok"])

    def flaky(number):
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert retry_call(flaky, retries=3, backoff=1, max_backoff=1) == "ok"
    calls = []

    def fatal(number):
        calls.append(number)
        raise KeyError("bad")

    with pytest.raises(KeyError):
        retry_call(fatal, retries=3, backoff=1, max_backoff=1)
    assert calls == [1]


@pytest.mark.parametrize("mode, fmt", [("L", "JPEG"), ("RGBA", "PNG"), ("RGB", "JPEG")])
def test_open_crop_gives_rgb(mode, fmt):
    buffer = io.BytesIO()
    Image.new(mode, (8, 6)).save(buffer, fmt)
    image = open_crop(buffer.getvalue())
    assert image.mode == "RGB" and image.size == (8, 6)
    if mode == "RGBA":  # transparent pixels composited on white
        assert image.getpixel((0, 0)) == (255, 255, 255)
