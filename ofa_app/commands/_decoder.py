"""The CLI's decoder adapter (Llama / Qwen2 / Mistral causal LMs): token blocks of a text file
for training and search (next-token accuracy), the BERT schedule's phases, and the tokenizer of
an export.

The text of ``--data`` is split by document: a seeded 10% of its documents (lines of a .txt,
rows of a table) is held out, the rest trains; each part is packed into blocks of
``--max-length`` tokens. ``ofa train`` records its split seed in the supernet's config, so
``ofa search`` scores subnets on the same held-out documents whatever block size it reads.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path
from typing import Any

from ofa_app.commands._bert import transformer_phases
from ofa_app.commands._families import refuse_foreign_flags, register_family

__all__ = ["DecoderApp"]

HELD_OUT = 0.1  # share of the documents held out for validation and search
SPLIT_SEED = "ofa_heldout_seed"  # model-config attribute: the seed ofa train split the data with
_NOT_TEXT = ("rotten_tomatoes", "imdb", "digits", "fashion-mnist")  # the demos' data sets


class DecoderApp:
    name = "decoder"
    title = "decoder (causal LM)"
    flags = {
        "train": (
            ("tokenizer", "--tokenizer"),
            ("no_hidden_phases", "--no-hidden-phases"),
            ("hidden_weight", "--hidden-weight"),
            ("width_multipliers", "--width-multipliers"),
            ("later_lr", "--later-lr"),
        ),
        "export": (
            ("tokenizer", "--tokenizer"),
            ("seq_len", "--seq-len"),
        ),
    }
    hints = {
        "train": "a decoder trains on token blocks of --data FILE, distilled per token",
        "export": "2:4 sparsity and its fine-tune are not offered for decoders yet",
    }

    def train_inputs(self, args: argparse.Namespace, supernet: Any) -> tuple[Any, ...]:
        refuse_foreign_flags(args, "train", self)
        return _decoder_inputs(args, supernet)

    def default_phases(self, args: argparse.Namespace, supernet: Any) -> tuple[Any, ...]:
        return transformer_phases(args)

    def search_data(self, args: argparse.Namespace, supernet: Any) -> tuple[Any, None]:
        from ofa_app.commands.train import check_max_length

        _check_lm_head(supernet.model, f"--supernet {args.supernet}")
        path = _text_file(args.data, "is scored on")
        if args.examples < 1:
            raise ValueError(f"--examples must be positive, got {args.examples}")
        check_max_length(args, supernet.model.config)
        tokenizer = _tokenizer(args.tokenizer, (args.supernet,), supernet)
        seed = getattr(supernet.model.config, SPLIT_SEED, 0)
        train, held_out = _split(path, args.text_column, seed=int(seed))
        part = train if args.split == "train" else held_out
        blocks = _blocks(part, tokenizer, args, "train" if args.split == "train" else "held-out")
        return blocks.select(range(min(args.examples, len(blocks)))), None

    def export_options(
        self, args: argparse.Namespace, supernet: Any
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        from ofa_app.commands._bert import _export_tokenizer

        refuse_foreign_flags(args, "export", self)
        return {"seq_len": args.seq_len}, {"tokenizer": _export_tokenizer(args)}


def _text_file(data: str | None, verb: str) -> Path:
    """``--data`` as a text file, or one line saying what a decoder needs."""
    need = (
        f"a decoder supernet {verb} text: give --data FILE (.txt, one document a line, or "
        ".csv/.json/.jsonl/.parquet with --text-column)"
    )
    if data is None:
        raise ValueError(need)
    if data in _NOT_TEXT:
        raise ValueError(f"{need}, not the demo data set {data!r}")
    path = Path(data)
    if not path.is_file():
        raise FileNotFoundError(f"--data {data} does not exist: {need}")
    return path


def _check_lm_head(model: Any, what: str) -> None:
    if model.get_output_embeddings() is None:
        raise ValueError(
            f"{what} is a bare {type(model).__name__}: next-token accuracy needs the LM head; "
            "convert the ...ForCausalLM model (e.g. LlamaForCausalLM)"
        )


def _tokenizer(given: str | None, fallbacks: tuple[str | None, ...], supernet: Any) -> Any:
    """``given`` (a tokenizer directory), else the first of ``fallbacks`` holding one; it
    must not have more tokens than the supernet's vocabulary."""
    from transformers import AutoTokenizer

    from ofa_app.pipeline import find_tokenizer

    if given and find_tokenizer(given) is None:
        raise FileNotFoundError(
            f"--tokenizer {given} holds no tokenizer (no tokenizer_config.json)"
        )
    directory = given or find_tokenizer(*fallbacks)
    if directory is None:
        raise ValueError(
            "give --tokenizer DIR: neither the teacher nor the supernet directory holds a "
            "tokenizer (tokenizer_config.json)"
        )
    tokenizer = AutoTokenizer.from_pretrained(directory)
    vocab = int(supernet.model.config.vocab_size)
    if len(tokenizer) > vocab:
        raise ValueError(
            f"the tokenizer of {directory} has {len(tokenizer)} tokens, the supernet's "
            f"vocabulary {vocab}: give the tokenizer the model was trained with (--tokenizer)"
        )
    return tokenizer


def _split(path: Path, text_column: str, *, seed: int) -> tuple[list[str], list[str]]:
    """The documents of ``path`` in two parts, in file order: training, and a seeded
    ``HELD_OUT`` share (at least one document)."""
    from ofa.data_text import read_documents

    texts = read_documents(path, text_column)
    if len(texts) < 2:
        raise ValueError(
            f"--data {path} holds {len(texts)} document: a held-out share needs at least 2 "
            "(one a line in a .txt)"
        )
    count = max(1, round(HELD_OUT * len(texts)))
    held = set(random.Random(seed).sample(range(len(texts)), count))
    train = [t for i, t in enumerate(texts) if i not in held]
    held_out = [t for i, t in enumerate(texts) if i in held]
    return train, held_out


def _blocks(texts: list[str], tokenizer: Any, args: argparse.Namespace, part: str) -> Any:
    from ofa.data_text import load_text_blocks

    try:
        blocks = load_text_blocks(texts, tokenizer, block_size=args.max_length)
    except ValueError as error:
        message = str(error).replace("a smaller block_size", "a smaller --max-length")
        raise ValueError(f"--data {args.data}, its {part} documents: {message}") from None
    limit = getattr(args, "limit", None)  # ofa train's; search reads --examples blocks
    if limit is not None:
        blocks = blocks.select(range(min(limit, len(blocks))))
    return blocks


def _decoder_inputs(
    args: argparse.Namespace, supernet: Any
) -> tuple[Any, Any, Any, None, str, Any]:
    """Teacher, training and held-out token blocks, no calibration, the report's label and the
    tokenizer; the split's seed goes into the supernet's config (for ofa search)."""
    import torch

    from ofa.families import family_for
    from ofa_app.commands.train import check_max_length
    from ofa_app.pipeline import load_pretrained

    path = _text_file(args.data, "trains on")
    _check_lm_head(supernet.model, f"--supernet {args.supernet}")
    check_max_length(args, supernet.model.config)
    if args.threads:
        torch.set_num_threads(args.threads)
    teacher = None
    if args.teacher:
        teacher = load_pretrained(args.teacher)[0]
        if family_for(teacher).name != supernet.family_name:
            raise ValueError(
                f"--teacher {args.teacher} is a {type(teacher).__name__}, not a causal LM: give "
                "the checkpoint the supernet was converted from"
            )
        _check_lm_head(teacher, f"--teacher {args.teacher}")
        if teacher.config.vocab_size != supernet.model.config.vocab_size:
            raise ValueError(
                f"--teacher {args.teacher} has a vocabulary of {teacher.config.vocab_size} "
                f"tokens, the supernet {supernet.model.config.vocab_size}: give the checkpoint "
                "the supernet was converted from"
            )
    tokenizer = _tokenizer(args.tokenizer, (args.teacher, args.supernet), supernet)
    train_texts, held_texts = _split(path, args.text_column, seed=args.seed)
    train = _blocks(train_texts, tokenizer, args, "training")
    validation = _blocks(held_texts, tokenizer, args, "held-out")
    setattr(supernet.model.config, SPLIT_SEED, args.seed)
    return teacher, train, validation, None, "held-out next-token", tokenizer


register_family(DecoderApp())
