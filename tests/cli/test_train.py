"""`ofa finetune`, `ofa convert` and `ofa train` end to end, and their one-line errors."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

import ofa


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_cli_finetune_convert_train_and_errors(tmp_path, capsys):
    import csv

    from transformers import BertTokenizerFast

    from ofa.embedded import minilm_path
    from ofa_app.cli import main

    tokenizer = BertTokenizerFast.from_pretrained(minilm_path())
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        num_labels=2,
    )
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    data = tmp_path / "reviews.csv"
    with open(data, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["review", "mood"])
        writer.writerows(
            (f"film {i} was {'good' if i % 2 else 'bad'}", "pos" if i % 2 else "neg")
            for i in range(40)
        )
    common = [
        "--data",
        str(data),
        "--text-column",
        "review",
        "--label-column",
        "mood",
        "--max-length",
        "16",
        "--batch-size",
        "8",
        "--threads",
        "1",
    ]
    assert (
        main(
            [
                "finetune",
                "--model",
                str(tmp_path / "base"),
                "--out",
                str(tmp_path / "t"),
                "--epochs",
                "1",
                *common,
            ]
        )
        == 0
    )
    assert "validation accuracy" in capsys.readouterr().out
    teacher = str(tmp_path / "t" / "model")
    assert main(["convert", "--model", teacher, "--out", str(tmp_path / "s")]) == 0

    def train_run(out: str) -> list[str]:
        return [
            "train",
            "--supernet",
            str(tmp_path / "s"),
            "--teacher",
            teacher,
            "--out",
            str(tmp_path / out),
            "--steps",
            "4",
            "--no-hidden-phases",
            *common,
        ]

    assert main(train_run("r")) == 0
    assert "min subnet" in capsys.readouterr().out
    assert ofa.load_supernet(tmp_path / "r" / "supernet").space.num_layers == 2
    # bounded at half width, with the half-width subnet trained every step
    bounded = [*train_run("r2"), "--min-width", "0.5"]
    assert (
        main([*bounded, "--width-multipliers", "0.5", "--lr", "4e-5", "--later-lr", "1e-5"]) == 0
    )
    rows = [r for r in _rows(tmp_path / "r2" / "metrics.jsonl") if "subnets" in r]
    # the multiplier is the bounded min until depth-all (2 layers: depth-large keeps both)
    assert [r["subnets"] for r in rows] == [3, 3, 3, 4]
    # one step per phase: each at its peak, the depth phases at --later-lr
    assert [r["lr"] for r in rows] == pytest.approx([4e-5, 4e-5, 1e-5, 1e-5])
    assert main([*bounded, "--width-multipliers", "2"]) == 2  # argparse's usage error
    assert "fractions in (0, 1]" in capsys.readouterr().err
    assert main([*train_run("none"), "--resume"]) == 2
    assert "nothing to resume" in capsys.readouterr().err
    assert (
        main(
            [
                "finetune",
                "--model",
                str(tmp_path / "base"),
                "--out",
                str(tmp_path / "x"),
                "--data",
                str(data),
            ]
        )
        == 2
    )
    assert "no column 'text'" in capsys.readouterr().err
