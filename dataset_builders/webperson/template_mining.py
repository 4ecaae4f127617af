"""Building a template bank from benchmark captions (docs/method.md section 9.4).

1. :func:`extract_templates`: an instruct LLM rewrites each human caption into a template with
   attribute placeholders (any ``generate(prompts) -> texts`` callable: an OpenAI-compatible endpoint
   through :func:`endpoint_generator`, or :class:`vlm.TransformersTextGenerator`).
2. :func:`select_templates`: embed the templates (:class:`CLIPTextEmbedder`, e.g. the OpenCLIP
   ViT-bigG/14 text tower in transformers format, or :class:`SentenceTransformerEmbedder`), cluster
   them with k-means (scikit-learn) and keep the one nearest each centroid plus ``per_cluster_random``
   random others of its cluster.
3. :func:`template_bank.save_bank` writes the result as a versioned file.

The paper's further rounds (the LLM writes more templates; a bias review leaves 1,000) are human work
around these tools.
"""

from __future__ import annotations

import random
import re
from typing import Any, Callable, Sequence

import numpy as np

from .openai_client import EndpointError, OpenAIChatClient
from .pretrained import load_pretrained
from .prompts import PLACEHOLDERS, template_prompt
from .template_bank import find_placeholders

__all__ = [
    "CLIPTextEmbedder",
    "SentenceTransformerEmbedder",
    "endpoint_generator",
    "extract_templates",
    "parse_template",
    "select_templates",
]


def parse_template(answer: str) -> tuple[str | None, str]:
    """The template in an LLM answer, or ``(None, reason)``: ``empty``, ``no_placeholder``,
    ``unknown_placeholder`` (a placeholder outside :data:`prompts.PLACEHOLDERS`)."""
    lines = [line.strip() for line in (answer or "").splitlines() if line.strip()]
    if not lines:
        return None, "empty"
    text = re.sub(r"^\s*template\s*:\s*", "", lines[0], flags=re.IGNORECASE).strip().strip("\"'`“”")
    found = find_placeholders(text)
    if not found:
        return None, "no_placeholder"
    unknown = [p for p in found if p not in PLACEHOLDERS]
    if unknown:
        return None, f"unknown_placeholder {unknown[0]}"
    return " ".join(text.split()), ""


def extract_templates(
    captions: Sequence[str], generate: Callable[[list[str]], list[Any]], *, batch_size: int = 64
) -> tuple[list[str], dict[str, int]]:
    """Templates from ``captions`` (distinct, in first-seen order) and counts of dropped answers by
    reason (``empty``, ``no_placeholder``, ``unknown_placeholder``, ``duplicate``, ``llm_error``)."""
    templates: list[str] = []
    seen: set[str] = set()
    dropped: dict[str, int] = {}
    for start in range(0, len(captions), batch_size):
        answers = generate([template_prompt(c) for c in captions[start:start + batch_size]])
        for answer in answers:
            if isinstance(answer, Exception):
                dropped["llm_error"] = dropped.get("llm_error", 0) + 1
                continue
            text, reason = parse_template(answer)
            if text is None:
                key = reason.split()[0]
                dropped[key] = dropped.get(key, 0) + 1
            elif text.lower() in seen:
                dropped["duplicate"] = dropped.get("duplicate", 0) + 1
            else:
                seen.add(text.lower())
                templates.append(text)
    return templates, dropped


def endpoint_generator(
    client: OpenAIChatClient, *, temperature: float = 0.0, max_tokens: int = 128
) -> Callable[[list[str]], list[str | EndpointError]]:
    """A ``generate(prompts)`` over an OpenAI-compatible endpoint (failures come back as errors)."""

    def generate(prompts: list[str]) -> list[str | EndpointError]:
        conversations = [[{"role": "user", "content": p}] for p in prompts]
        return client.complete_many(
            conversations, [{"temperature": temperature, "max_tokens": max_tokens}] * len(prompts)
        )

    return generate


class CLIPTextEmbedder:
    """L2-normalised text embeddings from a CLIP text tower (``CLIPTextModelWithProjection``).

    Args:
        model: a model id or folder (a full CLIP checkpoint works), or a loaded model.
        tokenizer: its tokenizer (``AutoTokenizer`` from ``model`` when omitted).
    """

    def __init__(
        self, model: Any, tokenizer: Any = None, *, device: str = "cpu", batch_size: int = 256
    ) -> None:
        import torch
        from transformers import AutoTokenizer, CLIPTextModelWithProjection

        self.model, self.tokenizer = load_pretrained(
            model, tokenizer, CLIPTextModelWithProjection, AutoTokenizer, what="tokenizer", device=device
        )
        self.device = device
        self.batch_size = batch_size
        self._torch = torch

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        chunks = []
        for start in range(0, len(texts), self.batch_size):
            inputs = self.tokenizer(
                list(texts[start:start + self.batch_size]),
                padding=True,
                truncation=True,
                return_tensors="pt",
            ).to(self.device)
            with self._torch.inference_mode():
                embeds = self.model(**inputs).text_embeds.float()
            chunks.append(self._torch.nn.functional.normalize(embeds, dim=-1).cpu().numpy())
        return np.concatenate(chunks, axis=0)


class SentenceTransformerEmbedder:
    """Embeddings from a sentence-transformers model (optional: ``pip install sentence-transformers``)."""

    def __init__(self, model: str, *, device: str | None = None, batch_size: int = 256) -> None:
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise ImportError(
                "this embedder needs `pip install sentence-transformers`; or use a CLIP text tower"
            ) from None
        self.model = SentenceTransformer(model, device=device)
        self.batch_size = batch_size

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray(
            self.model.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True)
        )


def select_templates(
    embeddings: np.ndarray, clusters: int, *, per_cluster_random: int = 5, seed: int = 0
) -> tuple[list[int], list[int]]:
    """k-means over ``embeddings``; from each cluster the member nearest its centroid plus up to
    ``per_cluster_random`` random other members. Returns the selected indices (sorted) and the cluster
    label of every input."""
    from sklearn.cluster import KMeans

    embeddings = np.asarray(embeddings, dtype=np.float64)
    n = embeddings.shape[0]
    if not 1 <= clusters <= n:
        raise ValueError(f"clusters must be in [1, {n}] for {n} templates, got {clusters}")
    kmeans = KMeans(n_clusters=clusters, n_init=4, random_state=seed).fit(embeddings)
    labels = kmeans.labels_
    rng = random.Random(seed)
    chosen: list[int] = []
    for cluster in range(clusters):
        members = np.flatnonzero(labels == cluster)
        if members.size == 0:
            continue
        distances = np.linalg.norm(embeddings[members] - kmeans.cluster_centers_[cluster], axis=1)
        nearest = int(members[int(np.argmin(distances))])
        others = [int(m) for m in members if m != nearest]
        chosen += [nearest] + rng.sample(others, min(per_cluster_random, len(others)))
    return sorted(chosen), [int(v) for v in labels]
