"""GADMSProcessor and the GA-DMS tokenizer, checked against open_clip's CLIP tokenizer and PIL preprocessing."""

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st
import open_clip
import pytest
import torch
from open_clip.tokenizer import default_bpe
from PIL import Image
from transformers import AutoProcessor

import modeling_gadms  # noqa: F401
from modeling_gadms import GADMSProcessor, person_image_processor
from modeling_gadms.processing_gadms import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from modeling_gadms.tokenization import (
    CLIP_NUM_MERGES,
    build_tokenizer,
    bytes_to_unicode,
    clip_merges_for_gadms,
    merges_for_words,
    read_merges,
)

CAPTIONS = [
    "A young woman with long black hair wears a red coat, blue jeans and white shoes.",
    "The man is wearing a grey t-shirt and dark shorts; he carries a black backpack on his left shoulder.",
    "pedestrian in a yellow jacket",
    "She has a ponytail, glasses and a pink handbag (possibly leather) while walking.",
]


@pytest.fixture(scope="module")
def clip_processor():
    tokenizer = build_tokenizer(clip_merges_for_gadms(read_merges(default_bpe(), limit=CLIP_NUM_MERGES)))
    return GADMSProcessor(person_image_processor(384, 128), tokenizer)


def test_byte_table_is_a_bijection_onto_printable_symbols():
    table = bytes_to_unicode()
    assert sorted(table) == list(range(256)) and len(set(table.values())) == 256
    assert all(not symbol.isspace() and symbol.isprintable() for symbol in table.values())
    assert table[ord("a")] == "a" and table[ord(" ")] == chr(256 + 32)


def test_full_clip_vocabulary_has_mask_at_49405(clip_processor):
    tokenizer = clip_processor.tokenizer
    assert len(tokenizer) == 49408
    assert tokenizer.mask_token == "<|mask|>" and tokenizer.mask_token_id == 49405 == clip_processor.mask_token_id
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id) == (49406, 49407)
    ids = clip_processor(text="a man <|mask|> a bag")["input_ids"][0]
    assert 49405 in ids.tolist()


def test_tokens_equal_open_clip(clip_processor):
    reference = open_clip.get_tokenizer("ViT-B-16")(CAPTIONS)
    ours = clip_processor(text=CAPTIONS)
    # open_clip pads with 0 and keeps the end-of-text token when truncating, as the released GA-DMS code does.
    torch.testing.assert_close(ours["input_ids"], reference)
    torch.testing.assert_close(ours["attention_mask"], (reference != 0).long())


def test_truncation_keeps_eos(clip_processor):
    long_caption = " ".join(["a woman in a red coat with a black backpack"] * 20)
    ids = clip_processor(text=[long_caption, "short"])["input_ids"]
    assert ids.shape == (2, 77)
    assert ids[0, 0] == 49406 and ids[0, -1] == 49407 and (ids[0] == 49407).sum() == 1
    torch.testing.assert_close(ids[0], open_clip.get_tokenizer("ViT-B-16")([long_caption])[0])
    assert ids[1, 2] == 49407 and (ids[1, 3:] == 0).all()


def test_small_vocabulary_from_words():
    tokenizer = build_tokenizer(merges_for_words(["red", "coat", "reader"]))
    ids = tokenizer("red coat reader")["input_ids"]
    assert len(ids) == 5  # SOT, one token per word, EOT
    assert tokenizer.convert_ids_to_tokens(ids[1:4]) == ["red</w>", "coat</w>", "reader</w>"]
    assert tokenizer.mask_token_id == len(tokenizer) - 3


def _reference_pixels(image, height=384, width=128):
    """PIL bicubic resize, scale to [0, 1], CLIP mean/std: the released code's test transform."""
    array = np.asarray(image.convert("RGB").resize((width, height), Image.BICUBIC), dtype=np.float32) / 255
    tensor = torch.from_numpy(array).permute(2, 0, 1)
    return (tensor - torch.tensor(OPENAI_CLIP_MEAN)[:, None, None]) / torch.tensor(OPENAI_CLIP_STD)[:, None, None]


def test_images_resize_to_height_by_width_without_crop(clip_processor):
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (150, 60, 3), dtype=np.uint8))
    pixels = clip_processor(images=image)["pixel_values"]
    assert pixels.shape == (1, 3, 384, 128)
    difference = (pixels[0] - _reference_pixels(image)).abs()
    assert difference.max() < 0.02 and difference.mean() < 1e-3  # at most one uint8 level of rounding


@pytest.mark.parametrize("mode", ["L", "RGBA", "CMYK", "P", "LA", "I;16"])
def test_non_rgb_images_are_converted(clip_processor, mode):
    rng = np.random.default_rng(1)
    rgb = Image.fromarray(rng.integers(0, 255, (90, 40, 3), dtype=np.uint8))
    if mode == "I;16":
        image = Image.fromarray(rng.integers(0, 65535, (90, 40), dtype=np.uint16))
    else:
        image = rgb.convert(mode)
    pixels = clip_processor(images=[image])["pixel_values"]
    assert pixels.shape == (1, 3, 384, 128) and torch.isfinite(pixels).all()
    if mode == "L":
        gray = np.asarray(image)
        expected = _reference_pixels(Image.fromarray(np.stack([gray] * 3, axis=-1)))
        assert (pixels[0] - expected).abs().max() < 0.04  # upsampling: up to two uint8 levels of rounding
    if mode == "CMYK":
        assert (pixels[0] - _reference_pixels(image.convert("RGB"))).abs().max() < 0.04
    if mode == "RGBA":
        transparent = Image.new("RGBA", (40, 90), (10, 200, 30, 0))
        white = _reference_pixels(Image.new("RGB", (40, 90), (255, 255, 255)))
        assert (clip_processor(images=transparent)["pixel_values"][0] - white).abs().max() < 0.02


def test_processor_round_trip(tmp_path, tiny_processor):
    tiny_processor.save_pretrained(tmp_path)
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert type(loaded) is GADMSProcessor
    images = [Image.new("RGB", (30, 70), (200, 10, 10)), Image.new("RGB", (50, 50), (0, 0, 255))]
    text = ["a man in a red coat", "a woman with a black backpack <|mask|>"]
    before, after = tiny_processor(text=text, images=images), loaded(text=text, images=images)
    assert set(before) == set(after) == {"input_ids", "attention_mask", "pixel_values"}
    for key in before:
        torch.testing.assert_close(before[key], after[key])
    assert loaded.tokenizer.mask_token_id == tiny_processor.tokenizer.mask_token_id
    assert loaded.decode(before["input_ids"][0], skip_special_tokens=True) == "a man in a red coat"


def test_processor_needs_an_input(tiny_processor):
    with pytest.raises(ValueError, match="needs `images`, `text`, or both"):
        tiny_processor()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=9), min_size=1, max_size=40,
                unique=True))
@example(["aaaaa"])
@example(["abab", "ababab", "bab", "aaaa", "aa"])
def test_word_vocabularies_spell_every_word_as_one_token(words):
    """Checked with the `tokenizers` BPE engine (an independent implementation of merge application)."""
    tokenizer = build_tokenizer(merges_for_words(words))
    ids = tokenizer(" ".join(words))["input_ids"]
    tokens = tokenizer.convert_ids_to_tokens(ids[1:-1])
    assert tokens == [w + "</w>" for w in words]


@pytest.mark.parametrize("mode", ["L", "RGBA", "CMYK", "P", "LA", "PA", "I;16", "I", "1", "RGB"])
def test_processor_rgb_conversion_equals_the_shared_one(mode):
    """The processor's own RGB conversion (kept in its file: remote code imports nothing else of the project)
    gives the same pixels as `gadms_utils.image_io.to_rgb`, the one every reader uses."""
    from gadms_utils.image_io import to_rgb
    from modeling_gadms.processing_gadms import _to_rgb

    rng = np.random.default_rng(2)
    rgba = Image.fromarray(rng.integers(0, 255, (30, 20, 4), dtype=np.uint8), "RGBA")
    if mode == "I;16":
        image = Image.fromarray(rng.integers(0, 65535, (30, 20), dtype=np.uint16))
    elif mode == "I":
        image = Image.fromarray(rng.integers(0, 65535, (30, 20), dtype=np.int32))
    elif mode == "PA":
        image = rgba.convert("RGB").convert("P").convert("PA")
    else:
        image = rgba.convert(mode)
    ours, shared = _to_rgb(image), to_rgb(image)
    assert ours.mode == shared.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(shared))
