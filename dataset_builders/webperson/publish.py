"""Stage 8, publish: upload an exported folder to the Hugging Face Hub as a data set repository.

The repository then loads with ``datasets.load_dataset("ORG/NAME")`` (parquet shards + README with
YAML ``configs``). Only the card, the parquet shards and the card's figures are uploaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .export import EXPORT_MARKER

__all__ = ["UPLOAD_PATTERNS", "check_export", "publish"]

#: What of the export folder is uploaded.
UPLOAD_PATTERNS = ["README.md", "data/*.parquet", "assets/*.png"]


def check_export(folder: str | Path) -> list[Path]:
    """Check that ``folder`` is a finished export and return its parquet shards.

    Raises:
        FileNotFoundError: naming what is missing.
    """
    root = Path(folder)
    if not (root / "README.md").is_file():
        raise FileNotFoundError(f"{root}/README.md is missing: run the export stage first")
    if not (root / EXPORT_MARKER).is_file():
        raise FileNotFoundError(f"{root}/{EXPORT_MARKER} is missing: {root} is not a WebPerson export")
    shards = sorted((root / "data").glob("train-*.parquet"))
    if not shards:
        raise FileNotFoundError(f"{root}/data holds no train-*.parquet shard")
    return shards


def publish(
    folder: str | Path,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    large: bool = False,
    api: Any = None,
) -> Any:
    """Create (if needed) the data set repository ``repo_id`` and upload the export ``folder``.

    Args:
        large: use ``HfApi.upload_large_folder`` (resumable, many commits; for multi-GB exports).
        api: an ``huggingface_hub.HfApi`` (made from ``token`` when omitted).

    Returns:
        What the upload call returns (a commit info for ``upload_folder``).
    """
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ValueError(f"--repo must be ORG/NAME, got {repo_id!r}")
    shards = check_export(folder)
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    upload = {
        "repo_id": repo_id,
        "folder_path": str(folder),
        "repo_type": "dataset",
        "revision": revision,
        "allow_patterns": UPLOAD_PATTERNS,
    }
    if large:
        return api.upload_large_folder(**upload)
    message = commit_message or f"Upload WebPerson export ({len(shards)} parquet shards)"
    return api.upload_folder(**upload, commit_message=message)
