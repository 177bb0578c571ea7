"""The CLI on a CNN supernet: ofa train -> ofa profile -> ofa search -> ofa export, and errors."""

from __future__ import annotations

import json

import pytest
import torch

import export
import ofa
from ofa.families.cnn import default_space
from ofa_app.cli import main
from tests.ofa._cnn_nets import home_net

pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def cnn_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cnn_cli")
    teacher = home_net()
    supernet = ofa.convert(teacher, default_space(teacher, image_size=8, width_ratios=(0.5, 1.0)))
    supernet.save(root / "supernet")
    return root


def test_train_profile_search_export_on_a_cnn(cnn_dirs, capsys):
    root = cnn_dirs
    # the teacher as a plain CNN directory: the untrained supernet's max subnet
    assert (
        main(
            [
                "export",
                "--supernet",
                str(root / "supernet"),
                "--subnet",
                "max",
                "--out",
                str(root / "teacher"),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "train",
                "--supernet",
                str(root / "supernet"),
                "--teacher",
                str(root / "teacher"),
                "--data",
                "digits",
                "--steps",
                "6",
                "--batch-size",
                "32",
                "--lr",
                "2e-3",
                "--out",
                str(root / "train"),
                "--limit",
                "256",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "trained 6 steps" in out and "recalibrated) accuracy, min subnet" in out
    rows = [json.loads(r) for r in (root / "train" / "metrics.jsonl").read_text().splitlines()]
    phases = [r["phase"] for r in rows if "eval" not in r]
    assert phases[0] == "kernel" and phases[-1] == "width-all" and len(phases) == 6
    trained = root / "train" / "supernet"
    assert ofa.load_supernet(trained).family_name == "cnn"

    assert (
        main(
            [
                "profile",
                "--supernet",
                str(trained),
                "--out",
                str(root / "latency.json"),
                "--subnets",
                "6",
                "--held-out",
                "3",
                "--rounds",
                "3",
                "--threads",
                "1",
            ]
        )
        == 0
    )
    latency = json.loads((root / "latency.json").read_text())
    assert latency["target"]["image_size"] == [8, 8]
    budget = 2 * max(m["measured_ms"] for m in latency["measurements"])
    assert (
        main(
            [
                "search",
                "--supernet",
                str(trained),
                "--latency-model",
                str(root / "latency.json"),
                "--budget-ms",
                f"{budget:.4f}",
                "--trials",
                "5",
                "--data",
                "digits",
                "--examples",
                "200",
                "--out",
                str(root / "search"),
            ]
        )
        == 0
    ), capsys.readouterr().err
    pareto = json.loads((root / "search" / "pareto.json").read_text())
    assert pareto["best"]["measured_ms"] <= pareto["budget_ms"]

    assert (
        main(
            [
                "export",
                "--supernet",
                str(trained),
                "--subnet",
                "best",
                "--search",
                str(root / "search"),
                "--calibration-data",
                "digits",
                "--out",
                str(root / "small"),
            ]
        )
        == 0
    )
    small = export.load(root / "small")
    best = ofa.CnnSubnet.from_dict(pareto["best"]["subnet"])
    assert ofa.CnnSubnet.from_json((root / "small" / "subnet.json").read_text()) == best
    with torch.no_grad():
        assert small(torch.randn(2, 1, 8, 8)).shape == (2, 10)
