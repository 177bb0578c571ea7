"""Data-parallel training: ``torchrun`` with 2 CPU processes (gloo) against one process.

Run as a script by torchrun (see ``_worker``); the test launches it in a subprocess.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import safetensors.torch
import torch

HERE = Path(__file__).resolve()


def _run(out: Path, *, batch_size: int) -> None:
    """Train a tiny supernet 4 steps; every process writes its final weights."""
    sys.path.insert(0, str(HERE.parent))
    from test_train import tiny_bert, toy_data

    import ofa
    from ofa.distill import DistillConfig
    from ofa.training import PhaseConfig, TrainConfig, parallel, train_

    torch.set_num_threads(1)
    config = TrainConfig(
        phases=(
            PhaseConfig(name="width", steps=4, num_heads="all", ffn_dims="all", depths="all"),
        ),
        batch_size=batch_size,
        learning_rate=1e-3,
        distill=DistillConfig(temperature=2.0, alpha=0.5),
    )
    supernet = ofa.convert(tiny_bert(dropout=0.0))
    result = train_(
        supernet,
        teacher=tiny_bert(seed=1, dropout=0.0),
        train_data=toy_data(32),
        config=config,
        output_dir=out,
        progress=False,
    )
    rank, world = parallel.rank_and_world()
    state = {k: v.contiguous() for k, v in supernet.model.state_dict().items()}
    state.pop("bert.embeddings.position_ids", None)
    safetensors.torch.save_file(state, str(out / f"rank{rank}-of-{world}.safetensors"))
    assert result.steps == 4


def _load(path: Path) -> dict[str, torch.Tensor]:
    return safetensors.torch.load_file(str(path))


@pytest.mark.slow
def test_two_gloo_processes_agree_with_each_other_and_with_one_process(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(HERE),
        str(tmp_path / "ddp"),
        "4",
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        pytest.fail(f"torchrun failed:\n{done.stderr[-3000:]}")
    _run(tmp_path / "single", batch_size=8)  # one process, the two shards' rows in one batch
    rank0 = _load(tmp_path / "ddp" / "rank0-of-2.safetensors")
    rank1 = _load(tmp_path / "ddp" / "rank1-of-2.safetensors")
    single = _load(tmp_path / "single" / "rank0-of-1.safetensors")
    initial = ofa_initial()
    changed = 0
    for name, value in rank0.items():
        torch.testing.assert_close(rank1[name], value, rtol=0, atol=0, msg=name)
        torch.testing.assert_close(value, single[name], rtol=1e-4, atol=2e-5, msg=name)
        changed += int(not torch.equal(value, initial[name]))
    assert changed > len(rank0) // 2  # it trained
    assert (tmp_path / "ddp" / "metrics.jsonl").read_text().count("\n") == 4


def ofa_initial() -> dict[str, torch.Tensor]:
    sys.path.insert(0, str(HERE.parent))
    from test_train import tiny_bert

    return dict(tiny_bert(dropout=0.0).state_dict())


if __name__ == "__main__":
    _run(Path(sys.argv[1]), batch_size=int(sys.argv[2]))
