"""Trials left RUNNING by a worker that died (SIGKILL, lost machine) are marked FAIL.

Each trial records the worker that runs it (host, pid, process start time). When a search
starts or ends, a RUNNING trial whose worker was on this host and is gone is failed, so a
continued study never waits on it and its number is never reused. Workers on other hosts are
only known dead to their own host: there, the next search on that host fails them. (Optuna's
heartbeat does the same for RDB storages; the journal file has none.)

The storages of :func:`search._study.open_storage` record the worker in the same write that
makes the trial RUNNING (:class:`TagsWorker`): a worker killed while its sampler is still
choosing the parameters, before the objective runs, is known too. A queued trial is taken in
two writes, so each worker first notes its claim on it; a RUNNING trial without a worker whose
claimants are all gone is failed as well.
"""

from __future__ import annotations

import datetime
import logging
import os
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

logger = logging.getLogger(__name__)

__all__ = ["WORKER_ATTR", "TagsWorker", "fail_dead_trials", "tag_worker"]

WORKER_ATTR = "ofa_worker"
CLAIM_PREFIX = "ofa_claim:"  # system attrs: workers that tried to take a queued trial


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


class TagsWorker:
    """Storage mixin: a trial this process makes RUNNING names this process at once.

    A new trial is created with the worker in its user attributes (one write). A queued trial
    is taken in two (RUNNING, then the worker), so the claim is noted on it first: a worker
    killed between the two leaves a RUNNING trial whose claimants are all gone.
    """

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        return super().create_new_trial(study_id, _template(template_trial))  # type: ignore[misc]

    def _create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> Any:
        # RDBStorage: what Optuna's cache in front of it calls
        return super()._create_new_trial(study_id, _template(template_trial))  # type: ignore[misc]

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        if state != TrialState.RUNNING:
            return super().set_trial_state_values(trial_id, state, values)  # type: ignore[misc]
        me = _me()
        claim = f"{CLAIM_PREFIX}{me['host']}:{me['pid']}:{me['start']}"
        self.set_trial_system_attr(trial_id, claim, me)  # type: ignore[attr-defined]
        won = super().set_trial_state_values(trial_id, state, values)  # type: ignore[misc]
        if won:
            self.set_trial_user_attr(trial_id, WORKER_ATTR, me)  # type: ignore[attr-defined]
        return bool(won)


def _template(template: FrozenTrial | None) -> FrozenTrial | None:
    """A new RUNNING trial naming this process, where Optuna would create a blank one."""
    if template is not None:
        return template
    return FrozenTrial(
        number=-1,
        state=TrialState.RUNNING,
        value=None,
        datetime_start=datetime.datetime.now(),
        datetime_complete=None,
        params={},
        distributions={},
        user_attrs={WORKER_ATTR: _me()},
        system_attrs={},
        intermediate_values={},
        trial_id=-1,
    )


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
        if isinstance(worker, dict):
            workers = [worker]
        else:  # taken from the queue by one of its claimants, killed before it said which
            workers = [v for k, v in trial.system_attrs.items() if k.startswith(CLAIM_PREFIX)]
        if not workers or not all(
            isinstance(w, dict) and w.get("host") == host and not _alive(w) for w in workers
        ):
            continue
        try:
            study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
        except RuntimeError:  # finished meanwhile by a worker that was alive after all
            continue
        failed.append(trial.number)
    if failed:
        logger.warning("marked trials %s FAIL: their worker process is gone", failed)
    return failed
