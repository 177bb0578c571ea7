"""Run real ``ofa`` subprocesses and SIGKILL them at random moments (tests/cli/test_sigkill_rounds.py).

The moments come from a seeded RNG: ``OFA_FAULT_SEED=N`` replays the choices of a run (which
progress mark to wait for, how long to wait after it); without it every session draws a fresh
seed, printed in every assertion message. The kill itself lands where the process happens to be
at that time, so a replay reproduces the choices, not the exact instruction.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SEED = int(os.environ.get("OFA_FAULT_SEED") or random.SystemRandom().randrange(1 << 31))
TAG = f"[OFA_FAULT_SEED={SEED}]"


def rng(name: str) -> random.Random:
    """The RNG of one test: the session's seed and the test's name."""
    return random.Random(f"{SEED}:{name}")


def env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }


def command(argv: list[str]) -> list[str]:
    return [sys.executable, "-m", "ofa_app.cli", *argv]


def run_ofa(argv: list[str], *, timeout: float, log: Path, what: str) -> float:
    """Run ``ofa ARGV`` to the end (it must exit 0 within ``timeout`` s); return its wall time."""
    started = time.monotonic()
    finish(start_ofa(argv, log=log), timeout=timeout, log=log, what=what)
    return time.monotonic() - started


def start_ofa(argv: list[str], *, log: Path) -> subprocess.Popen:
    """``ofa ARGV`` started in its own process group, its output in ``log``."""
    with open(log, "w") as output:
        return subprocess.Popen(
            command(argv), stdout=output, stderr=subprocess.STDOUT, env=env(), cwd=ROOT,
            start_new_session=True,
        )  # fmt: skip


def finish(process: subprocess.Popen, *, timeout: float, log: Path, what: str) -> None:
    """Wait for a process of :func:`start_ofa`; it must exit 0 within ``timeout`` s."""
    try:
        code = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(process)
        raise AssertionError(
            f"{TAG} {what}: hung (no exit in {timeout:.0f} s); output:\n{_tail(log)}"
        ) from None
    if code != 0:
        raise AssertionError(f"{TAG} {what}: exited {code}:\n{_tail(log)}")


@dataclass
class Outcome:
    killed: bool  # False: the process ended by itself before the chosen moment
    pid: int
    returncode: int
    delay: float  # seconds from the progress mark to the kill
    output: str

    def describe(self) -> str:
        how = f"SIGKILLed {self.delay:.3f} s after its mark" if self.killed else "ended itself"
        return f"{how} (exit {self.returncode})"


def kill_at(
    argv: list[str],
    *,
    mark: Callable[[subprocess.Popen], bool],
    delay: float,
    timeout: float,
    log: Path,
    what: str,
    poll: float = 0.002,
) -> Outcome:
    """Start ``ofa ARGV``; once ``mark(process)`` is true, wait ``delay`` s and SIGKILL its process
    group. The process may end first (then it must have exited 0)."""
    process = start_ofa(argv, log=log)
    try:
        deadline = time.monotonic() + timeout
        while process.poll() is None and not mark(process):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{TAG} {what}: the process never reached its kill mark in "
                    f"{timeout:.0f} s; output:\n{_tail(log)}"
                )
            time.sleep(poll)
        end = time.monotonic() + delay
        while process.poll() is None and time.monotonic() < end:
            time.sleep(min(poll, max(0.0, end - time.monotonic())))
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        code = process.wait(timeout=30)
    finally:
        if process.poll() is None:
            _kill_group(process)
    killed = code == -signal.SIGKILL  # else it ended by itself just before (it must exit 0)
    if not killed and code != 0:
        raise AssertionError(f"{TAG} {what}: `ofa {argv[0]}` exited {code}:\n{_tail(log)}")
    return Outcome(killed, process.pid, code, delay, log.read_text(errors="replace"))


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=30)


def _tail(log: Path, chars: int = 3000) -> str:
    return log.read_text(errors="replace")[-chars:]


def leftovers(directory: Path) -> list[str]:
    """Names in ``directory`` that only a killed writer leaves: dotfiles and ``*.tmp``."""
    if not directory.is_dir():
        return []
    return sorted(
        p.name for p in directory.iterdir() if p.name.startswith(".") or p.name.endswith(".tmp")
    )
