"""The CLI on a CNN supernet: ofa train -> ofa profile -> ofa search -> ofa export, and errors."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
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


def _export_max(supernet_dir: Path, out: Path) -> None:
    """The teacher as a plain CNN directory: the supernet's max subnet, exported by the CLI."""
    assert (
        main(["export", "--supernet", str(supernet_dir), "--subnet", "max", "--out", str(out)])
        == 0
    )


def test_train_profile_search_export_on_a_cnn(cnn_dirs, capsys):
    supernet_dir = cnn_dirs / "supernet"
    root = Path(tempfile.mkdtemp(dir=cnn_dirs))  # its own, where a noisy host runs it again
    # the teacher as a plain CNN directory: the untrained supernet's max subnet
    _export_max(supernet_dir, root / "teacher")
    # an anchor: a non-uniform shape, trained every step of the phase that holds it
    space = ofa.load_supernet(supernet_dir).space
    widths = tuple(c[0] if i % 2 else c[-1] for i, c in enumerate(space.channel_choices))
    anchor = ofa.CnnSubnet(
        widths=widths,
        depths=space.min_subnet().depths,
        kernel_sizes=space.max_subnet().kernel_sizes,
    )
    (root / "anchors.json").write_text(json.dumps([anchor.to_dict()]))
    assert (
        main(
            [
                "train",
                "--supernet",
                str(supernet_dir),
                "--anchors",
                str(root / "anchors.json"),
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
    counts = {(r["phase"], r["subnets"]) for r in rows if "eval" not in r}
    assert ("width-all", 4) in counts and ("kernel", 3) in counts  # + the anchor where held
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


# The CNN export tests' supernet (tests/export/test_cnn_export.py), for the export CLI
X = torch.randn(4, 1, 16, 16, generator=torch.Generator().manual_seed(7))


@pytest.fixture(scope="module")
def export_supernet() -> ofa.Supernet:
    net = home_net()
    return ofa.convert(net, default_space(net, image_size=16)).eval()


@pytest.fixture(scope="module")
def export_subnets(export_supernet) -> list:
    generator = torch.Generator().manual_seed(3)
    space = export_supernet.space
    return [space.min_subnet(), space.sample(generator), space.sample(generator)]


def _supernet_output(supernet: ofa.Supernet, subnet, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad(), supernet.using(subnet):
        return supernet.eval()(x)


def test_cli_exports_a_cnn_supernet(export_supernet, export_subnets, saved, tmp_path, capsys):
    subnet_file = tmp_path / "subnet.json"
    subnet_file.write_text(export_subnets[1].to_json())
    argv = ["export", "--supernet", str(saved), "--subnet", str(subnet_file),
            "--out", str(tmp_path / "out")]  # fmt: skip
    assert main(argv) == 0
    assert "verified against the supernet" in capsys.readouterr().out
    with torch.no_grad():
        got = export.load(tmp_path / "out")(X)
    torch.testing.assert_close(
        got, _supernet_output(export_supernet, export_subnets[1], X), atol=1e-5, rtol=0
    )
    images = tmp_path / "images.npy"
    np.save(images, torch.randn(40, 1, 16, 16).numpy())
    calibrate = ["--calibration-data", str(images), "--batch-size", "8", "--overwrite"]
    assert main([*argv, *calibrate, "--calibration-batches", "3"]) == 0
    assert "calibrated extracted model" in capsys.readouterr().out
    assert export.read_manifest(tmp_path / "out")["calibration"]["batches"] == 3


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--subnet", "min", "--tokenizer", "bert-dir"], "--tokenizer: only for BERT"),
        (["--subnet", "min", "--sparsity", "2:4"], "--sparsity 2:4: only for BERT"),
        (["--subnet", '{"layers": [0], "num_heads": [4]}'], "unknown CnnSubnet fields"),
        (["--subnet", '{"widths": [1]}'], "outside"),
        (["--subnet", "min", "--calibration-data", "nothing.npy"], "nothing.npy is not digits"),
    ],
    ids=["tokenizer", "sparsity", "bert-subnet", "bad-widths", "missing-images"],
)
def test_cli_bad_input_exits_2_with_one_line(saved, tmp_path, capsys, extra, message):
    argv = ["export", "--supernet", str(saved), "--out", str(tmp_path / "out"), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def saved(export_supernet, tmp_path_factory):
    path = tmp_path_factory.mktemp("cnn") / "supernet"
    export_supernet.save(path)
    return path


def _assert_trains(run: Path, expected: Any) -> None:
    """Every phase of the training run in ``run`` trains ``expected``'s shapes (BudgetShapes)."""
    state = json.loads((run / "checkpoint" / "state.json").read_text())
    phases = [ofa.PhaseConfig.from_dict(p) for p in state["config"]["phases"]]
    assert all(p.width_multipliers == expected.width_multipliers for p in phases)
    assert all(p.anchors == expected.anchors for p in phases)
    assert expected.width_multipliers or expected.anchors


def test_flop_budgets_train_the_multiplier_or_anchor_that_fits_each(cnn_dirs, capsys):
    supernet_dir = cnn_dirs / "supernet"
    root = Path(tempfile.mkdtemp(dir=cnn_dirs))
    _export_max(supernet_dir, root / "t")
    supernet = ofa.load_supernet(supernet_dir)
    expected = ofa.budget_shapes(supernet, (0.5, 0.2))
    argv = [
        "train",
        "--supernet",
        str(supernet_dir),
        "--flop-budgets",
        "0.5,0.2",
        "--teacher",
        str(root / "t"),
        "--data",
        "digits",
        "--steps",
        "6",
        "--batch-size",
        "32",
        "--out",
        str(root / "train"),
        "--limit",
        "256",
    ]
    assert main(argv) == 0
    _assert_trains(root / "train", expected)
    # with --anchors-everywhere every phase trains the anchors, and the saved supernet names
    # the shapes its last phase trained every step (the search's first seeds)
    assert expected.anchors, "0.2 of the FLOPs should need an anchor"
    everywhere = root / "everywhere"
    assert (
        main([*argv[:-4], "--out", str(everywhere), "--limit", "256", "--anchors-everywhere"]) == 0
    )
    _assert_trains(everywhere, expected)
    state = json.loads((everywhere / "checkpoint" / "state.json").read_text())
    assert all(p["anchors_everywhere"] for p in state["config"]["phases"])
    trained = ofa.load_supernet(everywhere / "supernet").trained_subnets
    assert set(expected.anchors) <= set(trained)


def test_latency_budgets_train_the_shapes_predicted_under_each(cnn_dirs, capsys):
    """The untrained supernet's profile serves (latency depends on shapes only): the phases
    train the multipliers or anchors that budget_shapes finds under the predicted latency."""
    from search import LatencyModel

    supernet_dir = cnn_dirs / "supernet"
    root = Path(tempfile.mkdtemp(dir=cnn_dirs))
    _export_max(supernet_dir, root / "t")
    profile = ["profile", "--supernet", str(supernet_dir), "--out", str(root / "latency.json")]
    assert (
        main([*profile, "--subnets", "6", "--held-out", "3", "--rounds", "3", "--threads", "1"])
        == 0
    )
    supernet = ofa.load_supernet(supernet_dir)
    latency = LatencyModel.load(root / "latency.json", space=supernet.space)
    expected = ofa.budget_shapes(supernet, (0.7, 0.4), cost=latency, what="latency")
    argv = [
        "train", "--supernet", str(supernet_dir), "--latency-budgets", "0.7,0.4",
        "--latency-model", str(root / "latency.json"), "--teacher", str(root / "t"),
        "--data", "digits", "--steps", "6", "--batch-size", "32", "--out", str(root / "train"),
        "--limit", "256",
    ]  # fmt: skip
    assert main(argv) == 0
    _assert_trains(root / "train", expected)
    capsys.readouterr()
    without = [a for a in argv if a not in ("--latency-model", str(root / "latency.json"))]
    assert main(without) == 2  # refused before anything is written
    assert "--latency-budgets and --latency-model go together" in capsys.readouterr().err
