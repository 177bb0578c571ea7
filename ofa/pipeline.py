"""Checkpoint-level helpers shared by the CLI and the examples: load, convert, score, reorder."""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import torch
from transformers import AutoConfig, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from ofa import importance
from ofa.convert.bert import SUPPORTED_CLASSES
from ofa.reorder import reorder_
from ofa.space import SearchSpace
from ofa.supernet import Supernet, convert

logger = logging.getLogger(__name__)

__all__ = ["load_pretrained", "text_batches", "convert_checkpoint"]


def load_pretrained(
    path: str | os.PathLike, *, attn_implementation: str | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase | None]:
    """Load a local transformers checkpoint of a supported class, and its tokenizer if present."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} is not a transformers checkpoint (no config.json)")
    config = AutoConfig.from_pretrained(path)
    names = [a for a in (config.architectures or []) if a in SUPPORTED_CLASSES]
    if not names:
        raise ValueError(
            f"{path} holds {config.architectures or config.model_type}, which ofa cannot convert; "
            f"supported: {', '.join(sorted(SUPPORTED_CLASSES))}"
        )
    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    model = SUPPORTED_CLASSES[names[0]].from_pretrained(path, **kwargs)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError):
        tokenizer = None
    return model, tokenizer


def read_texts(csv_path: str | os.PathLike, *, limit: int, source: str | None = None) -> list[str]:
    """The first ``limit`` values of the ``text`` column (optionally of one ``source``)."""
    path = Path(csv_path)
    if not path.is_file():
        raise FileNotFoundError(f"text CSV {path} does not exist")
    texts = []
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        if "text" not in (reader.fieldnames or []):
            raise ValueError(f"{path} has no 'text' column (columns: {reader.fieldnames})")
        for row in reader:
            if source is None or row.get("source") == source:
                texts.append(row["text"])
            if len(texts) >= limit:
                break
    if not texts:
        raise ValueError(f"{path} has no rows to read")
    return texts


def text_batches(
    texts: list[str], tokenizer: PreTrainedTokenizerBase, *, batch_size: int = 8, max_length: int = 128
) -> Iterator[dict[str, torch.Tensor]]:
    for start in range(0, len(texts), batch_size):
        yield dict(
            tokenizer(
                texts[start : start + batch_size],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            )
        )


def convert_checkpoint(
    path: str | os.PathLike,
    *,
    space_file: str | os.PathLike | None = None,
    importance_metric: str = "l1",
    text_csv: str | os.PathLike | None = None,
    num_batches: int = 8,
    batch_size: int = 8,
) -> Supernet:
    """Load, convert, score and reorder a checkpoint: what ``ofa convert`` does."""
    model, tokenizer = load_pretrained(path)
    space = None
    if space_file is not None:
        space = SearchSpace.from_json(Path(space_file).read_text())
    supernet = convert(model, space, inplace=True)
    if importance_metric == "none":
        return supernet
    batches = None
    if importance_metric == "taylor":
        if text_csv is None or tokenizer is None:
            raise ValueError("taylor importance needs --text-csv and a tokenizer in the checkpoint")
        texts = read_texts(text_csv, limit=num_batches * batch_size)
        batches = list(text_batches(texts, tokenizer, batch_size=batch_size))
    scores = importance.score(supernet, batches, metric=importance_metric)
    reorder_(supernet, scores)
    return supernet
