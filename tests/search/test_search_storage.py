"""Several worker processes on one study: a journal file, and PostgreSQL when it is installed."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest

import search
from tests.search._tiny import neg_loss, tiny_supernet

ROOT = Path(__file__).resolve().parents[2]
WORKER = """
import sys
import ofa, search
from tests.search._tiny import neg_loss
supernet = ofa.load_supernet(sys.argv[1])
latency = search.LatencyModel.load(sys.argv[2])
search.run(supernet, evaluate=neg_loss, latency=latency, budget_ms=float(sys.argv[3]),
           trials=int(sys.argv[4]), storage=sys.argv[5], study_name="shared",
           seed=int(sys.argv[6]), remeasure=False)
"""


def _run_workers(
    supernet, latency_model, tmp_path: Path, storage: str, *, workers: int = 2, trials: int = 4
) -> list[optuna.trial.FrozenTrial]:
    """Create the study once (2 trials), then start ``workers`` processes adding ``trials`` each."""
    budget = latency_model(supernet.space.max_subnet())  # every subnet fits
    search.run(
        supernet,
        evaluate=neg_loss,
        latency=latency_model,
        budget_ms=budget,
        trials=2,
        storage=storage,
        study_name="shared",
        remeasure=False,
    )
    supernet.save(tmp_path / "supernet")
    latency_model.save(tmp_path / "latency.json")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                WORKER,
                str(tmp_path / "supernet"),
                str(tmp_path / "latency.json"),
                str(budget),
                str(trials),
                storage,
                str(seed),
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for seed in range(1, workers + 1)
    ]
    for process in processes:
        output, _ = process.communicate(timeout=240)
        assert process.returncode == 0, output[-2000:]
    study = optuna.load_study(study_name="shared", storage=search.open_storage(storage, None))
    return study.get_trials()


def _check_no_trial_lost(trials: list[optuna.trial.FrozenTrial], expected: int) -> None:
    numbers = [t.number for t in trials]
    assert len(numbers) == expected
    assert sorted(numbers) == list(range(expected)), "trial numbers must be unique, none missing"
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)


def test_two_workers_share_one_journal_file(supernet, latency_model, tmp_path):
    journal = str(tmp_path / "study.journal")
    trials = _run_workers(supernet, latency_model, tmp_path, journal)
    _check_no_trial_lost(trials, 2 + 2 * 4)


def _postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture()
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL server in a temporary directory on a free port."""
    bin_dir = _postgres_bin()
    if bin_dir is None:
        pytest.skip(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/pg_ctl); "
            "on Debian: apt-get install postgresql"
        )
    pytest.importorskip("psycopg", reason="no PostgreSQL driver: pip install 'psycopg[binary]'")
    prefix: list[str] = []
    data = Path(tempfile.mkdtemp(prefix="ofa-pg-"))
    if os.geteuid() == 0:  # initdb refuses root: run the server as the postgres user
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(data)
            pytest.skip("running as root and there is no 'postgres' user to run the server as")
        os.chown(data, user.pw_uid, user.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    run = lambda *args: subprocess.run([*prefix, *args], check=True, capture_output=True)  # noqa: E731
    try:
        run(str(bin_dir / "initdb"), "-D", str(data / "db"), "-A", "trust", "-U", "postgres")
        options = f"-p {port} -k {data} -c listen_addresses=127.0.0.1"
        run(
            str(bin_dir / "pg_ctl"),
            "-D",
            str(data / "db"),
            "-o",
            options,
            "-w",
            "-l",
            str(data / "log"),
            "start",
        )
        time.sleep(0.2)
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*prefix, str(bin_dir / "pg_ctl"), "-D", str(data / "db"), "-m", "immediate", "stop"],
            capture_output=True,
        )
        shutil.rmtree(data, ignore_errors=True)


def test_two_workers_share_one_postgresql_study(supernet, latency_model, postgres_url):
    """Created once, then two workers (threads, each with its own supernet and connection)."""
    budget = latency_model(supernet.space.max_subnet())
    kwargs = dict(
        evaluate=neg_loss,
        latency=latency_model,
        budget_ms=budget,
        storage=postgres_url,
        study_name="shared",
        remeasure=False,
    )
    search.run(supernet, trials=2, **kwargs)
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        try:
            search.run(tiny_supernet(), trials=3, seed=seed, **kwargs)
        except BaseException as error:  # noqa: BLE001 - reported by the main thread
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=240)
    assert not errors, errors
    study = optuna.load_study(study_name="shared", storage=postgres_url)
    _check_no_trial_lost(study.get_trials(), 2 + 2 * 3)
