"""What both quickstarts share (``ofa quickstart`` and ``ofa quickstart --family decoder``):
their settings, the latency stage (a saved profile reused only if its anchors re-measured
agree), the search stage (measured again at 1 thread where more were too noisy) and the table.

Like the CLI, it reaches into ``search``, importing it lazily.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

__all__ = ["QuickstartConfig", "search_stage"]


@dataclass(frozen=True, kw_only=True)
class QuickstartConfig:
    """Sizes of the quick run; the defaults take about 4 minutes on 2 quiet CPU cores (on busy
    ones it may stop as too noisy at the search; a rerun reuses every finished stage)."""

    out: str = "runs/quickstart"
    device: str = "cpu"
    train_examples: int = 2000
    eval_examples: int = 300
    max_length: int = 64
    teacher_epochs: float = 2.0
    supernet_steps: int = 60
    trials: int = 30
    budget_fraction: float = 0.5
    latency_batch_size: int = 1
    threads: int | None = None  # CPU threads for latency; None: the cores idle when profiling
    # when other jobs share the cores at the final measurement: wait this long for idle ones,
    # then stop as too noisy (or, with allow_busy, report the loaded figures with a warning)
    settle_s: float = 600.0
    allow_busy: bool = False
    seed: int = 0
    # "bert": the embedded MiniLM on Rotten Tomatoes; "decoder": a small Llama trained here
    # from scratch on IMDB reviews (no small pretrained decoder installs offline), see
    # ofa_app.quickstart_decoder; its latency is the prefill of a block or, with phase
    # "decode", one generated token at that context
    family: str = "bert"
    phase: str = "prefill"
    teacher_steps: int = 400  # the decoder teacher's optimizer steps (from scratch)
    version: int = 1

    def __post_init__(self) -> None:
        if not 0 < self.budget_fraction <= 1:
            raise ValueError(f"budget_fraction must be in (0, 1], got {self.budget_fraction}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be positive, got {self.threads}")
        if self.settle_s < 0:
            raise ValueError(f"settle must be >= 0 seconds, got {self.settle_s}")
        if self.family not in ("bert", "decoder"):
            raise ValueError(f"family must be bert or decoder, got {self.family!r}")
        if self.phase not in ("prefill", "decode"):
            raise ValueError(f"phase must be prefill or decode, got {self.phase!r}")
        if self.phase == "decode" and self.family != "decoder":
            raise ValueError("--phase decode is for the decoder quickstart (--family decoder)")
        names = ("train_examples", "eval_examples", "max_length", "supernet_steps", "trials")
        for name in (*names, "teacher_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.device not in ("cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"device must be cpu, cuda or cuda:N, got {self.device!r}")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError("--device cuda asked for, but torch sees no CUDA device")


def _table(rows: list[dict[str, str]]) -> list[str]:
    columns = list(rows[0])
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns)]
    lines += ["  ".join(r[c].ljust(widths[c]) for c in columns) for r in rows]
    return lines


class _Timed:
    """The run directory, the libraries' own progress bars quieted, and the latency stage:
    what both quickstarts' stages share (a subclass sets ``train_data``)."""

    train_data: Any

    def __init__(self, config: QuickstartConfig, say: Callable[[str], None]) -> None:
        import datasets
        import optuna
        import transformers

        datasets.disable_progress_bars()
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        transformers.logging.set_verbosity_error()
        self.config, self.say = config, say
        self.out = Path(config.out)
        self.threads: int | None = None  # the latency thread count, once chosen
        self.out.mkdir(parents=True, exist_ok=True)

    def train_and_save(self, supernet: Any, teacher: Any, config: Any, tokenizer: Any) -> Any:
        """Stage 2's training: ``ofa.train_`` under ``out/supernet_run`` (resumed from its
        checkpoint after a kill), then the supernet saved to ``out/supernet``, over our own
        earlier output only, with the tokenizer in the same atomic step (`ofa search` /
        `ofa export` find it there)."""
        import ofa

        run = self.out / "supernet_run"
        ofa.train_(
            supernet,
            teacher=teacher,
            train_data=self.train_data,
            config=config,
            output_dir=run,
            resume=(run / "checkpoint").exists(),
        )
        supernet.save(self.out / "supernet", overwrite=True, tokenizer=tokenizer)
        return supernet

    def latency(self, supernet: Any, threads: int | None = None) -> Any:
        """The latency model: a saved one only if its anchors, measured again now, still agree
        with it (and its thread count is the one chosen now); otherwise profiled again.

        Where timing at several threads is too noisy (other jobs take the cores), it measures
        again at 1 thread, whose CPU-time clock other jobs do not move, unless --threads fixed
        the count."""
        import search

        if threads is None:
            threads = (
                search.choose_threads(self.config.threads) if self.config.device == "cpu" else 1
            )
        target = search.LatencyTarget(
            device=self.config.device,
            batch_size=self.config.latency_batch_size,
            seq_len=self.config.max_length,
            num_threads=threads,
            phase=self.config.phase,
        )
        path = self.out / f"latency_{self.config.device.replace(':', '')}.json"
        if path.exists():
            reason = self._stale(path, target, supernet)
            if reason is None:
                self.say(f"[3/6] latency model: reusing {path} (its anchors re-measured agree)")
                self.threads = target.num_threads
                return search.LatencyModel.load(path, target=target, space=supernet.space)
            self.say(f"[3/6] the saved latency model is stale ({reason}): profiling again")
        else:
            self.say(
                f"[3/6] profiling latency on {search.device_name(self.config.device)}, "
                f"{target.describe()}"
            )
        noisy = (search.UnusableProfileError, search.TooNoisyError)
        try:
            model = self._profile(supernet, target)
        except noisy as error:
            if target.num_threads > 1 and self.config.threads is None:
                self.say(f"      {error}; profiling again with 1 thread")
                target = search.LatencyTarget(**{**target.to_dict(), "num_threads": 1})
                try:
                    model = self._profile(supernet, target)
                except noisy as again:
                    model = self._profile_once_idle(supernet, target, again)
            else:
                model = self._profile_once_idle(supernet, target, error)
        model.save(path)
        self.threads = target.num_threads
        return model

    def _profile_once_idle(self, supernet: Any, target: Any, error: Exception) -> Any:
        """After a profile too noisy at its fewest threads: wait (up to ``--settle`` s) for the
        timing cores to go idle, then profile once more. Other jobs that keep the cores busy
        past the wait stop the run with the error, saying that the stages before are kept."""
        import search

        self.threads = target.num_threads  # the stage that called us must not retry it again
        settle_s = self.config.settle_s
        if target.device != "cpu" or settle_s <= 0:
            raise error
        self.say(f"      {error}; waiting up to {settle_s:.0f} s for idle cores")
        waited = search.wait_until_idle(target.num_threads, settle_s)
        if waited is None:
            raise search.TooNoisyError(
                f"{error}; other jobs kept the cores busy through the {settle_s:.0f} s waited "
                f"after. Everything before the latency profile is kept in {self.out}: the same "
                f"command reuses it when the machine is quieter (or wait longer: --settle "
                f"{max(1200.0, 2 * settle_s):.0f})"
            ) from error
        self.say(f"      the cores went idle after {waited:.0f} s: profiling again")
        return self._profile(supernet, target)

    def _profile(self, supernet: Any, target: Any) -> Any:
        import search

        return search.LatencyModel.profile(
            supernet,
            device=target.device,
            batch_size=target.batch_size,
            seq_len=target.seq_len,
            num_threads=target.num_threads,
            num_train=16,
            num_test=8,
            rounds=5,
            progress=True,
            phase=target.phase,
        )

    def _stale(self, path: Path, target: Any, supernet: Any) -> str | None:
        """Why the saved latency model cannot be reused now, or None if it can."""
        import search

        try:
            model = search.LatencyModel.load(path, target=target, space=supernet.space)
        except ValueError as error:
            return str(error).split(":")[0]
        validation = model.validate(supernet)
        if validation.stale or validation.moved:
            return validation.describe()
        return None


def _digest(latency: Any) -> str:
    """A short digest of a latency model, naming the study its timings belong to."""
    import hashlib
    import json

    text = json.dumps(latency.to_dict(), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def latency_line(target: Any) -> str:
    """How the final table's latencies were measured."""
    import search

    seconds = search.MeasurePolicy().final().min_seconds
    return (
        f"      latency: {target.describe()}, the teacher and the subnet measured side by side "
        f"for at least {seconds:.0f} s (interleaved rounds, the weights copied to fresh memory "
        "every few rounds; speedup is the median of per-round ratios, 95% interval)"
    )


def search_stage(stages: Any, supernet: Any, teacher: Any, teacher_val: float) -> tuple[Any, Any]:
    """Stages 3 and 4, measured again at 1 thread where they were too noisy at more; the
    search's notes and message reported; a search with no subnet in budget raised."""
    import search

    config, emit = stages.config, stages.say
    try:
        try:
            latency, found = _latency_and_search(stages, supernet, teacher, teacher_val, None)
        except search.StaleProfileError as error:
            # the machine changed between the profile and the search (other jobs ended or
            # began): the latency stage checks its profile again and profiles anew if it moved
            emit(f"      {error.reason}: checking it again")
            latency, found = _latency_and_search(
                stages, supernet, teacher, teacher_val, stages.threads
            )
    except search.StaleProfileError as error:
        raise search.StaleProfileError(
            f"{error.reason}, twice: the machine kept changing "
            f"between the profile and the search. Everything before it is kept in {config.out}: "
            "the same command reuses it once the machine is steady"
        ) from error
    except search.TooNoisyError as error:
        # measuring again at 1 thread helps only where it was more (the CPU-time clock)
        if config.threads is not None or config.device != "cpu" or stages.threads == 1:
            if isinstance(error, search.BusyMachineError):
                raise search.BusyMachineError(
                    f"{error}. Everything before the search is kept in {config.out}: the same "
                    "command reuses it",
                    threads=error.threads,
                ) from error
            raise
        emit(f"      {error}; measuring again with 1 thread")
        latency, found = _latency_and_search(stages, supernet, teacher, teacher_val, 1)
    for line in found.notes:
        emit(f"      {line}")
    emit(f"      {found.message}")
    if found.best is None:
        raise RuntimeError(f"no subnet fits the budget: {found.message}")
    return latency, found


def _latency_and_search(
    stages: Any, supernet: Any, teacher: Any, teacher_val: float, threads: int | None
) -> tuple[Any, Any]:
    """Stages 3 and 4: the latency model (reused only if still true) and the search."""
    import search
    from ofa.evaluation import evaluate

    config, emit = stages.config, stages.say
    validation = stages.evals["validation"]
    latency = stages.latency(supernet, threads)
    target = latency.target
    max_ms, min_ms = latency.anchors_ms()
    emit(
        f"      latency model: {latency.method}, held-out median error "
        f"{100 * latency.held_out_error:.1f}%; max subnet {max_ms:.1f} ms, min {min_ms:.1f} ms "
        f"({target.describe()})"
    )
    emit(
        f"[4/6] searching {config.trials} trials under {config.budget_fraction:g} x the "
        "teacher's latency (the teacher measured side by side in this run)"
    )
    found = search.run(
        supernet,
        evaluate=lambda s, n: evaluate(s, n, validation),
        latency=latency,
        config=search.SearchConfig(
            budget_fraction=config.budget_fraction,
            teacher_accuracy=teacher_val,
            split="validation",
            trials=config.trials,
            # a new latency model starts a new study: trials never mix timings of two profiles
            study_name=f"quickstart-{_digest(latency)}",
            target=target,
            seed=config.seed,
            settle_s=config.settle_s,
            allow_busy=config.allow_busy,
        ),
        teacher=teacher,
        out_dir=stages.out / "search",
    )
    return latency, found
