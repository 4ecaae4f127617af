"""Stage 2, detect: person boxes from a pluggable detector, kept by the rules of docs/method.md section 9.2, and cropped.

Backends (any callable ``list[PIL.Image] -> list[list[Detection]]`` works):

- :class:`TransformersDetector` (default): any transformers object-detection model through
  ``AutoModelForObjectDetection`` / ``AutoImageProcessor`` (e.g. ``PekingU/rtdetr_r50vd_coco_o365``,
  ``facebook/detr-resnet-50``).
- :class:`UltralyticsDetector` (optional): ultralytics YOLO11 (``pip install ultralytics``; AGPL-3.0,
  which binds what you distribute with it), as the paper uses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

import pyarrow as pa
from PIL import Image

from gadms_utils.cli_types import non_negative_int

from .images import BadImage, ImageLimits, decode_rgb, encode_jpeg
from .pretrained import load_pretrained, model_name
from .settings import option
from .stage import ShardOutput

__all__ = [
    "CROP_SCHEMA",
    "Detection",
    "DetectionThresholds",
    "Detector",
    "TransformersDetector",
    "UltralyticsDetector",
    "crop_box",
    "make_detect_processor",
    "select_person_boxes",
]


@dataclass(frozen=True)
class Detection:
    """One detected box in pixels of the decoded image: ``(x0, y0, x1, y1)``, score, class name."""

    box: tuple[float, float, float, float]
    score: float
    label: str


@dataclass(frozen=True)
class DetectionThresholds:
    """Which boxes become crops (docs/method.md section 9.2; every value configurable).

    Attributes:
        min_short_side: the box's shorter side must be above this (pixels, after clipping to the image).
        min_aspect, max_aspect: width / height must lie in ``[min_aspect, max_aspect]`` (1/4 .. 1/2).
        min_score: the confidence must be above this.
        labels: class names that count as a person (matched case-insensitively).
        max_per_image: keep at most this many boxes per image (highest scores first); 0: no limit.
    """

    min_short_side: float = option(90.0, "box shorter side must be above (px)", float)
    min_aspect: float = option(0.25, "lowest width/height", float)
    max_aspect: float = option(0.5, "highest width/height", float)
    min_score: float = option(0.85, "confidence must be above", float)
    labels: tuple[str, ...] = option(("person",), "class names that count as persons", str, nargs="+")
    max_per_image: int = option(0, "boxes kept per image (0: all)", non_negative_int)

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", tuple(self.labels))
        if not 0 < self.min_aspect <= self.max_aspect:
            raise ValueError(f"need 0 < min_aspect <= max_aspect, got {self.min_aspect}, {self.max_aspect}")


def box_reason(detection: Detection, size: tuple[int, int], thresholds: DetectionThresholds) -> str | None:
    """Why ``detection`` is not kept (``not_person``, ``low_score``, ``small_box``, ``bad_aspect``,
    ``degenerate_box``), or ``None`` when it is. ``size`` is the image's ``(width, height)``."""
    if detection.label.lower() not in {label.lower() for label in thresholds.labels}:
        return "not_person"
    if not detection.score > thresholds.min_score:
        return "low_score"
    x0, y0, x1, y1 = _clip(detection.box, size)
    width, height = x1 - x0, y1 - y0
    if width <= 0 or height <= 0 or not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        return "degenerate_box"
    if not min(width, height) > thresholds.min_short_side:
        return "small_box"
    if not thresholds.min_aspect <= width / height <= thresholds.max_aspect:
        return "bad_aspect"
    return None


def _clip(box: Sequence[float], size: tuple[int, int]) -> tuple[float, float, float, float]:
    width, height = size
    x0, y0, x1, y1 = (float(v) for v in box)
    return max(0.0, x0), max(0.0, y0), min(float(width), x1), min(float(height), y1)


def select_person_boxes(
    detections: Sequence[Detection], size: tuple[int, int], thresholds: DetectionThresholds
) -> tuple[list[Detection], list[tuple[Detection, str]]]:
    """Split ``detections`` into kept boxes (highest score first) and ``(detection, reason)`` pairs."""
    kept, rejected = [], []
    for detection in sorted(detections, key=lambda d: -d.score):
        reason = box_reason(detection, size, thresholds)
        if reason is None and thresholds.max_per_image and len(kept) >= thresholds.max_per_image:
            reason = "over_max_per_image"
        if reason is None:
            kept.append(detection)
        else:
            rejected.append((detection, reason))
    return kept, rejected


def crop_box(image: Image.Image, box: Sequence[float]) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """Crop ``box`` (clipped to the image, rounded outwards to whole pixels); returns the crop and
    the integer box."""
    x0, y0, x1, y1 = _clip(box, image.size)
    pixels = (int(math.floor(x0)), int(math.floor(y0)), int(math.ceil(x1)), int(math.ceil(y1)))
    return image.crop(pixels), pixels


class Detector(Protocol):
    """A person detector: pictures in, detections per picture out."""

    name: str

    def __call__(self, images: list[Image.Image]) -> list[list[Detection]]: ...


class TransformersDetector:
    """A transformers object-detection model (``AutoModelForObjectDetection``) as a :class:`Detector`.

    Args:
        model: a model id or folder, or a loaded model.
        processor: its image processor (loaded with ``AutoImageProcessor`` from ``model`` when omitted).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; ``dtype``: e.g. ``torch.float16`` on GPU.
        score_floor: boxes below this score are dropped silently by post-processing (the others are
            kept or rejected with a reason by :func:`select_person_boxes`).
        batch_size: pictures per forward pass.
    """

    def __init__(
        self,
        model: Any,
        processor: Any = None,
        *,
        device: str = "cpu",
        dtype: Any = None,
        score_floor: float = 0.3,
        batch_size: int = 16,
    ) -> None:
        import torch
        from transformers import AutoImageProcessor, AutoModelForObjectDetection

        self.name = model_name(model)
        self.model, self.processor = load_pretrained(
            model,
            processor,
            AutoModelForObjectDetection,
            AutoImageProcessor,
            what="image processor",
            device=device,
            dtype=dtype,
        )
        self.device = device
        self.score_floor = score_floor
        self.batch_size = batch_size
        self._torch = torch

    def __call__(self, images: list[Image.Image]) -> list[list[Detection]]:
        out: list[list[Detection]] = []
        id2label = self.model.config.id2label
        for start in range(0, len(images), self.batch_size):
            batch = images[start:start + self.batch_size]
            inputs = self.processor(images=batch, return_tensors="pt").to(self.device)
            if "pixel_values" in inputs and self.model.dtype != inputs["pixel_values"].dtype:
                inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
            with self._torch.inference_mode():
                outputs = self.model(**inputs)
            results = self.processor.post_process_object_detection(
                outputs, threshold=self.score_floor, target_sizes=[(im.height, im.width) for im in batch]
            )
            for result in results:
                out.append(
                    [
                        Detection(tuple(float(v) for v in box), float(score), str(id2label[int(label)]))
                        for box, score, label in zip(
                            result["boxes"].tolist(), result["scores"].tolist(), result["labels"].tolist()
                        )
                    ]
                )
        return out


class UltralyticsDetector:
    """ultralytics YOLO (e.g. ``yolo11x.pt``, as in the paper) as a :class:`Detector`.

    Optional extra: ``pip install ultralytics`` (AGPL-3.0 licence). Only persons (COCO class 0) are
    asked for.
    """

    def __init__(
        self,
        weights: str = "yolo11x.pt",
        *,
        device: str | None = None,
        score_floor: float = 0.3,
        batch_size: int = 32,
    ) -> None:
        try:
            from ultralytics import YOLO
        except ImportError:
            raise ImportError("the ultralytics detector needs `pip install ultralytics` (AGPL-3.0)") from None
        self.name = weights
        self.model = YOLO(weights)
        self.device = device
        self.score_floor = score_floor
        self.batch_size = batch_size

    def __call__(self, images: list[Image.Image]) -> list[list[Detection]]:
        results = self.model.predict(
            images,
            conf=self.score_floor,
            classes=[0],
            device=self.device,
            batch=self.batch_size,
            verbose=False,
        )
        out = []
        for result in results:
            names = result.names
            out.append(
                [
                    Detection(tuple(float(v) for v in box), float(score), str(names[int(cls)]))
                    for box, score, cls in zip(
                        result.boxes.xyxy.tolist(), result.boxes.conf.tolist(), result.boxes.cls.tolist()
                    )
                ]
            )
        return out


CROP_SCHEMA = pa.schema(
    [
        ("crop_id", pa.string()),
        ("source_id", pa.string()),
        ("source_key", pa.string()),
        ("source_url", pa.string()),
        ("box", pa.list_(pa.int32(), 4)),
        ("det_score", pa.float32()),
        ("crop", pa.binary()),
        ("crop_width", pa.int32()),
        ("crop_height", pa.int32()),
    ]
)


def make_detect_processor(
    detector: Callable[[list[Image.Image]], list[list[Detection]]],
    thresholds: DetectionThresholds,
    *,
    jpeg_quality: int = 95,
    limits: ImageLimits = ImageLimits(),
    batch_size: int = 16,
) -> Callable[[str, pa.Table], ShardOutput]:
    """The shard function of the detect stage: decode, detect in batches, select, crop, encode."""

    def process(name: str, table: pa.Table) -> ShardOutput:
        rows: dict[str, list[Any]] = {n: [] for n in CROP_SCHEMA.names}
        rejects: list[dict[str, Any]] = []
        extra = {"boxes_seen": 0, "images_with_person": 0}
        data = table.to_pydict()
        n = table.num_rows
        for start in range(0, n, batch_size):
            indices, images = [], []
            for i in range(start, min(n, start + batch_size)):
                try:
                    image, _ = decode_rgb(data["image"][i], limits)
                except BadImage as error:  # ingest validated it: only a changed limit gets here
                    rejects.append(
                        {"id": data["source_id"][i], "reason": error.reason, "detail": error.detail}
                    )
                    continue
                indices.append(i)
                images.append(image)
            if not images:
                continue
            try:
                detections = detector(images)
            except Exception as error:
                if _is_interrupt(error):
                    raise
                for i in indices:
                    rejects.append(
                        {
                            "id": data["source_id"][i],
                            "reason": "detector_error",
                            "detail": f"{type(error).__name__}: {error}",
                        }
                    )
                continue
            for i, image, found in zip(indices, images, detections):
                kept, rejected = select_person_boxes(found, image.size, thresholds)
                extra["boxes_seen"] += len(found)
                for detection, reason in rejected:
                    rejects.append(
                        {
                            "id": data["source_id"][i],
                            "reason": reason,
                            "detail": f"box={[round(v, 1) for v in detection.box]} "
                            f"score={detection.score:.3f} label={detection.label}",
                        }
                    )
                if not kept:
                    rejects.append({"id": data["source_id"][i], "reason": "no_person_kept", "detail": ""})
                    continue
                extra["images_with_person"] += 1
                for k, detection in enumerate(kept):
                    crop, box = crop_box(image, detection.box)
                    for column, value in (
                        ("crop_id", f"{data['source_id'][i]}-{k:02d}"),
                        ("source_id", data["source_id"][i]),
                        ("source_key", data["source_key"][i]),
                        ("source_url", data["source_url"][i]),
                        ("box", list(box)),
                        ("det_score", detection.score),
                        ("crop", encode_jpeg(crop, jpeg_quality)),
                        ("crop_width", crop.width),
                        ("crop_height", crop.height),
                    ):
                        rows[column].append(value)
        return ShardOutput(pa.table(rows, schema=CROP_SCHEMA), rejects, n, extra)

    return process


def _is_interrupt(error: BaseException) -> bool:
    return isinstance(error, (KeyboardInterrupt, SystemExit, MemoryError))
