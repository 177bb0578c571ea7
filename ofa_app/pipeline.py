"""Checkpoint-level helpers shared by the CLI and the examples: load, convert, score, reorder."""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from ofa import importance
from ofa.families.bert import SUPPORTED_CLASSES
from ofa.reorder import reorder_
from ofa.space import SearchSpace
from ofa.supernet import Supernet, convert

logger = logging.getLogger(__name__)

__all__ = ["load_pretrained", "text_batches", "convert_checkpoint", "find_tokenizer"]


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


def find_tokenizer(*directories: str | os.PathLike | None) -> Path | None:
    """The first of ``directories`` that holds a saved tokenizer (``tokenizer_config.json``)."""
    for directory in directories:
        if directory is not None and (Path(directory) / "tokenizer_config.json").is_file():
            return Path(directory)
    return None


def read_columns(
    csv_path: str | os.PathLike,
    columns: list[str],
    *,
    limit: int,
    source: str | None = None,
) -> dict[str, list[str]]:
    """The first ``limit`` rows' values of ``columns`` (optionally of one ``source``)."""
    path = Path(csv_path)
    if not path.is_file():
        raise FileNotFoundError(f"text CSV {path} does not exist")
    values: dict[str, list[str]] = {column: [] for column in columns}
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        for column in columns:
            if column not in (reader.fieldnames or []):
                raise ValueError(
                    f"{path} has no {column!r} column (columns: {reader.fieldnames}); name the "
                    "right one with --text-column / --label-column"
                )
        count = 0
        for row in reader:
            if count >= limit:
                break
            if source is None or row.get("source") == source:
                for column in columns:
                    values[column].append(row[column])
                count += 1
    if not values[columns[0]]:
        raise ValueError(f"{path} has no rows to read")
    return values


def read_texts(
    csv_path: str | os.PathLike,
    *,
    limit: int,
    source: str | None = None,
    text_column: str = "text",
) -> list[str]:
    """The first ``limit`` values of the ``text_column`` column (optionally of one ``source``)."""
    return read_columns(csv_path, [text_column], limit=limit, source=source)[text_column]


def label_ids(values: list[str], config: Any) -> list[int]:
    """Label cells (names in the model's ``label2id``, or integers) as the head's indices."""
    names = {str(k): int(v) for k, v in (getattr(config, "label2id", None) or {}).items()}
    num_labels = int(getattr(config, "num_labels", len(names)))
    ids = []
    for value in values:
        if value in names:
            ids.append(names[value])
            continue
        try:
            index = int(value)
        except ValueError:
            index = -1
        if not 0 <= index < num_labels:
            raise ValueError(
                f"label {value!r} is neither one of the model's label names {sorted(names)} nor "
                f"an index below its {num_labels} labels"
            )
        ids.append(index)
    return ids


def text_batches(
    texts: list[str],
    tokenizer: PreTrainedTokenizerBase,
    *,
    batch_size: int = 8,
    max_length: int = 128,
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
    text_column: str = "text",
    label_column: str | None = None,
) -> Supernet:
    """Load, convert, score and reorder a checkpoint: what ``ofa convert`` does.

    Taylor scores read ``text_column`` of ``text_csv``; with ``label_column`` the task loss on
    those labels is what they measure, otherwise the model's own predictions stand in.
    """
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
            raise ValueError(
                "taylor importance needs --text-csv and a tokenizer in the checkpoint"
            )
        columns = [text_column] + ([label_column] if label_column else [])
        rows = read_columns(text_csv, columns, limit=num_batches * batch_size)
        batches = list(text_batches(rows[text_column], tokenizer, batch_size=batch_size))
        if label_column:
            labels = torch.tensor(label_ids(rows[label_column], model.config))
            for index, batch in enumerate(batches):
                batch["labels"] = labels[index * batch_size : (index + 1) * batch_size]
    scores = importance.score(supernet, batches, metric=importance_metric)
    reorder_(supernet, scores)
    return supernet
