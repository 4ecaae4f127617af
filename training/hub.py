"""Upload a trained model directory to the Hugging Face Hub."""

from __future__ import annotations

import json
from pathlib import Path

from huggingface_hub import HfApi


def local_adapter_base(directory: str | Path) -> str | None:
    """The base model of a LoRA adapter folder when it is a local path (not a hub id), else None."""
    config = Path(directory) / "adapter_config.json"
    if not config.is_file():
        return None
    base = str(json.loads(config.read_text(encoding="utf-8")).get("base_model_name_or_path") or "")
    if not base:
        return None
    local = base.startswith((".", "/", "~")) or (Path(directory) / base).exists() or Path(base).exists()
    return base if local else None


def push_model(directory: str | Path, repo_id: str, private: bool = True, api: HfApi | None = None) -> str:
    """Create `repo_id` (if needed) and upload `directory` (weights, processor, code, card); returns the commit URL.

    Raises:
        FileNotFoundError: `directory` is not a saved model or adapter.
        ValueError: `directory` is a LoRA adapter over a local base model, which nobody could load from the
            hub (push the base first and train from its hub id, or push the merged model).
    """
    directory = Path(directory)
    if not (directory / "config.json").is_file() and not (directory / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{directory} is not a saved model directory (no config.json / adapter_config.json)")
    base = local_adapter_base(directory)
    if base is not None:
        raise ValueError(f"{directory} holds LoRA adapters over the local model {base}, which is not on the "
                         "hub: push the base model first and train from its hub id, or push the merged model "
                         "(--merge-lora, <dir>/merged)")
    api = api or HfApi()
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    info = api.upload_folder(repo_id=repo_id, folder_path=str(directory), repo_type="model",
                             commit_message="Upload GA-DMS model")
    return str(info)


__all__ = ["local_adapter_base", "push_model"]
