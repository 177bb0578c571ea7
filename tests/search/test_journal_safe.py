"""Journal storage faults: a stale lock left by SIGKILL is taken over within seconds, the path
handed to Optuna is absolute, and a search refused for another space appends nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import optuna
import pytest

import search
from search._study import open_storage
from tests.search._tiny import neg_loss, tiny_supernet

ROOT = Path(__file__).resolve().parents[2]


def _create_and_add_a_trial(storage) -> None:
    study = optuna.create_study(storage=storage, study_name="s", load_if_exists=True)
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=1)


def test_the_journal_path_given_to_optuna_is_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    storage = open_storage("runs/study.journal", None)
    assert os.path.isabs(storage._backend._file_path)  # type: ignore[attr-defined]
    _create_and_add_a_trial(storage)
    assert not os.path.lexists(tmp_path / "runs" / "study.journal.lock")


def test_a_lock_held_by_a_sigkilled_process_is_taken_over_in_seconds(tmp_path):
    journal = tmp_path / "study.journal"
    holder = textwrap.dedent(
        f"""
        import sys, time
        from search._study import open_storage
        storage = open_storage({str(journal)!r}, None)
        storage._backend._lock.acquire()
        print("locked", flush=True)
        time.sleep(600)
        """
    )
    process = subprocess.Popen(
        [sys.executable, "-c", holder], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout.readline().strip() == "locked"
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert os.path.islink(str(journal) + ".lock")  # what the SIGKILL left
    start = time.monotonic()
    _create_and_add_a_trial(open_storage(journal, None))
    assert time.monotonic() - start < 15
    assert len(optuna.load_study(study_name="s", storage=open_storage(journal, None)).trials) == 1


@pytest.mark.parametrize("target", ["relative", "gone"])
def test_a_dangling_lock_symlink_is_recovered_in_seconds(tmp_path, target):
    journal = tmp_path / "study.journal"
    _create_and_add_a_trial(open_storage(journal, None))
    lock = Path(str(journal) + ".lock")
    # as a SIGKILLed older run left it: a relative target, or one whose journal was moved
    os.symlink("runs/study.journal" if target == "relative" else str(tmp_path / "moved"), lock)
    start = time.monotonic()
    _create_and_add_a_trial(open_storage(journal, None))
    assert time.monotonic() - start < 15
    assert not os.path.lexists(lock)
    assert len(optuna.load_study(study_name="s", storage=open_storage(journal, None)).trials) == 2


def test_a_search_refused_for_another_space_appends_nothing(latency_model, tmp_path):
    small = tiny_supernet()
    journal = tmp_path / "study.journal"
    budget = latency_model(small.space.max_subnet())
    kwargs = dict(
        evaluate=neg_loss,
        latency=latency_model,
        budget_ms=budget,
        storage=str(journal),
        study_name="shared",
        remeasure=False,
    )
    search.run(small, trials=1, **kwargs)
    study = optuna.load_study(study_name="shared", storage=open_storage(journal, None))
    other_space = {**small.space.to_dict(), "depths": [small.space.num_layers]}
    study.set_user_attr("ofa_space", other_space)  # the study now belongs to another space
    before = journal.read_bytes()
    with pytest.raises(ValueError, match="another space"):
        search.run(small, trials=1, **kwargs)
    assert journal.read_bytes() == before
