"""Data loading from local files with datasets: columns, labels, splits, padding, errors."""

from __future__ import annotations

import csv
import json
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from transformers import BertTokenizerFast  # noqa: E402

from ofa.data import load_movie_reviews, load_task, make_loader, tokenize  # noqa: E402
from ofa.embedded import minilm_path  # noqa: E402


def _write_csv(path, rows, columns=("review", "sentiment")):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def tokenizer():
    return BertTokenizerFast.from_pretrained(minilm_path())


def test_csv_with_string_labels_and_seeded_split(tmp_path):
    rows = [(f"review number {i}", "pos" if i % 2 else "neg") for i in range(40)]
    path = _write_csv(tmp_path / "r.csv", rows)
    task = load_task(path, text_column="review", label_column="sentiment", seed=3)
    assert task.label_names == ("neg", "pos")
    assert {k: len(v) for k, v in task.splits.items()} == {"test": 4, "validation": 4, "train": 32}
    again = load_task(path, text_column="review", label_column="sentiment", seed=3)
    assert again["test"]["text"] == task["test"]["text"]
    other = load_task(path, text_column="review", label_column="sentiment", seed=4)
    assert other["test"]["text"] != task["test"]["text"]
    for row in task["train"]:
        assert row["labels"] == (1 if int(row["text"].split()[-1]) % 2 else 0)


def test_json_sentence_pairs_with_int_labels_and_given_splits(tmp_path):
    def write(name, n):
        path = tmp_path / name
        path.write_text(
            "\n".join(json.dumps({"a": f"q{i}", "b": f"p{i}", "y": i % 3}) for i in range(n))
        )
        return path

    task = load_task(
        {"train": write("train.jsonl", 9), "validation": write("dev.jsonl", 3)},
        text_column="a",
        text_pair_column="b",
        label_column="y",
    )
    assert task.pair and task.num_labels == 3 and sorted(task.splits) == ["train", "validation"]
    assert task["validation"][1] == {"text": "q1", "text_pair": "p1", "labels": 1}


def test_parquet(tmp_path):
    import pandas as pd

    path = tmp_path / "d.parquet"
    pd.DataFrame(
        {"text": [f"t{i}" for i in range(20)], "label": [i % 2 for i in range(20)]}
    ).to_parquet(path)
    task = load_task(path, split_fractions=(0.25, 0.25))
    assert len(task["train"]) == 10 and task.label_names == ("0", "1")


def test_tokenize_and_dynamic_padding(tmp_path, tokenizer):
    rows = [("short", "a"), ("a much longer review with many more words in it", "b")] * 5
    task = load_task(
        _write_csv(tmp_path / "r.csv", rows),
        text_column="review",
        label_column="sentiment",
        split_fractions=(0.0, 0.0),
    )
    data = tokenize(task["train"], tokenizer, max_length=8)
    assert set(data.column_names) >= {"input_ids", "attention_mask", "labels"}
    assert max(len(ids) for ids in data["input_ids"]) == 8
    short = [i for i, ids in enumerate(data["input_ids"]) if len(ids) < 8]
    batch = next(iter(make_loader(data, tokenizer, batch_size=2, indices=short[:2])))
    assert batch["input_ids"].shape == (2, 3)  # [CLS] short [SEP]: padded to its own longest
    full = next(iter(make_loader(data, tokenizer, batch_size=4)))
    assert full["input_ids"].shape[1] == 8 and full["labels"].shape == (4,)
    assert int(full["attention_mask"].sum()) == sum(len(data[i]["input_ids"]) for i in range(4))


def test_embedded_rotten_tomatoes_split_is_fixed():
    task = load_movie_reviews()
    assert {k: len(v) for k, v in task.splits.items()} == {
        "test": 853,
        "validation": 853,
        "train": 6824,
    }
    assert task.label_names == ("0", "1")
    again = load_movie_reviews()
    assert again["validation"]["text"][:5] == task["validation"]["text"][:5]
    assert set(task["test"]["text"]).isdisjoint(task["train"]["text"][:2000])
    assert 0.4 < sum(task["train"]["labels"]) / 6824 < 0.6


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_task(tmp_path / "missing.csv")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(ValueError, match="unknown file type"):
        load_task(tmp_path / "x.txt")
    path = _write_csv(tmp_path / "r.csv", [("good", "1")] * 10)
    with pytest.raises(ValueError, match="no column 'text'"):
        load_task(path)
    with pytest.raises(ValueError, match="single value"):
        load_task(path, text_column="review", label_column="sentiment")
    mixed = tmp_path / "m.jsonl"
    mixed.write_text('{"text": "a", "label": 1}\n{"text": "b", "label": "pos"}\n')
    with pytest.raises(ValueError, match="all integers or all strings"):
        load_task(mixed)
    empty = _write_csv(tmp_path / "e.csv", [("a", "x"), ("b", "y")])
    with pytest.raises(ValueError, match="is empty"):
        load_task(empty, text_column="review", label_column="sentiment")
    with pytest.raises(ValueError, match="no rows"):
        load_task(empty, text_column="review", label_column="sentiment", where={"review": "zzz"})
    with pytest.raises(ValueError, match="unknown source"):
        load_movie_reviews("yelp")  # type: ignore[arg-type]
