"""Upload a trained model directory to the Hugging Face Hub."""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import HfApi


def push_model(directory: str | Path, repo_id: str, private: bool = True, api: HfApi | None = None) -> str:
    """Create `repo_id` (if needed) and upload `directory` (weights, processor, code, card); returns the commit URL."""
    directory = Path(directory)
    if not (directory / "config.json").is_file() and not (directory / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{directory} is not a saved model directory (no config.json / adapter_config.json)")
    api = api or HfApi()
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    info = api.upload_folder(repo_id=repo_id, folder_path=str(directory), repo_type="model",
                             commit_message="Upload GA-DMS model")
    return str(info)


__all__ = ["push_model"]
