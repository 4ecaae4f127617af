"""Shared pytest setup: every test runs offline (no Hugging Face Hub access)."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

REPO = __import__("pathlib").Path(__file__).resolve().parents[1]


def launch_env(**extra) -> dict:
    """The environment of a training subprocess (accelerate launch / torchrun): this one without launcher
    variables, offline, one thread, the repository importable; `extra` added."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACCELERATE_", "RANK", "WORLD_SIZE", "LOCAL_RANK"))}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1",
               PYTHONPATH=str(REPO), **extra)
    return env

CAPTION_WORDS = (
    "a an the man woman person young old with and in on of wears wearing carries carrying is has "
    "long short hair black white red blue green yellow gray grey brown pink purple orange dark light "
    "coat jacket shirt t-shirt sweater dress skirt pants jeans shorts shoes boots sneakers backpack bag "
    "handbag hat cap glasses he she his her they walking standing"
).split()


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """A small CLIP-format BPE tokenizer (whole caption words as tokens) with `<|mask|>`."""
    from modeling_gadms.tokenization import build_tokenizer, merges_for_words

    return build_tokenizer(merges_for_words(CAPTION_WORDS))


@pytest.fixture(scope="session")
def tiny_config(tiny_tokenizer):
    """A tiny GA-DMS config (64x32 input, 2-layer towers) matching `tiny_tokenizer`."""
    from modeling_gadms import GADMSConfig

    return GADMSConfig.tiny(vocab_size=len(tiny_tokenizer))


@pytest.fixture(scope="session")
def tiny_processor(tiny_tokenizer, tiny_config):
    """Processor for `tiny_config` (64x32 person crops)."""
    from modeling_gadms import GADMSProcessor, person_image_processor

    return GADMSProcessor(person_image_processor(*tiny_config.image_size), tiny_tokenizer)


@pytest.fixture(scope="session")
def tiny_gadms_dir(tmp_path_factory, tiny_config, tiny_processor):
    """A directory holding a saved, randomly initialised tiny GA-DMS model and its processor."""
    import torch

    from modeling_gadms import GADMSModel

    torch.manual_seed(0)
    model = GADMSModel(tiny_config).eval()
    path = tmp_path_factory.mktemp("tiny_gadms")
    model.save_pretrained(path)
    tiny_processor.save_pretrained(path)
    return path
