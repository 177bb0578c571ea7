"""`ofa profile` and `ofa search` end to end on a tiny real supernet and real review texts."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

import ofa
from ofa_app.cli import main
from tests.search._tiny import write_reviews_csv


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    write_reviews_csv(root / "reviews.csv", per_label=60, max_chars=300)
    torch.manual_seed(0)
    config = BertConfig(
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=2,
    )
    ofa.convert(BertForSequenceClassification(config)).save(root / "supernet")
    code = main(
        [
            "profile",
            "--supernet",
            str(root / "supernet"),
            "--out",
            str(root / "lat.json"),
            "--batch-size",
            "1",
            "--seq-len",
            "16",
            "--threads",
            "1",
            "--subnets",
            "5",
            "--held-out",
            "2",
            "--warmup",
            "1",
            "--rounds",
            "2",
        ]
    )
    assert code == 0
    return root


def _search(root, *extra: str) -> int:
    return main(
        [
            "search",
            "--supernet",
            str(root / "supernet"),
            "--latency-model",
            str(root / "lat.json"),
            "--data",
            str(root / "reviews.csv"),
            "--examples",
            "12",
            "--max-length",
            "16",
            *extra,
        ]
    )


def test_profile_then_search_writes_the_front(workspace, capsys):
    latency = json.loads((workspace / "lat.json").read_text())
    assert latency["target"]["seq_len"] == 16 and latency["method"] in ("table", "predictor")
    out = workspace / "search"
    code = _search(workspace, "--budget-ms", "1e5", "--trials", "4", "--out", str(out))
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "predicted" in printed and "best subnet" in printed
    saved = json.loads((out / "pareto.json").read_text())
    assert saved["num_trials"] == 4 and saved["best"]["measured_ms"] <= 1e5
    assert 0.0 <= saved["best"]["accuracy"] <= 1.0
    assert (out / "study.journal").is_file() and (out / "pareto.csv").is_file()


def test_search_refuses_a_budget_below_the_smallest_subnet(workspace, capsys):
    code = _search(
        workspace, "--budget-ms", "0.0001", "--trials", "1", "--out", str(workspace / "low")
    )
    error = capsys.readouterr().err
    assert code == 2
    assert "below the smallest subnet's latency" in error and "raise the budget" in error


def test_search_refuses_another_shape(workspace, capsys):
    code = _search(
        workspace, "--budget-ms", "1e5", "--seq-len", "128", "--out", str(workspace / "shape")
    )
    assert code == 2 and "run `ofa profile` with those settings" in capsys.readouterr().err


def test_budget_fraction_search_then_export_reports_the_paired_speedup(workspace, capsys):
    out = workspace / "fraction"
    code = _search(workspace, "--budget-fraction", "0.9", "--trials", "4", "--out", str(out))
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "0.9 x the teacher's" in printed and "speedup (95% interval)" in printed
    saved = json.loads((out / "pareto.json").read_text())
    best = saved["best"]
    assert saved["budget_fraction"] == 0.9 and best["share_of_teacher"] <= 0.9
    assert f"{best['speedup']:.2f}x ({best['speedup_low']:.2f}-{best['speedup_high']:.2f})" in (
        printed
    )
    exported = workspace / "fraction_export"
    code = main(
        ["export", "--supernet", str(workspace / "supernet"), "--subnet", "best", "--search",
         str(out), "--out", str(exported)]
    )  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert f"speedup over the teacher: {best['speedup']:.2f}x" in printed and "eager" in printed
    manifest = json.loads((exported / "manifest.json").read_text())
    assert manifest["latency"]["speedup"] == best["speedup"]
    assert manifest["latency"]["teacher_ms"] == saved["teacher_ms"]
