"""Optuna plumbing: samplers, storages, the budget constraint, subnets as trial parameters."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import optuna
from optuna.storages import BaseStorage
from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock
from optuna.storages.journal._file import LOCK_FILE_SUFFIX, RENAME_FILE_SUFFIX

from ofa.families import SpaceLike, SubnetLike
from search._families import family_of
from search._stale import TagsWorker

__all__ = [
    "SAMPLERS",
    "SamplerName",
    "make_sampler",
    "open_storage",
    "set_budget_constraint",
    "subnet_params",
    "suggest_subnet",
]

logger = logging.getLogger(__name__)

SamplerName = Literal["tpe", "nsga2", "random"]
SAMPLERS: tuple[str, ...] = ("tpe", "nsga2", "random")
BUDGET_CONSTRAINT = "latency_budget"


def make_sampler(
    name: str, *, seed: int | None, population_size: int = 20
) -> optuna.samplers.BaseSampler:
    """The Optuna sampler called ``name``: ``"tpe"`` (default), ``"nsga2"`` or ``"random"``."""
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=10)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=population_size)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ValueError(f"unknown sampler {name!r}: use one of {', '.join(SAMPLERS)}")


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***``."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def open_storage(
    storage: str | os.PathLike | BaseStorage | None, out_dir: Path | None
) -> BaseStorage:
    """An Optuna storage: a journal file (default, in ``out_dir``), an RDB URL, or a given one.

    A string with ``://`` is an RDB URL (``sqlite:///study.db``, ``postgresql://user@host/db``);
    any other string or path is a journal file, which several processes can share.
    """
    if isinstance(storage, BaseStorage):
        return storage
    if storage is None:
        if out_dir is None:
            return optuna.storages.InMemoryStorage()
        out_dir.mkdir(parents=True, exist_ok=True)
        storage = out_dir / "study.journal"
    text = os.fspath(storage)
    if "://" not in text:
        path = Path(text)
        if path.is_dir():
            raise ValueError(f"storage {text} is a directory: give a journal file path or a URL")
        path.parent.mkdir(parents=True, exist_ok=True)
        return open_journal(path)
    try:
        return _RDB(text)
    except Exception as error:  # noqa: BLE001 - SQLAlchemy raises many kinds; all mean "bad URL"
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ValueError(
            f"storage URL {redact(text)!r} could not be opened ({type(error).__name__}: {first}): "
            "give a reachable database URL such as sqlite:///study.db or "
            "postgresql://user:password@host:5432/db, or a journal file path"
        ) from None


JOURNAL_LOCK_GRACE_S = 5  # a lock older than this, with its journal unchanged, is stale


class _RDB(TagsWorker, optuna.storages.RDBStorage):
    """An RDB storage whose trials name their worker from the write that starts them."""


class _Journal(TagsWorker, optuna.storages.JournalStorage):
    """A journal storage whose ``create_study(load_if_exists=True)`` on an existing study
    appends nothing (Optuna's appends a CREATE_STUDY record, then finds the duplicate), and
    whose trials name their worker from the write that starts them."""

    def create_new_study(self, directions: Any, study_name: str | None = None) -> int:
        if study_name is not None:
            try:
                self.get_study_id_from_name(study_name)
            except KeyError:
                pass
            else:
                raise optuna.exceptions.DuplicatedStudyError(
                    f"Another study with name '{study_name}' already exists."
                )
        return super().create_new_study(directions, study_name)


def _clear_dangling_lock(lock: Path, grace_s: float) -> None:
    """Remove a lock symlink that points nowhere once it is ``grace_s`` old.

    Optuna's lock follows the symlink to date it: a dangling one (left by a SIGKILL of a
    process that gave a relative path, or a moved journal) is never released and spins a CPU.
    """
    deadline = time.monotonic() + grace_s + 2
    while lock.is_symlink() and not lock.exists():
        with contextlib.suppress(FileNotFoundError):
            age = time.time() - lock.lstat().st_mtime
            if age >= grace_s or time.monotonic() > deadline:
                lock.unlink()
                logger.warning("removed the stale journal lock %s", lock)
                return
        time.sleep(0.2)


class _Lock(JournalFileSymlinkLock):
    """Optuna's symlink lock, whose release names its process in the file it moves the lock to
    (``LOCK.PID-HEX.rename``), so one a SIGKILL left between its two steps can be removed."""

    def release(self) -> None:
        moved = f"{self._lock_file}.{os.getpid()}-{uuid.uuid4().hex}{RENAME_FILE_SUFFIX}"
        try:
            os.rename(self._lock_file, moved)
            os.unlink(moved)
        except OSError:
            raise RuntimeError("Error: did not possess lock") from None
        except BaseException:
            os.unlink(moved)
            raise


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _clear_released_locks(lock: Path, grace_s: float) -> None:
    """Remove the moved-aside locks of releases a SIGKILL cut short: ours of dead processes,
    and Optuna's (``LOCKUUID.rename``, which name none) once ``grace_s`` old."""
    ours = re.compile(re.escape(lock.name) + r"\.(\d+)-[0-9a-f]+" + re.escape(RENAME_FILE_SUFFIX))
    with contextlib.suppress(FileNotFoundError):
        for entry in lock.parent.iterdir():
            name = entry.name
            if not (name.startswith(lock.name) and name.endswith(RENAME_FILE_SUFFIX)):
                continue
            found = ours.fullmatch(name)
            with contextlib.suppress(FileNotFoundError):
                if found:
                    if _pid_alive(int(found.group(1))) and int(found.group(1)) != os.getpid():
                        continue
                elif time.time() - entry.lstat().st_mtime < grace_s:
                    continue
                entry.unlink()


def open_journal(
    path: str | os.PathLike, *, grace_s: int = JOURNAL_LOCK_GRACE_S
) -> optuna.storages.JournalStorage:
    """A journal-file storage at ``path`` (made absolute) whose lock left by a killed process
    is taken over after ``grace_s`` seconds, and whose killed releases leave nothing behind."""
    path = Path(path).absolute()
    lock_path = Path(str(path) + LOCK_FILE_SUFFIX)
    _clear_dangling_lock(lock_path, grace_s)
    _clear_released_locks(lock_path, grace_s)
    lock = _Lock(str(path), grace_period=grace_s)
    return _Journal(JournalFileBackend(str(path), lock_obj=lock))


def set_budget_constraint(
    trial: optuna.trial.Trial, *, latency_ms: float, budget_ms: float, which: int = 0
) -> None:
    """Record ``latency_ms - budget_ms <= 0`` as the trial's feasibility constraint (``which``
    1, 2...: a second budget's, on another target; see :class:`search.Budget`).

    The one place that speaks Optuna's constraint API (Optuna 5 deprecates the samplers'
    ``constraints_func`` in favour of ``Trial.set_constraint``).
    """
    name = BUDGET_CONSTRAINT if which == 0 else f"{BUDGET_CONSTRAINT}_{which + 1}"
    trial.set_constraint(name, float(latency_ms) - float(budget_ms))


def is_feasible(trial: optuna.trial.FrozenTrial) -> bool:
    return all(value <= 0.0 for value in trial.constraints.values())


def suggest_subnet(trial: optuna.trial.Trial, space: SpaceLike) -> SubnetLike:
    """A subnet from the trial, one categorical parameter per elastic choice of ``space`` (the
    family's adapter names them; see ``search._family_bert`` / ``search._family_cnn``)."""
    return family_of(space).suggest(trial, space)


def subnet_params(subnet: SubnetLike, space: SpaceLike) -> dict[str, Any]:
    """Trial parameters that :func:`suggest_subnet` maps back to ``subnet`` (for enqueueing)."""
    return family_of(space).params(subnet, space)


def largest_within(
    uniform: list[Any],
    latency: Callable[[Any], float],
    budget_ms: float,
    flops: Callable[[Any], int],
) -> Any | None:
    """The uniform subnet with the most FLOPs whose latency fits, by bisection over FLOPs."""
    ordered = sorted(uniform, key=flops)
    low, high, best = 0, len(ordered) - 1, None
    while low <= high:
        middle = (low + high) // 2
        if latency(ordered[middle]) <= budget_ms:
            best, low = ordered[middle], middle + 1
        else:
            high = middle - 1
    return best
