"""examples/cnn_quickstart.py end to end, as a user runs it: train, search, export, reload."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytest.importorskip("sklearn")
ROOT = Path(__file__).resolve().parents[2]


def test_cnn_quickstart_example_runs_the_whole_loop(tmp_path):
    out = Path(tempfile.mkdtemp(dir=tmp_path))  # a try of its own, if the host makes one again
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "cnn_quickstart.py"),
            "--out",
            str(out),
            "--steps",
            "10",
            "--trials",
            "6",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert any(line.startswith("teacher accuracy") for line in lines)
    exported = [line for line in lines if line.startswith("exported to")]
    assert exported and "reloaded without ofa" in exported[0]
    pareto = json.loads((out / "search" / "pareto.json").read_text())
    assert pareto["best"]["measured_ms"] <= pareto["budget_ms"]
    manifest = json.loads((out / "small" / "manifest.json").read_text())
    assert manifest["family"] == "cnn" and manifest["subnet"] == pareto["best"]["subnet"]
    rows = [json.loads(r) for r in (out / "train" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 10 and any("eval" in r for r in rows)
