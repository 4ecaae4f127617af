"""Backend specs of the command line: ``KIND=MODEL[,key=value,...]`` strings -> backend objects.

Examples::

    transformers=PekingU/rtdetr_r50vd_coco_o365,device=cuda,dtype=float16,batch_size=32
    ultralytics=yolo11x.pt,device=0
    transformers=usyd-community/vitpose-base-simple,device=cuda
    openai=Qwen/Qwen2.5-VL-7B-Instruct,base_url=http://localhost:8000/v1,concurrency=64,timeout=120,retries=3
    vllm=Qwen/Qwen2.5-VL-32B-Instruct,tensor_parallel_size=2,max_model_len=4096
    clip=laion/CLIP-ViT-bigG-14-laion2B-39B-b160k
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

__all__ = [
    "BackendSpec",
    "check_kind",
    "make_captioner",
    "make_detector",
    "make_embedder",
    "make_llm",
    "make_pose",
    "parse_spec",
]


@dataclass(frozen=True)
class BackendSpec:
    """A parsed spec: the backend kind, the model and the options."""

    kind: str
    model: str
    options: dict[str, Any]

    def describe(self) -> str:
        options = ",".join(f"{k}={v}" for k, v in sorted(self.options.items()) if k not in ("api_key",))
        return f"{self.kind}={self.model}" + (f",{options}" if options else "")


def _value(text: str) -> Any:
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_spec(text: str, what: str) -> BackendSpec:
    """Parse ``KIND=MODEL[,key=value...]``; ``what`` names the argument in errors (``--detector``)."""
    head, *rest = [part.strip() for part in text.split(",")]
    kind, sep, model = head.partition("=")
    if not sep or not kind or not model:
        raise ValueError(f"{what}: expected KIND=MODEL[,key=value...], got {text!r}")
    options = {}
    for part in rest:
        key, sep, value = part.partition("=")
        if not sep or not key:
            raise ValueError(f"{what}: option {part!r} of {text!r} is not key=value")
        options[key.strip()] = _value(value.strip())
    return BackendSpec(kind.strip().lower(), model, options)


def _dtype(options: dict[str, Any]) -> None:
    if "dtype" in options:
        import torch

        name = str(options["dtype"])
        if not hasattr(torch, name):
            raise ValueError(f"unknown dtype {name!r} (use float32, float16 or bfloat16)")
        options["dtype"] = getattr(torch, name)


def _unknown(spec: BackendSpec, what: str, kinds: tuple[str, ...]) -> ValueError:
    return ValueError(f"{what}: unknown backend {spec.kind!r}; use one of {', '.join(kinds)}")


#: The backend kinds of each option.
KINDS = {
    "--detector": ("transformers", "ultralytics"),
    "--pose-model": ("transformers", "ultralytics"),
    "--captioner": ("transformers", "vllm", "openai"),
    "--llm": ("openai", "transformers"),
    "--embedder": ("clip", "sentence-transformers", "st"),
}


def check_kind(spec: BackendSpec, what: str) -> None:
    """Raise the error of an unknown backend kind for option ``what`` now, before the backend is made
    (perhaps later, in a Ray actor)."""
    if spec.kind not in KINDS[what]:
        raise _unknown(spec, what, tuple(k for k in KINDS[what] if k != "st"))


def make_detector(spec: BackendSpec) -> Any:
    """A detector for ``--detector``."""
    options = dict(spec.options)
    if spec.kind == "transformers":
        from .detection import TransformersDetector

        _dtype(options)
        return TransformersDetector(spec.model, **options)
    if spec.kind == "ultralytics":
        from .detection import UltralyticsDetector

        return UltralyticsDetector(spec.model, **options)
    raise _unknown(spec, "--detector", ("transformers", "ultralytics"))


def make_pose(spec: BackendSpec) -> Any:
    """A pose estimator for ``--pose-model``."""
    options = dict(spec.options)
    if spec.kind == "transformers":
        from .pose import TransformersPoseEstimator

        _dtype(options)
        return TransformersPoseEstimator(spec.model, **options)
    if spec.kind == "ultralytics":
        from .pose import UltralyticsPoseEstimator

        return UltralyticsPoseEstimator(spec.model, **options)
    raise _unknown(spec, "--pose-model", ("transformers", "ultralytics"))


def _client(spec: BackendSpec, options: dict[str, Any], what: str):
    from .openai_client import OpenAIChatClient

    if "base_url" not in options:
        raise ValueError(f"{what}: the openai backend needs base_url=http://HOST:PORT/v1")
    api_key = options.pop("api_key", None)
    key_env = options.pop("api_key_env", None)
    if key_env:
        api_key = os.environ.get(str(key_env))
        if api_key is None:
            raise ValueError(f"{what}: environment variable {key_env} (api_key_env) is not set")
    return OpenAIChatClient(
        str(options.pop("base_url")),
        spec.model,
        api_key=api_key,
        timeout=float(options.pop("timeout", 120.0)),
        max_retries=int(options.pop("retries", 3)),
        backoff=float(options.pop("backoff", 1.0)),
        concurrency=int(options.pop("concurrency", 16)),
    )


def make_captioner(spec: BackendSpec) -> Any:
    """A captioner for ``--captioner``."""
    options = dict(spec.options)
    if spec.kind == "transformers":
        from .vlm import TransformersCaptioner

        _dtype(options)
        return TransformersCaptioner(spec.model, **options)
    if spec.kind == "vllm":
        from .vlm import VLLMCaptioner

        return VLLMCaptioner(spec.model, **options)
    if spec.kind == "openai":
        from .vlm import OpenAICaptioner

        client = _client(spec, options, "--captioner")
        return OpenAICaptioner(client, **options)
    raise _unknown(spec, "--captioner", ("transformers", "vllm", "openai"))


def make_llm(spec: BackendSpec) -> Any:
    """A ``generate(prompts)`` callable for ``--llm`` (template extraction)."""
    options = dict(spec.options)
    if spec.kind == "openai":
        from .template_mining import endpoint_generator

        client = _client(spec, options, "--llm")
        return endpoint_generator(client, **options)
    if spec.kind == "transformers":
        from .vlm import TransformersTextGenerator

        _dtype(options)
        return TransformersTextGenerator(spec.model, **options).generate
    raise _unknown(spec, "--llm", ("openai", "transformers"))


def make_embedder(spec: BackendSpec) -> Any:
    """A text embedder for ``--embedder``."""
    options = dict(spec.options)
    if spec.kind == "clip":
        from .template_mining import CLIPTextEmbedder

        return CLIPTextEmbedder(spec.model, **options)
    if spec.kind in ("sentence-transformers", "st"):
        from .template_mining import SentenceTransformerEmbedder

        return SentenceTransformerEmbedder(spec.model, **options)
    raise _unknown(spec, "--embedder", ("clip", "sentence-transformers"))
