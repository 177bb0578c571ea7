"""``ofa convert`` and the CLI's error contract (exit 2, one line, no traceback)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

import ofa
from ofa_app.cli import main
from tests.tiny import make_inputs, make_model


@pytest.fixture()
def checkpoint(tmp_path):
    model = make_model("bert-cls")
    model.save_pretrained(tmp_path / "bert")
    return model, tmp_path / "bert"


def test_convert_writes_a_reordered_supernet(checkpoint, tmp_path):
    model, path = checkpoint
    assert (
        main(
            ["convert", "--model", str(path), "--out", str(tmp_path / "sn"), "--importance", "l2"]
        )
        == 0
    )
    supernet = ofa.load_supernet(tmp_path / "sn")
    inputs = make_inputs()
    with torch.no_grad():
        diff = (supernet(**inputs).logits - model(**inputs).logits).abs().max().item()
    assert diff <= 1e-5
    head = supernet.model.bert.encoder.layer[0].attention.self.query.weight
    assert not torch.equal(head, model.bert.encoder.layer[0].attention.self.query.weight)


def test_config_file_is_equivalent_to_flags(checkpoint, tmp_path):
    _, path = checkpoint
    config = tmp_path / "convert.json"
    config.write_text(
        json.dumps({"model": str(path), "out": str(tmp_path / "sn"), "importance": "none"})
    )
    assert main(["convert", "--config", str(config)]) == 0
    assert (tmp_path / "sn" / "supernet.json").exists()
    config.write_text(json.dumps({"modle": "x"}))
    assert main(["convert", "--config", str(config)]) == 2


def test_bad_input_exits_2_with_one_line(checkpoint, tmp_path, capsys):
    _, path = checkpoint
    (tmp_path / "taken").mkdir()
    cases = [
        (
            ["convert", "--model", str(tmp_path / "missing"), "--out", str(tmp_path / "a")],
            "is not a transformers checkpoint",
        ),
        (["convert", "--model", str(path), "--out", str(tmp_path / "taken")], "--overwrite"),
        (
            [
                "convert",
                "--model",
                str(path),
                "--out",
                str(tmp_path / "b"),
                "--importance",
                "taylor",
            ],
            "taylor importance needs --text-csv",
        ),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        ours = [line for line in capsys.readouterr().err.splitlines() if line.startswith("ofa")]
        assert len(ours) == 1 and message in ours[0] and ours[0].startswith("ofa convert: error:")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_real_process_prints_no_traceback(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ofa_app.cli",
            "convert",
            "--model",
            str(tmp_path / "nope"),
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().endswith("(no config.json)")
