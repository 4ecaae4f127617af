"""Stage 3, pose check: COCO-17 keypoints of each crop from a pluggable pose model; crops with too
few visible body parts are dropped (docs/method.md section 9.3).

Backends (any callable ``list[PIL.Image] -> list[np.ndarray of shape (17, 3)]`` of ``x, y, score``
works):

- :class:`TransformersPoseEstimator` (default): ViTPose through ``AutoModelForPoseEstimation``
  (e.g. ``usyd-community/vitpose-base-simple``), the whole crop as the person box.
- :class:`UltralyticsPoseEstimator` (optional): ultralytics YOLO11-pose (``pip install ultralytics``,
  AGPL-3.0), as in the paper.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol

import numpy as np
import pyarrow as pa
from PIL import Image

from gadms_utils.cli_types import non_negative_int

from .detection import CROP_SCHEMA
from .images import open_crop
from .pretrained import load_pretrained, model_name
from .settings import option
from .stage import ShardOutput

__all__ = [
    "COCO_KEYPOINTS",
    "POSE_SCHEMA",
    "PoseEstimator",
    "PoseThresholds",
    "TransformersPoseEstimator",
    "UltralyticsPoseEstimator",
    "make_pose_processor",
    "pose_reason",
]

#: COCO-17 keypoint names, in index order (0-4: head, 11-12: hips).
COCO_KEYPOINTS = (
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)
HEAD = (0, 1, 2, 3, 4)
HIPS = (11, 12)


@dataclass(frozen=True)
class PoseThresholds:
    """Pose integrity rules (docs/method.md section 9.3; the visibility threshold is ours, the paper gives none).

    Attributes:
        visibility: a keypoint is visible when its score is at least this.
        min_visible: at least this many visible keypoints (of 17).
        min_hips: at least this many visible hips (11, 12).
        min_head: at least this many visible head points (0-4).
    """

    visibility: float = option(0.5, "keypoint score at which it counts as visible", float)
    min_visible: int = option(8, "visible keypoints needed (of 17)", non_negative_int)
    min_hips: int = option(1, "visible hips (11, 12) needed", non_negative_int)
    min_head: int = option(2, "visible head points (0-4) needed", non_negative_int)


def pose_reason(scores: Any, thresholds: PoseThresholds) -> tuple[str | None, int]:
    """Check 17 keypoint scores; return ``(reason, visible)`` where reason is ``None`` (kept),
    ``few_keypoints``, ``no_hip`` or ``few_head_points`` (checked in that order) and ``visible`` the
    number of visible keypoints."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if scores.shape[0] != 17:
        raise ValueError(f"expected 17 COCO keypoint scores, got {scores.shape[0]}")
    visible = scores >= thresholds.visibility
    count = int(visible.sum())
    if count < thresholds.min_visible:
        return "few_keypoints", count
    if int(visible[list(HIPS)].sum()) < thresholds.min_hips:
        return "no_hip", count
    if int(visible[list(HEAD)].sum()) < thresholds.min_head:
        return "few_head_points", count
    return None, count


class PoseEstimator(Protocol):
    """Crops in, one ``(17, 3)`` array of ``x, y, score`` per crop out."""

    name: str

    def __call__(self, crops: list[Image.Image]) -> list[np.ndarray]: ...


class TransformersPoseEstimator:
    """ViTPose (or another ``AutoModelForPoseEstimation`` model) on whole crops.

    Args:
        model: a model id or folder, or a loaded model; ``processor``: its image processor.
        device, dtype, batch_size: where and how to run.
    """

    def __init__(
        self,
        model: Any,
        processor: Any = None,
        *,
        device: str = "cpu",
        dtype: Any = None,
        batch_size: int = 32,
    ) -> None:
        import torch
        from transformers import AutoImageProcessor, AutoModelForPoseEstimation

        self.name = model_name(model)
        self.model, self.processor = load_pretrained(
            model,
            processor,
            AutoModelForPoseEstimation,
            AutoImageProcessor,
            what="image processor",
            device=device,
            dtype=dtype,
        )
        self.device = device
        self.batch_size = batch_size
        self._torch = torch

    def __call__(self, crops: list[Image.Image]) -> list[np.ndarray]:
        out: list[np.ndarray] = []
        for start in range(0, len(crops), self.batch_size):
            batch = crops[start:start + self.batch_size]
            boxes = [[[0.0, 0.0, float(c.width), float(c.height)]] for c in batch]  # COCO x, y, w, h
            inputs = self.processor(images=batch, boxes=boxes, return_tensors="pt").to(self.device)
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
            with self._torch.inference_mode():
                outputs = self.model(**inputs)
            results = self.processor.post_process_pose_estimation(outputs, boxes=boxes)
            for per_image in results:
                person = per_image[0]
                keypoints = person["keypoints"].float().cpu().numpy()
                scores = person["scores"].float().cpu().numpy()
                out.append(np.concatenate([keypoints, scores[:, None]], axis=1))
        return out


class UltralyticsPoseEstimator:
    """ultralytics YOLO11-pose (e.g. ``yolo11x-pose.pt``) on whole crops; the most confident person
    of each crop counts (no person: all scores 0). Optional extra, AGPL-3.0."""

    def __init__(
        self, weights: str = "yolo11x-pose.pt", *, device: str | None = None, batch_size: int = 32
    ) -> None:
        try:
            from ultralytics import YOLO
        except ImportError:
            raise ImportError(
                "the ultralytics pose model needs `pip install ultralytics` (AGPL-3.0)"
            ) from None
        self.name = weights
        self.model = YOLO(weights)
        self.device = device
        self.batch_size = batch_size

    def __call__(self, crops: list[Image.Image]) -> list[np.ndarray]:
        results = self.model.predict(crops, device=self.device, batch=self.batch_size, verbose=False)
        out = []
        for result in results:
            if result.keypoints is None or len(result.boxes) == 0:
                out.append(np.zeros((17, 3), dtype=np.float32))
                continue
            best = int(result.boxes.conf.argmax())
            out.append(result.keypoints.data[best].cpu().numpy().astype(np.float32))
        return out


POSE_SCHEMA = pa.schema(
    list(CROP_SCHEMA)
    + [
        pa.field("keypoints", pa.list_(pa.list_(pa.float32(), 3), 17)),
        pa.field("num_keypoints", pa.int32()),
    ]
)


def make_pose_processor(
    estimator: Callable[[list[Image.Image]], list[np.ndarray]],
    thresholds: PoseThresholds,
    *,
    batch_size: int = 32,
) -> Callable[[str, pa.Table], ShardOutput]:
    """The shard function of the pose stage."""

    def process(name: str, table: pa.Table) -> ShardOutput:
        keep: list[int] = []
        keypoints: list[list[list[float]]] = []
        counts: list[int] = []
        rejects: list[dict[str, Any]] = []
        ids = table.column("crop_id").to_pylist()
        crops_bytes = table.column("crop").to_pylist()
        for start in range(0, table.num_rows, batch_size):
            index, crops = [], []
            for i in range(start, min(table.num_rows, start + batch_size)):
                try:  # the detect stage wrote these crops: only a damaged work file gets past here
                    crops.append(open_crop(crops_bytes[i]))
                except (OSError, ValueError, TypeError, SyntaxError) as error:
                    detail = f"{type(error).__name__}: {error}"
                    rejects.append({"id": ids[i], "reason": "undecodable", "detail": detail})
                    continue
                index.append(i)
            if not crops:
                continue
            try:
                poses = estimator(crops)
            except MemoryError:  # as in the detect stage: out of memory stops the run (it resumes), no reject
                raise
            except Exception as error:
                for i in index:
                    rejects.append(
                        {"id": ids[i], "reason": "pose_error", "detail": f"{type(error).__name__}: {error}"}
                    )
                continue
            for i, pose in zip(index, poses):
                pose = np.asarray(pose, dtype=np.float32).reshape(17, 3)
                reason, visible = pose_reason(pose[:, 2], thresholds)
                if reason is not None:
                    rejects.append({"id": ids[i], "reason": reason, "detail": f"visible={visible}"})
                    continue
                keep.append(i)
                keypoints.append(pose.tolist())
                counts.append(visible)
        kept = table.take(keep) if keep else table.slice(0, 0)
        kept = kept.append_column(
            POSE_SCHEMA.field("keypoints"), pa.array(keypoints, POSE_SCHEMA.field("keypoints").type)
        )
        kept = kept.append_column(POSE_SCHEMA.field("num_keypoints"), pa.array(counts, pa.int32()))
        return ShardOutput(kept.cast(POSE_SCHEMA), rejects, table.num_rows)

    return process
