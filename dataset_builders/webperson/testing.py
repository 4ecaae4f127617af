"""Offline stand-ins for tests, benchmarks and demos: tiny randomly initialised models of each default
backend's real class (built from configs, nothing downloaded), instant fake backends, and a generated
image pool (synthetic persons pasted on backgrounds, distractors and broken files).

Random tiny models do not find real persons: run them with permissive thresholds (see
:data:`PERMISSIVE_DETECTION`, :data:`PERMISSIVE_POSE`).
"""

from __future__ import annotations

import io
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .detection import Detection, DetectionThresholds
from .images import encode_jpeg
from .pose import PoseThresholds
from .vlm import CaptionResult

__all__ = [
    "InstantCaptioner",
    "InstantDetector",
    "InstantPose",
    "PERMISSIVE_DETECTION",
    "PERMISSIVE_POSE",
    "tiny_clip_text",
    "tiny_detector",
    "tiny_llm",
    "tiny_pose",
    "tiny_vlm",
    "write_test_pool",
]

#: Thresholds under which a random tiny detector's boxes are kept (at most 2 per image).
PERMISSIVE_DETECTION = DetectionThresholds(
    min_short_side=1.0, min_aspect=0.01, max_aspect=100.0, min_score=0.0, max_per_image=2
)
#: Every keypoint of a random tiny pose model counts as visible.
PERMISSIVE_POSE = PoseThresholds(visibility=0.0)

CAPTION_WORDS = (
    "a man woman person young with and in wearing carrying black white red blue green gray brown "
    "jacket shirt coat dress skirt pants jeans shorts shoes boots sneakers backpack bag hat glasses "
    "he she his her walking standing long short hair"
).split()


def tiny_detector(seed: int = 0):
    """An RT-DETR (``RTDetrForObjectDetection``) with a tiny random config, labels ``person``/``car``,
    and its ``RTDetrImageProcessor`` (128 x 128 input)."""
    import torch
    from transformers import RTDetrConfig, RTDetrForObjectDetection, RTDetrImageProcessor, RTDetrResNetConfig

    torch.manual_seed(seed)
    backbone = RTDetrResNetConfig(
        embedding_size=8,
        hidden_sizes=[8, 8, 16, 16],
        depths=[1, 1, 1, 1],
        layer_type="basic",
        out_features=["stage2", "stage3", "stage4"],
    )
    config = RTDetrConfig(
        backbone_config=backbone,
        encoder_hidden_dim=16,
        encoder_in_channels=[8, 16, 16],
        d_model=16,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        decoder_layers=1,
        encoder_layers=1,
        num_queries=10,
        num_labels=2,
        id2label={0: "person", 1: "car"},
        label2id={"person": 0, "car": 1},
        decoder_n_points=2,
        num_feature_levels=3,
        decoder_in_channels=[16, 16, 16],
        num_denoising=0,
        anchor_image_size=None,
    )
    model = RTDetrForObjectDetection(config).eval()
    return model, RTDetrImageProcessor(size={"height": 128, "width": 128})


def tiny_pose(seed: int = 0):
    """A ViTPose (``VitPoseForPoseEstimation``, 17 keypoints) with a tiny random config and its
    ``VitPoseImageProcessor`` (64 x 48 input)."""
    import torch
    from transformers import (
        VitPoseBackboneConfig,
        VitPoseConfig,
        VitPoseForPoseEstimation,
        VitPoseImageProcessor,
    )

    torch.manual_seed(seed)
    backbone = VitPoseBackboneConfig(
        image_size=[64, 48],
        patch_size=[16, 16],
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        out_indices=[1],
    )
    model = VitPoseForPoseEstimation(VitPoseConfig(backbone_config=backbone, num_labels=17)).eval()
    return model, VitPoseImageProcessor(size={"height": 64, "width": 48})


_CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }} : {% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<image> {% else %}{{ c['text'] }} {% endif %}{% endfor %}{% endfor %}"
    "{% if add_generation_prompt %}assistant : {% endif %}"
)


def _word_tokenizer(words: list[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    special = ["<pad>", "<s>", "</s>", "<unk>", "<image>"]
    vocab = {token: i for i, token in enumerate(special + sorted(set(words)) + ["user", "assistant", ":"])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.decoder = decoders.WordPiece(prefix="##")  # joins tokens with spaces
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"},
    )
    tokenizer.padding_side = "left"
    return tokenizer


def _tiny_llama_config(vocab_size: int):
    """The tiny Llama of :func:`tiny_vlm` (its text model) and of :func:`tiny_llm`; the special token
    ids are those of :func:`_word_tokenizer`."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=1024,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )


def tiny_vlm(seed: int = 0):
    """A LLaVA (``LlavaForConditionalGeneration``: CLIP vision tower + Llama) with a tiny random
    config, a word-level tokenizer over caption words, and a ``LlavaProcessor`` with a chat template;
    it loads back through ``AutoModelForImageTextToText`` / ``AutoProcessor`` after ``save_pretrained``."""
    import torch
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    torch.manual_seed(seed)
    tokenizer = _word_tokenizer(list(CAPTION_WORDS))
    vision = CLIPVisionConfig(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=32,
        patch_size=16,
    )
    text = _tiny_llama_config(len(tokenizer))
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )
    model = LlavaForConditionalGeneration(config).eval()
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        tokenizer=tokenizer,
        patch_size=16,
        vision_feature_select_strategy="default",
        chat_template=_CHAT_TEMPLATE,
        num_additional_image_tokens=1,
    )
    return model, processor


def tiny_llm(seed: int = 0):
    """A Llama (``LlamaForCausalLM``) with a tiny random config and a word-level tokenizer with a chat
    template (for the template-extraction LLM)."""
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    tokenizer = _word_tokenizer(list(CAPTION_WORDS) + ["[He/She]", "[colored top]", "wears"])
    tokenizer.chat_template = (
        "{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} {% endfor %}"
        "{% if add_generation_prompt %}assistant : {% endif %}"
    )
    config = _tiny_llama_config(len(tokenizer))
    return LlamaForCausalLM(config).eval(), tokenizer


def tiny_clip_text(words: list[str], seed: int = 0):
    """A ``CLIPTextModelWithProjection`` with a tiny random config and a CLIP-format BPE tokenizer over
    ``words`` (``modeling_gadms.tokenization.build_tokenizer``)."""
    import torch
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    from modeling_gadms.tokenization import build_tokenizer, merges_for_words

    torch.manual_seed(seed)
    tokenizer = build_tokenizer(merges_for_words(words))
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        projection_dim=16,
        max_position_embeddings=77,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=1,
    )
    return CLIPTextModelWithProjection(config).eval(), tokenizer


class InstantDetector:
    """A detector that costs nothing: one person box per image, centred, 3/8 as wide as high, score 0.99
    (``None`` for images smaller than 120 px high: no person)."""

    name = "instant-detector"

    def __call__(self, images: list[Image.Image]) -> list[list[Detection]]:
        out = []
        for image in images:
            height = image.height * 0.8
            if height < 120:
                out.append([])
                continue
            width = height * 0.375
            x0, y0 = (image.width - width) / 2, image.height * 0.1
            out.append([Detection((x0, y0, x0 + width, y0 + height), 0.99, "person")])
        return out


class InstantPose:
    """A pose model that costs nothing: every keypoint visible (score 0.9)."""

    name = "instant-pose"

    def __call__(self, crops: list[Image.Image]) -> list[np.ndarray]:
        pose = np.zeros((17, 3), dtype=np.float32)
        pose[:, 2] = 0.9
        return [pose for _ in crops]


class InstantCaptioner:
    """A captioner that costs nothing: a fixed valid caption with the crop's byte length and the seed,
    so both captions of a crop differ and reruns give the same text."""

    def __init__(self, name: str = "instant-captioner") -> None:
        self.name = name

    def caption(self, crops: list[bytes], prompts: list[str], seeds: list[int]) -> list[CaptionResult]:
        return [
            CaptionResult(
                text=f"A person wearing a blue jacket, black pants and white shoes, "
                f"carrying bag {len(c)} number {s}."
            )
            for c, s in zip(crops, seeds)
        ]


def _background(rng: random.Random, size: tuple[int, int]) -> Image.Image:
    width, height = size
    top = np.array([rng.randrange(256) for _ in range(3)], dtype=np.float32)
    bottom = np.array([rng.randrange(256) for _ in range(3)], dtype=np.float32)
    ramp = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    pixels = (
        top * (1 - ramp)
        + bottom * ramp
        + np.random.default_rng(rng.randrange(2**32)).normal(0, 8, (height, width, 3))
    )
    return Image.fromarray(np.clip(np.broadcast_to(pixels, (height, width, 3)), 0, 255).astype(np.uint8))


def write_test_pool(
    folder: str | Path,
    *,
    persons: int = 12,
    distractors: int = 4,
    broken: bool = True,
    seed: int = 0,
    person_size: tuple[int, int] = (256, 96),
) -> dict[str, Any]:
    """Write a small source pool into ``folder`` and return what is in it.

    - ``scene_NNN.jpg``: one synthetic person (``person_size`` = height x width, from
      ``dataset_builders.synthetic``) pasted on a 320 x 480 background; its box is in the returned
      ``boxes`` (``{file: [x0, y0, x1, y1]}``);
    - ``distractor_NNN.jpg``: backgrounds without a person;
    - with ``broken``: ``zero.jpg`` (0 bytes), ``truncated.jpg``, ``not_an_image.jpg``, ``tiny.png``
      (40 x 30), ``huge.png`` (3000 x 2500: rejected with ``max_pixels`` below 7.5 M), ``cmyk.jpg`` and
      ``alpha.png`` (a person, in CMYK and RGBA: converted, kept), ``dup.jpg`` (a copy of scene 0).

    Returns ``{"boxes": {...}, "expected": {reason: count}}`` with the rejection reasons the ingest
    stage should give (``max_pixels=5_000_000``, header checks), and ``"expected_detect"``: those the
    detect stage adds (``truncated``: found when the pixels are decoded).
    """
    from ..synthetic import SyntheticPersonConfig, generate_records

    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    config = SyntheticPersonConfig(
        num_identities=max(2, persons),
        images_per_identity=1,
        image_size=person_size,
        seed=seed,
        noise_rate=0.0,
        split_fractions=(1.0, 0.0, 0.0),
    )
    boxes: dict[str, list[int]] = {}
    records = list(generate_records(config))[:persons]
    scenes = []
    for k, record in enumerate(records):
        scene = _background(rng, (480, 320))
        x0, y0 = rng.randrange(0, 480 - person_size[1]), rng.randrange(0, 320 - person_size[0] + 1)
        scene.paste(record["image"], (x0, y0))
        name = f"scene_{k:03d}.jpg"
        (root / name).write_bytes(encode_jpeg(scene, 90))
        boxes[name] = [x0, y0, x0 + person_size[1], y0 + person_size[0]]
        scenes.append(scene)
    for k in range(distractors):
        (root / f"distractor_{k:03d}.jpg").write_bytes(encode_jpeg(_background(rng, (400, 300)), 90))
    expected: dict[str, int] = {}
    if broken and scenes:
        (root / "zero.jpg").write_bytes(b"")
        full = encode_jpeg(scenes[0].rotate(180), 90)
        (root / "truncated.jpg").write_bytes(full[: len(full) // 2])
        (root / "not_an_image.jpg").write_bytes(b"<html>404 not found</html>")
        Image.new("RGB", (40, 30), "red").save(root / "tiny.png")
        Image.new("RGB", (3000, 2500), "gray").save(root / "huge.png", optimize=False, compress_level=1)
        cmyk = io.BytesIO()
        scenes[-1].transpose(Image.Transpose.FLIP_LEFT_RIGHT).convert("CMYK").save(
            cmyk, format="JPEG", quality=90
        )
        (root / "cmyk.jpg").write_bytes(cmyk.getvalue())
        alpha = scenes[-1].transpose(Image.Transpose.FLIP_TOP_BOTTOM).convert("RGBA")
        alpha.putalpha(200)
        alpha.save(root / "alpha.png")
        (root / "dup.jpg").write_bytes((root / "scene_000.jpg").read_bytes())
        expected = {"empty": 1, "undecodable": 1, "too_small": 1, "too_large": 1, "duplicate": 1}
    info = {"boxes": boxes, "expected": expected, "expected_detect": {"truncated": 1} if expected else {}}
    (root / "pool.json").write_text(json.dumps(info, indent=1))
    return info
