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
from ofa.families import FAMILIES, family_for
from ofa.reorder import reorder_
from ofa.supernet import Supernet, convert

logger = logging.getLogger(__name__)

__all__ = [
    "load_pretrained",
    "pretrained_classes",
    "text_batches",
    "block_batches",
    "convert_checkpoint",
    "find_tokenizer",
]

# importance metrics that run the model on calibration batches
_DATA_METRICS = ("taylor", "activation")


def pretrained_classes() -> dict[str, type[PreTrainedModel]]:
    """Every transformers class a registered family converts, by name (each family's
    ``pretrained_classes``: the BERT family's encoders, the decoders' causal LMs...)."""
    classes: dict[str, type[PreTrainedModel]] = {}
    for family in FAMILIES.values():
        classes.update(getattr(family, "pretrained_classes", {}))
    return classes


def load_pretrained(
    path: str | os.PathLike, *, attn_implementation: str | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase | None]:
    """Load a local transformers checkpoint of a supported class, and its tokenizer if present."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} is not a transformers checkpoint (no config.json)")
    config = AutoConfig.from_pretrained(path)
    classes = pretrained_classes()
    names = [a for a in (config.architectures or []) if a in classes]
    if not names:
        raise ValueError(
            f"{path} holds {config.architectures or config.model_type}, which ofa cannot convert; "
            f"supported: {', '.join(sorted(classes))}"
        )
    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    model = classes[names[0]].from_pretrained(path, **kwargs)
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


def block_batches(
    source: str | os.PathLike,
    tokenizer: PreTrainedTokenizerBase,
    *,
    num_batches: int,
    batch_size: int = 8,
    block_size: int = 128,
    text_column: str = "text",
) -> list[dict[str, torch.Tensor]]:
    """Up to ``num_batches`` batches of causal-LM token blocks from a text file (a .txt, one
    document a line, or a .csv/.json/.jsonl/.parquet ``text_column``)."""
    from ofa.data_text import load_text_blocks

    blocks = load_text_blocks(
        source,
        tokenizer,
        block_size=block_size,
        text_column=text_column,
        limit=num_batches * batch_size,
    ).with_format("torch")
    return [
        {k: blocks[start : start + batch_size][k] for k in ("input_ids", "attention_mask")}
        for start in range(0, len(blocks), batch_size)
    ]


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
    max_length: int = 128,
) -> Supernet:
    """Load, convert, score and reorder a checkpoint: what ``ofa convert`` does.

    ``space_file`` is JSON of the model family's search space. Taylor and activation scores
    read ``text_column`` of ``text_csv``: a classifier's texts one per row (truncated to
    ``max_length`` tokens; with ``label_column`` the task loss on those labels is what taylor
    measures, otherwise the model's own predictions stand in), a causal LM's packed into token
    blocks of ``max_length`` (at most its positions; ``text_csv`` may also be a .txt).
    """
    model, tokenizer = load_pretrained(path)
    family = family_for(model)
    space = None
    if space_file is not None:
        space = family.space_type.from_json(Path(space_file).read_text())
    supernet = convert(model, space, inplace=True)
    if importance_metric == "none":
        return supernet
    batches = None
    if importance_metric in _DATA_METRICS:
        if text_csv is None or tokenizer is None:
            raise ValueError(
                f"{importance_metric} importance needs --text-csv and a tokenizer in the "
                "checkpoint"
            )
    if importance_metric in _DATA_METRICS and family.language_model:
        if label_column:
            raise ValueError(
                "--label-column is for classifiers: a causal LM is scored on its next tokens"
            )
        positions = getattr(model.config, "max_position_embeddings", None)
        if isinstance(positions, int):
            max_length = min(max_length, positions)
        batches = block_batches(
            text_csv,  # type: ignore[arg-type]
            tokenizer,  # type: ignore[arg-type]
            num_batches=num_batches,
            batch_size=batch_size,
            block_size=max_length,
            text_column=text_column,
        )
    elif importance_metric in _DATA_METRICS:
        columns = [text_column] + ([label_column] if label_column else [])
        rows = read_columns(text_csv, columns, limit=num_batches * batch_size)
        batches = list(
            text_batches(
                rows[text_column],
                tokenizer,  # type: ignore[arg-type]
                batch_size=batch_size,
                max_length=max_length,
            )
        )
        if label_column:
            labels = torch.tensor(label_ids(rows[label_column], model.config))
            for index, batch in enumerate(batches):
                batch["labels"] = labels[index * batch_size : (index + 1) * batch_size]
    scores = importance.score(supernet, batches, metric=importance_metric)
    reorder_(supernet, scores)
    return supernet
