"""A search worker SIGKILLed mid-trial: the study goes on, the killed trial ends FAIL, no number
is used twice and no finished trial is lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

import search
from tests.search._tiny import neg_loss

ROOT = Path(__file__).resolve().parents[2]
WORKER = """
import sys, time
from pathlib import Path
import ofa, search
from tests.search._tiny import neg_loss

marker = Path(sys.argv[5])

def evaluate(supernet, subnet):
    if sys.argv[6] == "slow":
        marker.write_text("in a trial")
        time.sleep(120)  # killed here, mid-trial
    time.sleep(2.0)  # the steady worker is still running when the other one is killed
    return neg_loss(supernet, subnet)

supernet = ofa.load_supernet(sys.argv[1])
latency = search.LatencyModel.load(sys.argv[2])
search.run(supernet, evaluate=evaluate, latency=latency, budget_ms=float(sys.argv[3]),
           trials=int(sys.argv[4]), storage=str(marker.parent / "study.journal"),
           study_name="faults", seed=len(sys.argv[6]), remeasure=False)
"""


def _worker(tmp_path: Path, budget: float, trials: int, mode: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            WORKER,
            str(tmp_path / "supernet"),
            str(tmp_path / "latency.json"),
            str(budget),
            str(trials),
            str(tmp_path / f"{mode}.marker"),
            mode,
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_killed_worker_trial_is_failed_and_the_study_goes_on(supernet, latency_model, tmp_path):
    budget = latency_model(supernet.space.max_subnet())  # every subnet fits
    storage = str(tmp_path / "study.journal")
    search.run(
        supernet,
        evaluate=neg_loss,
        latency=latency_model,
        budget_ms=budget,
        trials=2,
        storage=storage,
        study_name="faults",
        remeasure=False,
    )
    supernet.save(tmp_path / "supernet")
    latency_model.save(tmp_path / "latency.json")
    doomed = _worker(tmp_path, budget, 3, "slow")
    steady = _worker(tmp_path, budget, 4, "fast")
    deadline = time.monotonic() + 300
    while not (tmp_path / "slow.marker").exists():
        assert doomed.poll() is None, doomed.stderr.read()
        assert time.monotonic() < deadline, "the slow worker never started a trial"
        time.sleep(0.05)
    doomed.send_signal(signal.SIGKILL)
    doomed.wait()
    assert steady.wait(timeout=300) == 0, steady.stderr.read()

    study = optuna.load_study(study_name="faults", storage=search.open_storage(storage, None))
    killed = [
        t
        for t in study.get_trials()
        if t.user_attrs.get("ofa_worker", {}).get("pid") == doomed.pid
    ]
    assert len(killed) == 1  # the steady worker, on this host, has already failed it
    assert killed[0].state == TrialState.FAIL
    search.run(
        supernet,
        evaluate=neg_loss,
        latency=latency_model,
        budget_ms=budget,
        trials=2,
        storage=storage,
        study_name="faults",
        remeasure=False,
    )
    trials = study.get_trials()
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers)) == 2 + 1 + 4 + 2
    states = {t.number: t.state for t in trials}
    assert states[killed[0].number] == TrialState.FAIL
    assert sum(s == TrialState.COMPLETE for s in states.values()) == 2 + 4 + 2
