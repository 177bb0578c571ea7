"""Fault tests: SIGKILL mid-stage, then continue; nothing lost beyond the last checkpoint.

Both for one process and for ``ofa train`` launched by ``torchrun`` with two gloo ranks.

(SIGKILL during export: tests/export/test_isolated.py. Two search workers sharing one study:
tests/search/test_search_storage.py.)
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import safetensors.torch
import torch
from transformers import BertConfig, BertForSequenceClassification

import ofa
from ofa_app.cli import main

try:
    from transformers import BertTokenizerFast

    from ofa.embedded import minilm_path

    TOKENIZER = BertTokenizerFast.from_pretrained(minilm_path())
except (FileNotFoundError, OSError) as error:
    pytest.skip(
        f"the embedded MiniLM tokenizer is not installed ({error})", allow_module_level=True
    )

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def run_files(tmp_path_factory):
    directory = tmp_path_factory.mktemp("faults")
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=TOKENIZER.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        num_labels=2,
    )
    BertForSequenceClassification(config).save_pretrained(directory / "teacher")
    TOKENIZER.save_pretrained(directory / "teacher")
    with open(directory / "reviews.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows((f"film {i} was {'good' if i % 2 else 'bad'}", i % 2) for i in range(64))
    assert (
        main(
            [
                "convert",
                "--model",
                str(directory / "teacher"),
                "--out",
                str(directory / "supernet"),
                "--importance",
                "l1",
            ]
        )
        == 0
    )
    return directory


def _train_argv(files: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train",
        "--supernet",
        str(files / "supernet"),
        "--teacher",
        str(files / "teacher"),
        "--out",
        str(out),
        "--data",
        str(files / "reviews.csv"),
        "--steps",
        "12",
        "--checkpoint-every",
        "3",
        "--batch-size",
        "8",
        "--max-length",
        "16",
        "--threads",
        "1",
        "--seed",
        "3",
        *extra,
    ]


def _wait_for(predicate, *, timeout: float, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if process.poll() is not None:
            pytest.fail(f"process ended early: {process.stderr.read() if process.stderr else ''}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("timed out waiting for the run to reach the kill point")
        time.sleep(0.05)


def _losses(out: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {row["step"]: row["loss"] for row in rows if "loss" in row}


def _assert_resumed_like(resumed: Path, straight: Path, saved_step: int, *, steps: int) -> None:
    """Every step after the checkpoint logged once, with the uninterrupted run's loss and weights."""
    after = {s: v for s, v in _losses(resumed).items() if s > saved_step}
    assert sorted(after) == list(range(saved_step + 1, steps + 1))
    assert all(after[s] == pytest.approx(_losses(straight)[s], abs=1e-6) for s in after)
    weights = safetensors.torch.load_file(resumed / "supernet" / "model.safetensors")
    reference = safetensors.torch.load_file(straight / "supernet" / "model.safetensors")
    for name, tensor in reference.items():
        torch.testing.assert_close(weights[name], tensor, atol=1e-6, rtol=0)


def test_sigkill_during_train_then_resume_matches_an_uninterrupted_run(run_files, tmp_path):
    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "ofa_app.cli", *_train_argv(run_files, killed)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    checkpoint_state = killed / "checkpoint" / "state.json"
    _wait_for(
        lambda: checkpoint_state.exists() and len(_losses(killed)) >= 4,
        timeout=600,
        process=process,
    )
    process.send_signal(signal.SIGKILL)
    process.wait()
    saved_step = json.loads(checkpoint_state.read_text())["step"]
    assert 3 <= saved_step < 12
    assert not (killed / "supernet").exists()  # no half-written final output
    leftovers = [p.name for p in killed.iterdir() if p.name.startswith(".")]
    assert all(name.endswith(".tmp") or ".tmp" in name for name in leftovers)

    assert main(_train_argv(run_files, killed, "--resume")) == 0
    straight = tmp_path / "straight"
    assert main(_train_argv(run_files, straight)) == 0
    _assert_resumed_like(killed, straight, saved_step, steps=12)
    assert (
        ofa.load_supernet(killed / "supernet").space
        == ofa.load_supernet(straight / "supernet").space
    )


def _torchrun(*argv: str, env: dict[str, str]) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "ofa_app.cli",
        *argv,
    ]
    return subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux /proc), children first found."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


LONGER = ("--steps", "40")  # long enough to be killed midway (argparse keeps the last value)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds torchrun's ranks in /proc")
def test_ofa_train_under_torchrun_killed_and_resumed_matches_an_uninterrupted_run(
    run_files, tmp_path
):
    """The documented launch: two gloo ranks, the whole group SIGKILLed, resumed by torchrun."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    straight = tmp_path / "straight"
    process = _torchrun(*_train_argv(run_files, straight, *LONGER), env=env)
    stdout, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr[-3000:]
    assert stdout.count("trained 40 steps") == 1  # rank 0 alone reports and saves
    assert sorted(_losses(straight)) == list(range(1, 41))  # one metrics row per step
    state = json.loads((straight / "checkpoint" / "state.json").read_text())
    assert state["world_size"] == 2

    killed = tmp_path / "killed"
    process = _torchrun(*_train_argv(run_files, killed, *LONGER), env=env)
    checkpoint_state = killed / "checkpoint" / "state.json"
    _wait_for(
        lambda: checkpoint_state.exists() and len(_losses(killed)) >= 4,
        timeout=600,
        process=process,
    )
    for pid in _descendants(process.pid):  # the ranks: torchrun gives each its own session
        os.kill(pid, signal.SIGKILL)
    os.killpg(process.pid, signal.SIGKILL)  # and the launcher, as a preemption does
    process.communicate()
    saved_step = json.loads(checkpoint_state.read_text())["step"]
    assert 3 <= saved_step < 40
    assert not (killed / "supernet").exists()

    process = _torchrun(*_train_argv(run_files, killed, *LONGER, "--resume"), env=env)
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr[-3000:]
    _assert_resumed_like(killed, straight, saved_step, steps=40)
