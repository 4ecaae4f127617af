"""Vision-language captioners: one crop + one prompt in, one caption out, in batches.

A captioner has a ``name`` (recorded with every caption) and
``caption(crops: list[bytes], prompts: list[str], seeds: list[int]) -> list[CaptionResult]`` where the
crops are JPEG bytes. Backends:

- :class:`TransformersCaptioner`: ``AutoModelForImageTextToText`` + ``AutoProcessor`` (local GPU/CPU),
  batched ``generate`` with the processor's chat template.
- :class:`VLLMCaptioner`: vLLM's offline engine (``pip install vllm``; optional, import-guarded).
- :class:`OpenAICaptioner`: any OpenAI-compatible chat endpoint (``vllm serve``, SGLang, TGI), with
  concurrency, retries and timeouts (:class:`openai_client.OpenAIChatClient`).

Errors of one item (an endpoint failure) come back as a :class:`CaptionResult` with ``error`` set.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, Protocol, Sequence

from .images import open_crop
from .openai_client import EndpointError, OpenAIChatClient
from .pretrained import load_pretrained, model_name

__all__ = [
    "CaptionResult",
    "Captioner",
    "OpenAICaptioner",
    "TransformersCaptioner",
    "VLLMCaptioner",
    "TransformersTextGenerator",
    "image_message",
    "jpeg_data_url",
]


@dataclass(frozen=True)
class CaptionResult:
    """A caption (``text``) or the reason there is none (``error``)."""

    text: str | None = None
    error: str | None = None


class Captioner(Protocol):
    """JPEG crops and prompts in, one :class:`CaptionResult` per crop out (``seeds``: per-item sampling)."""

    name: str

    def caption(self, crops: list[bytes], prompts: list[str], seeds: list[int]) -> list[CaptionResult]: ...


def jpeg_data_url(data: bytes) -> str:
    """A ``data:image/jpeg;base64,...`` URL of JPEG bytes."""
    return "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii")


def image_message(image: Any, prompt: str) -> list[dict[str, Any]]:
    """A one-turn user conversation with an image (a PIL image or an image URL) and a text."""
    part = (
        {"type": "image_url", "image_url": {"url": image}}
        if isinstance(image, str)
        else {"type": "image", "image": image}
    )
    return [{"role": "user", "content": [part, {"type": "text", "text": prompt}]}]


class OpenAICaptioner:
    """Captions through an OpenAI-compatible chat endpoint (the crop is sent as a base64 data URL).

    Args:
        client: the endpoint client (``base_url``, ``model``, timeouts, retries, concurrency).
        temperature, top_p, max_tokens: sampling; ``seeds`` of :meth:`caption` go to the server's
            ``seed`` field (vLLM honours it), so reruns draw the same samples.
    """

    def __init__(
        self,
        client: OpenAIChatClient,
        *,
        temperature: float = 0.7,
        top_p: float = 0.9,
        max_tokens: int = 128,
        name: str | None = None,
    ) -> None:
        self.client = client
        self.params = {"temperature": temperature, "top_p": top_p, "max_tokens": max_tokens}
        self.name = name or f"openai:{client.model}"

    def caption(self, crops: list[bytes], prompts: list[str], seeds: list[int]) -> list[CaptionResult]:
        conversations = [image_message(jpeg_data_url(c), p) for c, p in zip(crops, prompts)]
        params = [{**self.params, "seed": int(s)} for s in seeds]
        out = []
        for answer in self.client.complete_many(conversations, params):
            if isinstance(answer, EndpointError):
                out.append(CaptionResult(error=f"endpoint_{answer.kind}: {answer.detail[:200]}"))
            else:
                out.append(CaptionResult(text=answer))
        return out


class TransformersCaptioner:
    """A transformers image-text-to-text model (e.g. ``Qwen/Qwen2.5-VL-7B-Instruct``) run locally.

    Args:
        model: model id or folder, or a loaded model; ``processor``: its processor (``AutoProcessor``).
        device, dtype: where and in which precision to run (``torch.bfloat16`` on GPU).
        batch_size: crops per ``generate`` call (left padding).
        max_new_tokens, do_sample, temperature, top_p: generation settings; with sampling, each batch
            seeds torch with its first item's seed, so a rerun of a shard reproduces its captions.
    """

    def __init__(
        self,
        model: Any,
        processor: Any = None,
        *,
        device: str = "cpu",
        dtype: Any = None,
        batch_size: int = 8,
        max_new_tokens: int = 96,
        do_sample: bool = False,
        temperature: float = 0.7,
        top_p: float = 0.9,
        name: str | None = None,
    ) -> None:
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        loaded_name = model_name(model)
        self.model, self.processor = load_pretrained(
            model,
            processor,
            AutoModelForImageTextToText,
            AutoProcessor,
            what="processor",
            device=device,
            dtype=dtype,
        )
        tokenizer = getattr(self.processor, "tokenizer", None)
        if tokenizer is not None:
            tokenizer.padding_side = "left"  # decoder-only generation needs left padding
        self.device = device
        self.batch_size = batch_size
        self.generate_kwargs = {"max_new_tokens": max_new_tokens, "do_sample": do_sample}
        if do_sample:
            self.generate_kwargs.update(temperature=temperature, top_p=top_p)
        self.name = name or f"transformers:{loaded_name}"
        self._torch = torch

    def caption(self, crops: list[bytes], prompts: list[str], seeds: list[int]) -> list[CaptionResult]:
        out: list[CaptionResult] = []
        for start in range(0, len(crops), self.batch_size):
            images = [open_crop(c) for c in crops[start:start + self.batch_size]]
            batch_prompts = prompts[start:start + self.batch_size]
            conversations = [image_message(im, p) for im, p in zip(images, batch_prompts)]
            inputs = self.processor.apply_chat_template(
                conversations,
                add_generation_prompt=True,
                tokenize=True,
                return_dict=True,
                return_tensors="pt",
                processor_kwargs={"padding": True},
            ).to(self.device)
            if "pixel_values" in inputs:
                inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
            if self.generate_kwargs["do_sample"]:
                self._torch.manual_seed(int(seeds[start]) % 2**63)
            with self._torch.inference_mode():
                generated = self.model.generate(**inputs, **self.generate_kwargs)
            new_tokens = generated[:, inputs["input_ids"].shape[1]:]
            for text in self.processor.batch_decode(new_tokens, skip_special_tokens=True):
                out.append(CaptionResult(text=text.strip()))
        return out


class VLLMCaptioner:
    """vLLM's offline engine (``vllm.LLM.chat``), for one GPU node without a server.

    Optional extra: ``pip install vllm``. ``engine_args`` go to ``vllm.LLM`` (e.g.
    ``tensor_parallel_size=2``, ``max_model_len=4096``, ``limit_mm_per_prompt={"image": 1}``).
    """

    def __init__(
        self,
        model: str,
        *,
        temperature: float = 0.7,
        top_p: float = 0.9,
        max_tokens: int = 128,
        name: str | None = None,
        **engine_args: Any,
    ) -> None:
        try:
            from vllm import LLM, SamplingParams
        except ImportError:
            raise ImportError(
                "the vllm captioner needs `pip install vllm` (GPU); or serve the model with "
                "`vllm serve` and use the openai backend"
            ) from None
        self.llm = LLM(model=model, **engine_args)
        self._sampling = SamplingParams
        self.params = {"temperature": temperature, "top_p": top_p, "max_tokens": max_tokens}
        self.name = name or f"vllm:{model}"

    def caption(self, crops: list[bytes], prompts: list[str], seeds: list[int]) -> list[CaptionResult]:
        conversations = [image_message(jpeg_data_url(c), p) for c, p in zip(crops, prompts)]
        sampling = [self._sampling(seed=int(s) % 2**31, **self.params) for s in seeds]
        try:
            outputs = self.llm.chat(conversations, sampling_params=sampling, use_tqdm=False)
        except Exception as error:  # an engine failure costs this batch, not the run
            return [CaptionResult(error=f"vllm_error: {type(error).__name__}: {error}") for _ in crops]
        return [CaptionResult(text=o.outputs[0].text.strip()) for o in outputs]


class TransformersTextGenerator:
    """A transformers chat LLM (``AutoModelForCausalLM``) for text-only prompts (template extraction).

    ``generate(prompts) -> list[str]``, greedy by default, batched with left padding.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any = None,
        *,
        device: str = "cpu",
        dtype: Any = None,
        batch_size: int = 8,
        max_new_tokens: int = 96,
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model, self.tokenizer = load_pretrained(
            model,
            tokenizer,
            AutoModelForCausalLM,
            AutoTokenizer,
            what="tokenizer",
            device=device,
            dtype=dtype,
        )
        self.tokenizer.padding_side = "left"
        self.device = device
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self._torch = torch

    def generate(self, prompts: Sequence[str]) -> list[str]:
        out: list[str] = []
        for start in range(0, len(prompts), self.batch_size):
            chats = [[{"role": "user", "content": p}] for p in prompts[start:start + self.batch_size]]
            inputs = self.tokenizer.apply_chat_template(
                chats,
                add_generation_prompt=True,
                tokenize=True,
                return_dict=True,
                return_tensors="pt",
                padding=True,
            )
            inputs = inputs.to(self.device)
            with self._torch.inference_mode():
                generated = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
            out += [
                t.strip()
                for t in self.tokenizer.batch_decode(
                    generated[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True
                )
            ]
        return out
