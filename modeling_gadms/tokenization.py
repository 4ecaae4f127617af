"""CLIP BPE vocabularies with the GA-DMS `<|mask|>` token.

CLIP's byte-level BPE vocabulary is laid out as: the 256 byte symbols, the same 256 with the end-of-word
suffix `</w>`, one entry per merge (in merge order), then `<|startoftext|>` and `<|endoftext|>`. GA-DMS
drops the last merge of that list to free its id for `<|mask|>`, so with the full CLIP vocabulary (49408
entries) `<|mask|>` = 49405, `<|startoftext|>` = 49406 and `<|endoftext|>` = 49407 (docs/method.md section 2), and
released GA-DMS weights keep their meaning.

Every tokenizer built here uses that layout: `[bytes, bytes</w>, merges..., <|mask|>, SOT, EOT]`. The same
code builds the full CLIP vocabulary (from CLIP's merges file) and small vocabularies for offline tests and
demos (from a word list, see [`merges_for_words`]).
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

from transformers import CLIPTokenizer

MASK_TOKEN = "<|mask|>"
BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
END_OF_WORD = "</w>"
CLIP_NUM_MERGES = 49152 - 256 - 2  # merges used by OpenAI CLIP's 49408-token vocabulary
CONTEXT_LENGTH = 77


@lru_cache
def bytes_to_unicode() -> dict[int, str]:
    """The byte -> printable character table of byte-level BPE (GPT-2 / CLIP).

    Printable Latin-1 bytes map to themselves; the others are shifted to code points from 256 on, so that
    every byte has a visible, non-whitespace symbol.
    """
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return {b: table[b] for b in printable + [b for b in range(256) if b not in printable]}


def base_vocabulary() -> list[str]:
    """The 512 single-symbol entries of a CLIP vocabulary: each byte symbol, then each with `</w>`."""
    symbols = list(bytes_to_unicode().values())
    return symbols + [s + END_OF_WORD for s in symbols]


def gadms_vocabulary(merges: list[tuple[str, str]]) -> dict[str, int]:
    """Token -> id for the GA-DMS layout `[bytes, bytes</w>, merges..., <|mask|>, SOT, EOT]`."""
    tokens = base_vocabulary() + ["".join(pair) for pair in merges] + [MASK_TOKEN, BOS_TOKEN, EOS_TOKEN]
    vocab = {}
    for index, token in enumerate(tokens):
        if token in vocab:
            raise ValueError(f"merge #{index - 512} produces {token!r}, which is already in the vocabulary")
        vocab[token] = index
    return vocab


def build_tokenizer(merges: list[tuple[str, str]], model_max_length: int = CONTEXT_LENGTH) -> CLIPTokenizer:
    """A transformers `CLIPTokenizer` over the GA-DMS vocabulary of `merges`.

    `<|mask|>` is a special token (never split) and truncation keeps the end-of-text token. The tokenizer pads
    with `<|endoftext|>` like transformers' CLIP tokenizer; [`GADMSProcessor`] rewrites padding to id 0, as the
    released GA-DMS code pads (a pad token at id 0 would make the byte symbol `!` special and change tokens).
    """
    vocab = gadms_vocabulary(merges)
    tokenizer = CLIPTokenizer(
        vocab=vocab,
        merges=[tuple(m) for m in merges],
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
        mask_token=MASK_TOKEN,
        model_max_length=model_max_length,
    )
    return tokenizer


def read_merges(path: str | Path, limit: int | None = None) -> list[tuple[str, str]]:
    """Read a BPE merges file: transformers' `merges.txt` or OpenAI's `bpe_simple_vocab_16e6.txt.gz`.

    The `#version` header line is skipped. OpenAI's file lists more merges than CLIP uses: pass
    `limit=CLIP_NUM_MERGES` (48,894) for the CLIP vocabulary.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        lines = handle.read().split("\n")
    if lines and "#version" in lines[0]:
        lines = lines[1:]
    merges = []
    for number, line in enumerate(lines, start=2):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ValueError(f"{path}: line {number} is not a merge ('left right'): {line!r}")
        merges.append((parts[0], parts[1]))
        if limit is not None and len(merges) == limit:
            break
    return merges


def clip_merges_for_gadms(merges: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """CLIP's merges with the last one dropped, so that `<|mask|>` takes its id (49405 for full CLIP)."""
    if not merges:
        raise ValueError("the merges list is empty")
    return list(merges[:-1])


def tokenizer_from_clip_vocab(
    vocab: dict[str, int], merges: list[tuple[str, str]], source: str = "the CLIP vocabulary"
) -> CLIPTokenizer:
    """Convert a CLIP BPE vocabulary (token -> id, merges) into a GA-DMS tokenizer.

    The vocabulary must follow CLIP's layout (bytes, merges, SOT, EOT); the last merge is dropped and its id
    becomes `<|mask|>`, so all other ids are unchanged. A vocabulary that already has `<|mask|>` is kept as is.
    """
    if MASK_TOKEN in vocab:
        kept = list(merges)
        expected = gadms_vocabulary(kept)
    else:
        kept = clip_merges_for_gadms(merges)
        tokens = base_vocabulary() + ["".join(m) for m in merges] + [BOS_TOKEN, EOS_TOKEN]
        expected = {token: index for index, token in enumerate(tokens)}
    if vocab != expected:
        differing = sorted(set(vocab.items()) ^ set(expected.items()), key=lambda kv: kv[1])[:3]
        raise ValueError(
            f"{source} does not follow CLIP's vocabulary layout (bytes, merges, <|startoftext|>, "
            f"<|endoftext|>); first differences: {differing}"
        )
    return build_tokenizer(kept)


def tokenizer_from_clip_files(vocab_file: str | Path, merges_file: str | Path) -> CLIPTokenizer:
    """[`tokenizer_from_clip_vocab`] for a transformers CLIP tokenizer's `vocab.json` and `merges.txt`."""
    with open(vocab_file, encoding="utf-8") as handle:
        vocab = json.load(handle)
    return tokenizer_from_clip_vocab(vocab, read_merges(merges_file), source=str(vocab_file))


def _apply_merges(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Byte-pair encoding of one word, as BPE engines do it: repeatedly take the adjacent pair of lowest rank and
    merge every occurrence of it, left to right."""
    while len(symbols) > 1:
        present = [(ranks[pair], pair) for pair in zip(symbols, symbols[1:]) if pair in ranks]
        if not present:
            break
        _, pair = min(present)
        merged, i = [], 0
        while i < len(symbols):
            if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
                merged.append(symbols[i] + symbols[i + 1])
                i += 2
            else:
                merged.append(symbols[i])
                i += 1
        symbols = merged
    return symbols


def merges_for_words(words: Iterable[str]) -> list[tuple[str, str]]:
    """Merges that spell each word as one token, for small offline vocabularies (tests, demos).

    Each word (lower-cased, byte-level symbols, its last symbol carrying `</w>` as in CLIP) is encoded with the
    merges so far; while it is more than one piece, a merge of its first two pieces is appended and it is encoded
    again. Appended merges rank after all earlier ones, so words handled before keep their single token. (A word
    stays split only in the rare case where the joined string is already produced by a different merge.)
    """
    byte_symbols = bytes_to_unicode()
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    produced: set[str] = set(base_vocabulary())
    for word in words:
        symbols = [byte_symbols[b] for b in word.lower().encode("utf-8")]
        if not symbols:
            continue
        symbols[-1] += END_OF_WORD
        while len(pieces := _apply_merges(symbols, ranks)) > 1:
            pair = (pieces[0], pieces[1])
            if pair in ranks or "".join(pair) in produced:
                break
            ranks[pair] = len(merges)
            merges.append(pair)
            produced.add("".join(pair))
    return merges


__all__ = [
    "BOS_TOKEN",
    "CLIP_NUM_MERGES",
    "EOS_TOKEN",
    "MASK_TOKEN",
    "base_vocabulary",
    "build_tokenizer",
    "bytes_to_unicode",
    "clip_merges_for_gadms",
    "gadms_vocabulary",
    "merges_for_words",
    "read_merges",
    "tokenizer_from_clip_files",
    "tokenizer_from_clip_vocab",
]
