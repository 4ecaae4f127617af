"""WebPerson: curate person crops from a web image pool and caption them with vision-language models.

The first open implementation of the WebPerson construction (docs/method.md section 9). A staged, resumable
pipeline over a work directory; every stage reads and writes parquet shards with done markers and a
manifest (see :mod:`.shards`), is idempotent, and takes ``--shard i/n``:

1. ingest (:mod:`.ingest`, :mod:`.sources`): folder, WebDataset tars, parquet, ``datasets``, URL lists;
   content-hash ids; broken, tiny or huge images counted by reason.
2. detect (:mod:`.detection`): person boxes (transformers RT-DETR/DETR, or ultralytics YOLO11), kept
   when shorter side > 90 px, w/h in [1/4, 1/2], confidence > 0.85 (configurable); cropped.
3. pose (:mod:`.pose`): COCO-17 keypoints (ViTPose, or YOLO11-pose); >= 8 visible, >= 1 hip, >= 2 head.
4. templates (:mod:`.template_bank`, :mod:`.template_mining`): a shipped reviewed bank
   (``default_v1``), and tools to extract, embed, cluster and version new banks.
5. caption (:mod:`.captioning`, :mod:`.vlm`, :mod:`.openai_client`): two captions per crop
   (transformers, vLLM offline, or an OpenAI-compatible server).
6. filter (:mod:`.caption_filter`): rules with a recorded reason for every rejection.
7. export / publish (:mod:`.export`, :mod:`.card`, :mod:`.publish`): parquet + card; ``load_dataset``.

Command line: ``python -m dataset_builders.webperson --help``.
"""

from .caption_filter import CaptionFilter, FilterRules, clean_caption
from .captioning import draw_template, make_caption_processor
from .detection import (
    Detection,
    DetectionThresholds,
    TransformersDetector,
    UltralyticsDetector,
    crop_box,
    select_person_boxes,
)
from .export import export, export_features
from .images import BadImage, ImageLimits, content_id, decode_rgb
from .ingest import ingest
from .openai_client import EndpointError, OpenAIChatClient
from .pipeline import run_caption, run_detect, run_filter, run_pose, stage_status
from .pose import PoseThresholds, TransformersPoseEstimator, UltralyticsPoseEstimator, pose_reason
from .prompts import CAPTION_INSTRUCTION, PLACEHOLDERS, TEMPLATE_INSTRUCTION, caption_prompt
from .publish import publish
from .shards import ShardSelection, StageStore, parse_shard
from .sources import (
    SourceItem,
    dataset_source,
    folder_source,
    open_source,
    parquet_source,
    tar_source,
    url_source,
)
from .template_bank import DEFAULT_BANK, Template, TemplateBank, load_bank, save_bank
from .template_mining import CLIPTextEmbedder, extract_templates, select_templates
from .vlm import CaptionResult, OpenAICaptioner, TransformersCaptioner, VLLMCaptioner

__all__ = [
    "BadImage",
    "CAPTION_INSTRUCTION",
    "CLIPTextEmbedder",
    "CaptionFilter",
    "CaptionResult",
    "DEFAULT_BANK",
    "Detection",
    "DetectionThresholds",
    "EndpointError",
    "FilterRules",
    "ImageLimits",
    "OpenAICaptioner",
    "OpenAIChatClient",
    "PLACEHOLDERS",
    "PoseThresholds",
    "ShardSelection",
    "SourceItem",
    "StageStore",
    "TEMPLATE_INSTRUCTION",
    "Template",
    "TemplateBank",
    "TransformersCaptioner",
    "TransformersDetector",
    "TransformersPoseEstimator",
    "UltralyticsDetector",
    "UltralyticsPoseEstimator",
    "VLLMCaptioner",
    "caption_prompt",
    "clean_caption",
    "content_id",
    "crop_box",
    "dataset_source",
    "decode_rgb",
    "draw_template",
    "export",
    "export_features",
    "extract_templates",
    "folder_source",
    "ingest",
    "load_bank",
    "make_caption_processor",
    "open_source",
    "parquet_source",
    "parse_shard",
    "pose_reason",
    "publish",
    "run_caption",
    "run_detect",
    "run_filter",
    "run_pose",
    "save_bank",
    "select_person_boxes",
    "select_templates",
    "stage_status",
    "tar_source",
    "url_source",
]
