"""Stage 6, filter captions: rule-based rejection of captions that break the instruction.

Every caption is first cleaned (:func:`clean_caption`: whitespace, wrapping quotes, a leading
``Caption:`` label) and then checked by the rules below, in order; the first rule that fires is the
rejection reason of the crop (both captions must pass), recorded with the caption and the matched
text. Rules (reason names):

- ``too_short`` / ``too_long``: word count outside ``[min_words, max_words]``;
- ``unfilled_placeholder``: a template placeholder such as ``[colored top]`` left in the text;
- ``speculative``: hedging words (``possibly``, ``seems``, ``appears to``, ``likely``, ...);
- ``identity_or_emotion``: emotions, mood or identity guesses (``happy``, ``celebrity``, ...);
- ``background``: talk about the scene (``background``, ``street``, ``building``, ...);
- ``non_person``: meta talk or refusals (``the image``, ``I cannot``, ``as an AI``, ``no person``, ...);
- ``duplicate_pair``: both captions of a crop are the same (after normalisation).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

import pyarrow as pa

from gadms_utils.cli_types import non_negative_int, positive_int

from .settings import option, settings_dict
from .stage import ShardOutput

__all__ = ["CaptionFilter", "FilterRules", "clean_caption", "make_filter_processor"]

SPECULATIVE = (
    "possibly",
    "perhaps",
    "maybe",
    "probably",
    "likely",
    "seems",
    "seem",
    "seemingly",
    "appears to",
    "appear to",
    "appearing to",
    "apparently",
    "presumably",
    "might",
    "could be",
    "may be",
    "suggests",
    "suggesting",
    "it looks like",
    "looks like he",
    "looks like she",
    "i think",
    "unclear",
    "hard to tell",
    "not sure",
)
IDENTITY_OR_EMOTION = (
    "happy",
    "sad",
    "angry",
    "upset",
    "excited",
    "nervous",
    "anxious",
    "confident",
    "cheerful",
    "joyful",
    "worried",
    "bored",
    "tired",
    "relaxed",
    "emotion",
    "mood",
    "celebrity",
    "famous",
    "actor",
    "actress",
    "politician",
    "named",
    "identity",
)
BACKGROUND = (
    "background",
    "backdrop",
    "surroundings",
    "scene",
    "in the distance",
    "street",
    "sidewalk",
    "road",
    "building",
    "buildings",
    "tree",
    "trees",
    "sky",
    "wall",
    "crowd",
    "traffic",
    "parked",
    "indoors",
    "outdoors",
    "room",
)
NON_PERSON = (
    "the image",
    "this image",
    "the photo",
    "this photo",
    "the picture",
    "this picture",
    "photograph",
    "the camera",
    "as an ai",
    "i cannot",
    "i can't",
    "i'm sorry",
    "i am sorry",
    "sorry",
    "caption",
    "template",
    "placeholder",
    "here is",
    "no person",
    "no one",
    "nobody",
    "there is no",
    "watermark",
    "logo text",
)

_LABEL = re.compile(r"^\s*(caption|description)\s*[:\-]\s*", re.IGNORECASE)
_QUOTES = "\"'“”‘’`"
_WORD = re.compile(r"[A-Za-z0-9]+(?:['’-][A-Za-z0-9]+)*")
_PLACEHOLDER = re.compile(r"\[[^\]]*\]")


def clean_caption(text: str | None) -> str:
    """Strip whitespace, wrapping quotes and a leading ``Caption:`` label; collapse inner whitespace."""
    text = " ".join((text or "").split())
    text = _LABEL.sub("", text).strip()
    while len(text) >= 2 and text[0] in _QUOTES and text[-1] in _QUOTES:
        text = text[1:-1].strip()
    return text


def _phrase_pattern(phrases: tuple[str, ...]) -> re.Pattern[str]:
    alternatives = sorted((re.escape(p) for p in phrases), key=len, reverse=True)
    return re.compile(r"(?<![A-Za-z])(?:" + "|".join(alternatives) + r")(?![A-Za-z])", re.IGNORECASE)


@dataclass(frozen=True)
class FilterRules:
    """The rule settings (word lists are matched case-insensitively as whole words or phrases)."""

    min_words: int = option(8, "fewest words per caption", non_negative_int)
    max_words: int = option(80, "most words per caption", positive_int)
    speculative: tuple[str, ...] = SPECULATIVE
    identity_or_emotion: tuple[str, ...] = IDENTITY_OR_EMOTION
    background: tuple[str, ...] = BACKGROUND
    non_person: tuple[str, ...] = NON_PERSON

    def __post_init__(self) -> None:
        for name in ("speculative", "identity_or_emotion", "background", "non_person"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if not 0 <= self.min_words <= self.max_words:
            raise ValueError(f"need 0 <= min_words <= max_words, got {self.min_words}, {self.max_words}")

    def to_dict(self) -> dict[str, Any]:
        """The JSON-friendly settings (:func:`.settings.settings_dict`)."""
        return settings_dict(self)


@dataclass
class CaptionFilter:
    """Apply :class:`FilterRules` to captions."""

    rules: FilterRules = field(default_factory=FilterRules)

    def __post_init__(self) -> None:
        self._lists = [
            (name, _phrase_pattern(getattr(self.rules, name)))
            for name in ("speculative", "identity_or_emotion", "background", "non_person")
            if getattr(self.rules, name)
        ]

    def check(self, caption: str) -> tuple[str, str] | None:
        """``(reason, matched text)`` for a cleaned caption that breaks a rule, else ``None``."""
        words = _WORD.findall(caption)
        if len(words) < self.rules.min_words:
            return "too_short", f"{len(words)} words"
        if len(words) > self.rules.max_words:
            return "too_long", f"{len(words)} words"
        placeholder = _PLACEHOLDER.search(caption)
        if placeholder:
            return "unfilled_placeholder", placeholder.group(0)
        for name, pattern in self._lists:
            match = pattern.search(caption)
            if match:
                return name, match.group(0)
        return None

    def check_pair(self, caption1: str, caption2: str) -> tuple[str, str] | None:
        """The first rule broken by the pair (``caption1``, ``caption2``: cleaned), or ``None``."""
        for j, caption in ((1, caption1), (2, caption2)):
            broken = self.check(caption)
            if broken:
                return broken[0], f"caption{j}: {broken[1]!r} in {caption[:160]!r}"
        if _normalise(caption1) == _normalise(caption2):
            return "duplicate_pair", caption1[:160]
        return None


def _normalise(text: str) -> str:
    return " ".join(w.lower() for w in _WORD.findall(text))


def make_filter_processor(caption_filter: CaptionFilter) -> Callable[[str, pa.Table], ShardOutput]:
    """The shard function of the filter stage: clean both captions, keep the crops whose pair passes."""

    def process(name: str, table: pa.Table) -> ShardOutput:
        ids = table.column("crop_id").to_pylist()
        first = [clean_caption(c) for c in table.column("caption1").to_pylist()]
        second = [clean_caption(c) for c in table.column("caption2").to_pylist()]
        keep, rejects = [], []
        for i, (c1, c2) in enumerate(zip(first, second)):
            broken = caption_filter.check_pair(c1, c2)
            if broken:
                rejects.append({"id": ids[i], "reason": broken[0], "detail": broken[1]})
            else:
                keep.append(i)
        kept = table.take(keep) if keep else table.slice(0, 0)
        for column, values in (("caption1", first), ("caption2", second)):
            position = kept.schema.get_field_index(column)
            kept = kept.set_column(
                position, kept.schema.field(column), pa.array([values[i] for i in keep], pa.string())
            )
        return ShardOutput(kept, rejects, len(ids))

    return process
