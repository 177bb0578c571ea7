"""Trials left RUNNING by a worker that died (SIGKILL, lost machine) are marked FAIL.

Each trial records the worker that runs it (host, pid, process start time). When a search
starts or ends, a RUNNING trial whose worker was on this host and is gone is failed, so a
continued study never waits on it and its number is never reused. Workers on other hosts are
only known dead to their own host: there, the next search on that host fails them. (Optuna's
heartbeat does the same for RDB storages; the journal file has none.)
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

import optuna
from optuna.trial import TrialState

logger = logging.getLogger(__name__)

__all__ = ["WORKER_ATTR", "fail_dead_trials", "tag_worker"]

WORKER_ATTR = "ofa_worker"


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), to tell reused pids apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _me() -> dict[str, object]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "start": _start_time(os.getpid())}


def tag_worker(trial: optuna.trial.Trial) -> None:
    """Record on ``trial`` which process runs it."""
    trial.set_user_attr(WORKER_ATTR, _me())


def _alive(worker: dict[str, object]) -> bool:
    pid = int(worker["pid"])  # type: ignore[call-overload]
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    start = worker.get("start")
    return start is None or _start_time(pid) == start


def fail_dead_trials(study: optuna.Study) -> list[int]:
    """Mark FAIL the RUNNING trials of dead workers on this host; return their numbers."""
    host = socket.gethostname()
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get(WORKER_ATTR)
        if not isinstance(worker, dict) or worker.get("host") != host or _alive(worker):
            continue
        try:
            study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
        except RuntimeError:  # finished meanwhile by a worker that was alive after all
            continue
        failed.append(trial.number)
    if failed:
        logger.warning("marked trials %s FAIL: their worker process is gone", failed)
    return failed
