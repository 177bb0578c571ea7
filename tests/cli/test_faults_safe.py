"""Writes never delete what they did not write; checkpoints are hash-checked on resume; the
temporaries of a killed write are cleaned by the next write of that output; `--trials 0`
creates the study and exits 0. Real files, tiny real models, real SIGKILLs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import export
import ofa
from ofa.training.checkpoint import load_checkpoint, save_checkpoint
from tests.tiny import make_model

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def supernet():
    return ofa.convert(make_model("bert-cls"))


def _listing(directory: Path) -> dict[str, bytes]:
    return {
        p.relative_to(directory).as_posix(): p.read_bytes()
        for p in directory.rglob("*")
        if p.is_file()
    }


# 1. nothing foreign is ever deleted ------------------------------------------------------------


def test_supernet_save_refuses_a_regular_file(supernet, tmp_path):
    target = tmp_path / "sn"
    target.write_text("mine")
    with pytest.raises(FileExistsError, match="not a directory") as error:
        supernet.save(target, overwrite=True)
    assert str(target) in str(error.value) and "\n" not in str(error.value)
    assert target.read_text() == "mine"


def test_supernet_save_refuses_a_directory_it_did_not_write(supernet, tmp_path):
    target = tmp_path / "sn"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a supernet written by ofa") as error:
        supernet.save(target, overwrite=True)
    assert str(target) in str(error.value) and "\n" not in str(error.value)
    assert _listing(target) == {"notes.txt": b"keep me"}


def test_supernet_save_replaces_its_own_output_only_with_overwrite(supernet, tmp_path):
    target = tmp_path / "sn"
    supernet.save(target)
    before = _listing(target)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        supernet.save(target)
    assert _listing(target) == before
    (target / "tokenizer.json").write_text("{}")  # the CLI saves a tokenizer beside it
    supernet.save(target, overwrite=True)
    assert ofa.load_supernet(target).space == supernet.space
    (target / "notes.txt").write_text("keep me")  # ours, plus something of the user's
    with pytest.raises(FileExistsError, match="notes.txt"):
        supernet.save(target, overwrite=True)
    assert (target / "notes.txt").read_text() == "keep me"
    assert [p.name for p in tmp_path.iterdir()] == ["sn"]  # no temporary left behind


def test_export_replaces_only_an_earlier_export(supernet, tmp_path):
    subnet = supernet.space.min_subnet()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not an export written by ofa"):
        export.save(supernet, subnet, foreign, overwrite=True)
    assert _listing(foreign) == {"notes.txt": b"keep me"}
    out = tmp_path / "out"
    export.save(supernet, subnet, out)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        export.save(supernet, subnet, out)
    export.save(supernet, subnet, out, overwrite=True)
    export.load(out)
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="notes.txt"):
        export.save(supernet, subnet, out, overwrite=True)
    assert (out / "notes.txt").read_text() == "keep me"


# 3. training checkpoints are hash-checked ------------------------------------------------------


def _training_state(seed: int = 0):
    model = make_model("bert-cls", seed=seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(**{"input_ids": torch.ones(2, 8, dtype=torch.long)}).logits.sum().backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return dict(
        model=model,
        adaptor=None,
        optimizer=optimizer,
        scheduler=scheduler,
        generator=torch.Generator().manual_seed(seed),
    )


def test_checkpoint_resumes_when_intact(tmp_path):
    save_checkpoint(tmp_path / "checkpoint", **_training_state(), state={"step": 3})
    meta = json.loads((tmp_path / "checkpoint" / "state.json").read_text())
    assert set(meta["sha256"]) == {"model.safetensors", "optimizer.safetensors", "rng.safetensors"}
    assert load_checkpoint(tmp_path / "checkpoint", **_training_state(1))["step"] == 3


@pytest.mark.parametrize("damage", ["flip", "truncate"])
@pytest.mark.parametrize("name", ["model.safetensors", "optimizer.safetensors"])
def test_a_damaged_checkpoint_file_gives_one_line_naming_it_and_the_fix(tmp_path, damage, name):
    directory = tmp_path / "checkpoint"
    save_checkpoint(directory, **_training_state(), state={"step": 3})
    path = directory / name
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x01
    else:
        data = data[: len(data) // 3]
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError) as error:
        load_checkpoint(directory, **_training_state(1))
    message = str(error.value)
    assert str(path) in message and f"delete {directory}" in message and "\n" not in message


def test_an_old_checkpoint_without_hashes_still_gives_one_line_for_a_truncated_file(tmp_path):
    directory = tmp_path / "checkpoint"
    save_checkpoint(directory, **_training_state(), state={"step": 3})
    meta = json.loads((directory / "state.json").read_text())
    del meta["sha256"]
    (directory / "state.json").write_text(json.dumps(meta))
    path = directory / "optimizer.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="cannot be read") as error:
        load_checkpoint(directory, **_training_state(1))
    assert str(path) in str(error.value) and "\n" not in str(error.value)


# 4. leftovers of a killed write are cleaned by the next write of that output -------------------


def _killed_inside_atomic_dir(target: Path) -> None:
    """Run a real process that is SIGKILLed while it writes ``target`` through atomic_dir."""
    code = textwrap.dedent(
        f"""
        import time
        from ofa._io import atomic_dir
        with atomic_dir({str(target)!r}) as tmp:
            (tmp / "model.safetensors").write_bytes(b"x" * 4096)
            print("writing", flush=True)
            time.sleep(600)
        """
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout.readline().strip() == "writing"
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()


def _leftovers(directory: Path, name: str) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(f".{name}."))


def test_a_killed_checkpoint_write_is_cleaned_by_the_next_one(tmp_path):
    _killed_inside_atomic_dir(tmp_path / "checkpoint")
    (tmp_path / ".checkpoint.abc123xy.tmp").mkdir()  # an earlier version's name for one
    (tmp_path / ".checkpoint.json.abc123xy.tmp").write_text("{}")  # not ours: another file's
    (tmp_path / ".other.1-x.tmp").mkdir()  # another output's
    assert len(_leftovers(tmp_path, "checkpoint")) == 3
    save_checkpoint(tmp_path / "checkpoint", **_training_state(), state={"step": 1})
    assert _leftovers(tmp_path, "checkpoint") == [".checkpoint.json.abc123xy.tmp"]
    assert (tmp_path / ".other.1-x.tmp").is_dir()


def test_a_killed_export_is_cleaned_by_the_next_export(supernet, tmp_path):
    out = tmp_path / "OUT"
    _killed_inside_atomic_dir(out)
    assert len(_leftovers(tmp_path, "OUT")) == 1 and not out.exists()
    export.save(supernet, supernet.space.min_subnet(), out)
    assert _leftovers(tmp_path, "OUT") == []
    export.load(out)


# 5. `ofa search --trials 0` creates the study and exits 0 --------------------------------------


def test_search_with_zero_trials_creates_the_study_and_exits_0(tmp_path, capsys):
    import optuna
    from transformers import BertConfig, BertForSequenceClassification

    from ofa_app.cli import main
    from tests.search._tiny import write_reviews_csv

    write_reviews_csv(tmp_path / "reviews.csv", per_label=20, max_chars=200)
    torch.manual_seed(0)
    config = BertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=2,
    )
    ofa.convert(BertForSequenceClassification(config)).save(tmp_path / "supernet")
    assert (
        main(
            [
                "profile",
                "--supernet",
                str(tmp_path / "supernet"),
                "--out",
                str(tmp_path / "lat.json"),
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
        == 0
    )
    journal = tmp_path / "study.journal"
    code = main(
        [
            "search",
            "--supernet",
            str(tmp_path / "supernet"),
            "--latency-model",
            str(tmp_path / "lat.json"),
            "--data",
            str(tmp_path / "reviews.csv"),
            "--examples",
            "8",
            "--max-length",
            "16",
            "--budget-ms",
            "1e5",
            "--trials",
            "0",
            "--storage",
            str(journal),
            "--study-name",
            "shared",
            "--no-remeasure",
        ]
    )
    assert code == 0, capsys.readouterr().err
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(journal))
    )
    study = optuna.load_study(study_name="shared", storage=storage)
    assert "ofa_space" in study.user_attrs
    assert not [t for t in study.trials if t.state.is_finished()]
