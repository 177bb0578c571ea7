"""benchmarks/gpu_check.py: the CPU dry run records every part, so the GPU check cannot rot.

The dry run (tiny BERT, CPU, float32) runs in the normal suite; the real run needs CUDA and is
marked ``gpu`` (tests/conftest.py skips it without a device).
"""

from __future__ import annotations

import importlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
PARTS = (
    "a_latency_model",
    "b_search_budget",
    "c_speedup_vs_flops",
    "d_sparsity_2_4",
    "e_train_step",
)


def run_check(out: Path, *args: str, timeout: float) -> tuple[subprocess.CompletedProcess, dict]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("OUT", None)
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *args, "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert out.exists(), f"no JSON written (rc {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc, json.loads(out.read_text())


def numbers(value: Any, path: str = "") -> list[tuple[str, float]]:
    """Every number in a JSON value, with where it is."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return []
    if isinstance(value, (int, float)):
        return [(path, float(value))]
    if isinstance(value, dict):
        return [n for k, v in value.items() for n in numbers(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [n for i, v in enumerate(value) for n in numbers(v, f"{path}[{i}]")]
    raise AssertionError(f"{path}: unexpected JSON type {type(value).__name__}")


def check_common(data: dict, mode: str) -> None:
    meta = data["meta"]
    assert meta["mode"] == mode
    for key in ("date", "device_name", "torch", "transformers", "model", "command"):
        assert meta[key], key
    assert set(PARTS) <= set(data["parts"])
    for name in PARTS:
        part = data["parts"][name]
        assert part["status"] in ("ok", "skipped"), (
            name,
            part.get("error"),
            part.get("traceback"),
        )
        if part["status"] == "skipped":
            assert part["reason"], name
        else:  # figures beside the bookkeeping
            assert set(part) - {"status", "seconds", "notes"}, name
    bad = [(where, x) for where, x in numbers(data) if not math.isfinite(x)]
    assert not bad, bad
    assert len(data["summary"]) == len(PARTS)
    assert data["total_seconds"] >= 0


def test_dry_run_records_every_part(tmp_path):
    out = tmp_path / "gpu_check.json"
    proc, data = run_check(out, "--dry-run", timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    check_common(data, "dry-run")
    assert data["total_seconds"] < 60
    parts = data["parts"]

    latency = parts["a_latency_model"]["per_dtype"]["float32"]
    assert 0 <= latency["held_out_error"] < 10
    assert latency["min_subnet_ms"] > 0 and latency["max_subnet_ms"] > 0
    assert isinstance(latency["met"], bool)

    found = parts["b_search_budget"]
    assert found["budget_ms"] > 0 and found["trials"] >= 1
    assert isinstance(found["fits"], bool)
    if found["best"] is not None:
        assert found["paired"]["best_over_max"] > 0

    speed = parts["c_speedup_vs_flops"]
    batches = {row["batch"] for row in speed["rows"]}
    assert batches == set(data["settings"]["speed_batches"])
    subnets = [row for row in speed["rows"] if row["subnet"] != "full"]
    assert subnets and all(r["speedup"] > 0 and r["flop_reduction"] >= 1 for r in subnets)
    assert {r["subnet"] for r in subnets} >= {"half depth", "half width (heads, FFN)"}

    sparse = parts["d_sparsity_2_4"]
    assert sparse["status"] == "skipped" and "CUDA" in sparse["reason"]
    assert sparse["models"][0]["masks_are_2_4"] is True
    assert sparse["models"][0]["layers"] > 0

    train = parts["e_train_step"]
    assert train["ratio"] > 0 and train["original_ms"] > 0
    assert train["max_subnet_logit_max_abs_diff"] < 1e-4

    assert "figures:" in proc.stdout and "a. a_latency_model" in proc.stdout
    module = importlib.import_module("benchmarks.gpu_check")
    text = module.render_markdown(data)
    assert "Latency model" in text and "Exported subnets" in text


def test_time_budget_skips_parts_with_a_note(tmp_path):
    out = tmp_path / "gpu_check.json"
    proc, data = run_check(out, "--dry-run", "--max-seconds", "0", timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    check_common(data, "dry-run")
    for name in PARTS:
        assert data["parts"][name]["status"] == "skipped"
        assert "time budget" in data["parts"][name]["reason"]


@pytest.mark.gpu
@pytest.mark.slow
def test_real_run_on_cuda(tmp_path):
    out = tmp_path / "gpu_check.json"
    proc, data = run_check(out, timeout=480)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    check_common(data, "real")
    assert data["meta"]["gpu"]["name"]
    assert data["total_seconds"] < 360
    for dtype in ("bfloat16", "float16"):
        assert "held_out_error" in data["parts"]["a_latency_model"]["per_dtype"][dtype]
    sparse = data["parts"]["d_sparsity_2_4"]
    assert sparse["status"] == "ok"
    assert all("batches" in model for model in sparse["models"]), sparse["models"]
