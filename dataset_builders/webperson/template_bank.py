"""Caption template banks: versioned JSON files of templates with attribute placeholders.

A bank file ``NAME_vN.json`` holds ``{"name", "version", "sha256", "meta", "templates": [{"id", "text"}]}``;
``sha256`` covers the templates, so a caption's ``template_id`` names one fixed text. The project ships
``templates/default_v1.json`` (64 templates written and reviewed for this project) so that captioning
runs without the LLM extraction step; :mod:`template_mining` builds larger banks.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .prompts import PLACEHOLDERS

__all__ = ["DEFAULT_BANK", "Template", "TemplateBank", "find_placeholders", "load_bank", "save_bank"]

#: The name of the shipped bank (``dataset_builders/webperson/templates/default_v1.json``).
DEFAULT_BANK = "default_v1"
_FOLDER = Path(__file__).resolve().parent / "templates"
_FILE_NAME = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]*)_v(?P<version>\d+)\.json$")
_PLACEHOLDER = re.compile(r"\[[^\[\]]+\]")


def find_placeholders(text: str) -> list[str]:
    """The bracketed placeholders of ``text``, in order (``["[He/She]", "[colored top]"]``)."""
    return _PLACEHOLDER.findall(text)


@dataclass(frozen=True)
class Template:
    """One template: a stable id and its text."""

    id: str
    text: str


@dataclass
class TemplateBank:
    """A named, versioned list of templates."""

    name: str
    version: int
    templates: list[Template]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.templates:
            raise ValueError(f"template bank {self.name}_v{self.version} is empty")
        ids = [t.id for t in self.templates]
        if len(set(ids)) != len(ids):
            raise ValueError(f"template bank {self.name}_v{self.version} has duplicate template ids")
        for template in self.templates:
            unknown = [p for p in find_placeholders(template.text) if p not in PLACEHOLDERS]
            if unknown:
                raise ValueError(
                    f"template {template.id} uses unknown placeholder(s) {unknown}; "
                    f"known: {list(PLACEHOLDERS)}"
                )
            if not find_placeholders(template.text):
                raise ValueError(f"template {template.id} has no placeholder: {template.text!r}")

    @property
    def tag(self) -> str:
        """``NAME_vN``."""
        return f"{self.name}_v{self.version}"

    def sha256(self) -> str:
        payload = json.dumps([[t.id, t.text] for t in self.templates], ensure_ascii=False)
        return hashlib.sha256(payload.encode()).hexdigest()

    def draw(self, rng: random.Random) -> Template:
        """A template drawn uniformly with ``rng``."""
        return self.templates[rng.randrange(len(self.templates))]

    @classmethod
    def from_texts(
        cls, name: str, version: int, texts: Sequence[str], meta: dict[str, Any] | None = None
    ) -> "TemplateBank":
        """A bank of ``texts`` with ids ``NAME_vN/000`` ..."""
        width = max(3, len(str(len(texts) - 1)))
        return cls(
            name,
            version,
            [Template(f"{name}_v{version}/{i:0{width}d}", t) for i, t in enumerate(texts)],
            dict(meta or {}),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "sha256": self.sha256(),
            "meta": self.meta,
            "templates": [{"id": t.id, "text": t.text} for t in self.templates],
        }


def save_bank(bank: TemplateBank, folder: str | Path) -> Path:
    """Write ``bank`` to ``folder/NAME_vN.json`` and return the path.

    Raises:
        FileExistsError: when that version exists with other templates (bump the version instead).
    """
    path = Path(folder) / f"{bank.tag}.json"
    if path.is_file():
        old = json.loads(path.read_text())
        if old.get("sha256") != bank.sha256():
            raise FileExistsError(
                f"{path} exists with other templates: write version {bank.version + 1} instead"
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(bank.to_dict(), indent=2, ensure_ascii=False) + "\n")
    return path


def load_bank(name_or_path: str | Path = DEFAULT_BANK) -> TemplateBank:
    """Load a bank from a file, or a shipped bank by name (``"default_v1"``).

    Raises:
        FileNotFoundError: no such file or shipped bank; ``ValueError``: a malformed or altered file.
    """
    path = Path(name_or_path)
    if not path.is_file():
        shipped = _FOLDER / f"{name_or_path}.json"
        if not shipped.is_file():
            names = sorted(p.stem for p in _FOLDER.glob("*.json"))
            raise FileNotFoundError(
                f"template bank {name_or_path!r}: no such file, nor a shipped bank ({names})"
            )
        path = shipped
    try:
        data = json.loads(path.read_text())
        bank = TemplateBank(
            str(data["name"]),
            int(data["version"]),
            [Template(str(t["id"]), str(t["text"])) for t in data["templates"]],
            data.get("meta", {}),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{path}: not a template bank ({error})") from None
    if data.get("sha256") and data["sha256"] != bank.sha256():
        raise ValueError(
            f"{path}: templates do not match the recorded sha256 (edited by hand? bump the version)"
        )
    return bank
