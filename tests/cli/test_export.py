"""`ofa export` of BERT-family supernets: the search's best or a subnet file, verified; bad subnets refused."""

from __future__ import annotations

import json
import os

import pytest

import export
from ofa.space import Subnet
from ofa_app.cli import main
from tests.export.conftest import make_supernet, per_layer_subnet, vanilla_subnet
from tests.search._tiny import cpu_burners


@pytest.fixture
def saved(tmp_path):
    supernet = make_supernet()
    supernet.save(tmp_path / "supernet")
    return supernet, tmp_path / "supernet"


def _pareto(path, subnet: Subnet, *, best: bool = True) -> None:
    point = {
        "trial_number": 3,
        "subnet": subnet.to_dict(),
        "accuracy": 0.81,
        "predicted_ms": 2.1,
        "measured_ms": 2.3,
        "measured_iqr_ms": 0.1,
    }
    data = {
        "budget_ms": 3.0,
        "target": {"device": "cpu", "dtype": "float32", "batch_size": 1, "seq_len": 128},
        "best": point if best else None,
        "message": "ok" if best else "no Pareto subnet fits 3.0 ms",
        "pareto": [point],
    }  # fmt: skip
    path.write_text(json.dumps(data))


def test_cli_exports_the_search_best_and_verifies(saved, tmp_path, capsys):
    supernet, path = saved
    subnet = per_layer_subnet(supernet)
    (tmp_path / "search").mkdir()
    _pareto(tmp_path / "search" / "pareto.json", subnet)
    argv = ["export", "--supernet", str(path), "--subnet", "best", "--search",
            str(tmp_path / "search"), "--out", str(tmp_path / "out")]  # fmt: skip
    assert main(argv) == 0
    assert "verified against the supernet" in capsys.readouterr().out
    manifest = export.read_manifest(tmp_path / "out")
    assert Subnet.from_dict(manifest["subnet"]) == subnet
    assert manifest["accuracy"]["value"] == 0.81
    assert manifest["latency"]["ms"] == 2.3 and manifest["latency"]["device"] == "cpu"
    assert main(argv) == 2  # exists: refused without --overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 0


def test_cli_remeasure_times_the_subnet_beside_the_teacher_now(saved, tmp_path, capsys):
    supernet, path = saved
    subnet = supernet.space.min_subnet()
    (tmp_path / "search").mkdir()
    _pareto(tmp_path / "search" / "pareto.json", subnet)
    data = json.loads((tmp_path / "search" / "pareto.json").read_text())
    data["target"].update(seq_len=16, num_threads=1)
    data["teacher_ms"] = 9.0
    data["best"].update(speedup=1.05, speedup_low=1.0, speedup_high=1.1)  # "under load"
    (tmp_path / "search" / "pareto.json").write_text(json.dumps(data))
    argv = ["export", "--supernet", str(path), "--subnet", "best", "--search",
            str(tmp_path / "search"), "--out", str(tmp_path / "out"), "--remeasure"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    latency = export.read_manifest(tmp_path / "out")["latency"]
    low, high = latency["speedup_interval"]
    assert latency["measured"] == "side by side with the teacher, at export"
    assert latency["search_speedup"] == 1.05 and low <= latency["speedup"] <= high
    assert latency["speedup"] > 1.2  # the min subnet of this supernet, timed now
    assert latency["ms"] < latency["teacher_ms"] != 9.0 and latency["seq_len"] == 16
    assert set(latency["load"]) == {"other_cores_busy", "cores", "threads", "contended"}
    assert "measured side by side now (the search measured 1.05x)" in out
    # a subnet with no measured speedup has no target to re-measure on: one clear line
    argv = ["export", "--supernet", str(path), "--subnet", "min", "--out",
            str(tmp_path / "out2"), "--remeasure"]  # fmt: skip
    assert main(argv) == 2
    assert "--remeasure needs the latency target of a search" in capsys.readouterr().err
    assert not (tmp_path / "out2").exists()
    # on cores other jobs keep busy it refuses in one line and writes nothing
    argv = ["export", "--supernet", str(path), "--subnet", "best", "--search",
            str(tmp_path / "search"), "--out", str(tmp_path / "out3"), "--remeasure"]  # fmt: skip
    with cpu_burners(len(os.sched_getaffinity(0)), seconds=60):
        assert main(argv) == 2
    err = capsys.readouterr().err
    assert "too noisy to measure" in err and "Traceback" not in err
    assert not (tmp_path / "out3").exists()


def test_cli_accepts_a_subnet_file_and_refuses_bad_ones(saved, tmp_path, capsys):
    supernet, path = saved
    subnet_file = tmp_path / "subnet.json"
    subnet_file.write_text(vanilla_subnet(supernet).to_json())
    base = ["export", "--supernet", str(path), "--out"]
    assert main([*base, str(tmp_path / "a"), "--subnet", str(subnet_file)]) == 0
    assert export.read_manifest(tmp_path / "a")["loads_with"] == "transformers"
    outside = Subnet(layers=(0, 1), num_heads=(4, 4), ffn_dims=(64, 64), hidden_size=32)
    subnet_file.write_text(outside.to_json())
    assert main([*base, str(tmp_path / "b"), "--subnet", str(subnet_file)]) == 2
    assert "outside the search space" in capsys.readouterr().err
    _pareto(tmp_path / "pareto.json", vanilla_subnet(supernet), best=False)
    argv = [
        *base,
        str(tmp_path / "c"),
        "--subnet",
        "best",
        "--search",
        str(tmp_path / "pareto.json"),
    ]
    assert main(argv) == 2
    assert "no best subnet" in capsys.readouterr().err
    assert main([*base, str(tmp_path / "d"), "--subnet", "best"]) == 2
    assert not any((tmp_path / n).exists() for n in "bcd")
