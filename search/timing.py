"""Latency that holds on a shared machine: paired, interleaved rounds and a robust estimator.

Other jobs on a machine only ever add time, and they come in bursts. So every figure here is
made the same way:

- each **round** times every candidate once in turn (the order rotates between rounds), as the
  fastest of ``repeats`` back-to-back calls: a low quantile of short repeats, which a burst of
  interference seldom reaches;
- a candidate's latency is the **median of its round figures**; a comparison (a speedup, a
  subnet against the teacher) is the **median of the per-round ratios**, so drift between rounds
  hits both sides alike and cancels;
- each figure carries its 95% interval: the wider of the notch of a box plot (median +- 1.57
  IQR / sqrt(rounds)) and, from 12 rounds on, the interval of the medians of consecutive blocks
  of rounds (a t interval over 4-8 blocks). A shared host changes speed for seconds at a time
  and not by the same factor for a large and a small model, so neighbouring rounds are not
  independent: on this project's 2-core VM the notch said +-1.4% where five repeats of the same
  8-second measurement spread over +-8%, and the block interval said +-6-9%;
- rounds go on for at least ``min_rounds`` and ``min_seconds`` (so that a figure spans more
  than one of those phases), then until every interval is within ``precision`` of its figure,
  up to ``max_rounds`` or ``max_seconds``;
- if an interval is still wider than ``refuse_above``, :class:`TooNoisyError` says so, with what
  to do (fewer threads, a quieter machine), instead of a figure that a re-measure contradicts.

The CPU thread count can be chosen from the cores that are idle right now
(:func:`free_cores`, :func:`choose_threads`): a thread that shares its core with another job
stalls every operator that waits for it. With one thread, calls are timed by the thread's own
CPU time, which the time slices of other jobs do not inflate (see ``search.latency._timer``).

Example:
    >>> paired = measure_paired({"teacher": teacher, "subnet": small}, inputs,
    ...                         target=LatencyTarget(seq_len=64), reference="teacher")
    >>> paired.speedup("subnet")            # Estimate: value, low, high
    >>> str(paired.times["subnet"])         # '7.41 ms +- 1.8%'
"""

from __future__ import annotations

import copy
import logging
import math
import os
import statistics
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from search.latency import (
    Inputs,
    LatencyTarget,
    _dtype,
    _prepare,
    _threads,
    _timer,
)

logger = logging.getLogger(__name__)

__all__ = [
    "BusyMachineError",
    "Estimate",
    "LoadMeter",
    "MeasurePolicy",
    "Paired",
    "TooNoisyError",
    "choose_threads",
    "free_cores",
    "measure_paired",
    "wait_until_idle",
]

# the notch of a box plot: a 95% interval of the median from the interquartile range
_NOTCH = 1.57
# two-sided 95% t quantiles by degrees of freedom, for the interval over blocks of rounds
_T95 = {3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365}
_MIN_BLOCK_ROUNDS = 12  # below this, too few blocks of >= 3 rounds for a t interval
# other jobs' demand beyond the cores left free, in cores, before a measurement is "contended"
_SHARED = 0.3


def _env_number(name: str, example: str, low: float, high: float) -> float | None:
    """The number in environment variable ``name`` (None where unset), within [low, high)."""
    text = os.environ.get(name)
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{name} must be a number such as {example}, not {text!r}") from None
    if not low <= value < high:
        raise ValueError(f"{name} must be in [{low:g}, {high:g}), not {text!r}")
    return value


def noise_bound(default: float) -> float:
    """The widest 95% interval a measurement may end with: ``default``, or at least the value
    of the ``OFA_NOISE_BOUND`` environment variable (a fraction, e.g. ``0.3``) where it is set,
    for a machine whose speed swings more than that (figures then carry the wider interval)."""
    value = _env_number("OFA_NOISE_BOUND", "0.3", 1e-6, 10)
    return default if value is None else max(default, value)


def final_seconds(default: float = 10.0) -> float:
    """How long a figure that a user is shown (a chosen subnet's speedup) is measured at
    least: ``default``, or the ``OFA_FINAL_SECONDS`` environment variable where it is set."""
    value = _env_number("OFA_FINAL_SECONDS", "10", 0, 601)
    return default if value is None else value


class TooNoisyError(ValueError):
    """The machine is too busy to measure: the spread stayed above the bound after the most
    rounds allowed. The message is one line that says what to do. (A ``ValueError``, so the CLI
    exits 2 with that line.)"""


class BusyMachineError(TooNoisyError):
    """Other jobs kept the timing cores busy through the final measurement and the wait after
    it. Under such load a small subnet and the teacher slow down unequally (pressure on caches,
    memory and the host's shared cores), so a speedup can be off by more than its interval.
    ``threads`` is the thread count the figures were timed with."""

    def __init__(self, message: str, *, threads: int) -> None:
        super().__init__(message)
        self.threads = threads

    @classmethod
    def of(cls, paired: Paired, target: LatencyTarget, what: str, advice: str) -> BusyMachineError:
        """The one-line refusal of ``paired``, a measurement that other jobs contended: ``what``
        was being timed, ``advice`` says what to do."""
        return cls(
            f"too noisy to measure on {target.describe()}: {busy_clause(paired, what)}; "
            f"{UNEQUAL_SLOWDOWN}. {advice}",
            threads=paired.threads,
        )


UNEQUAL_SLOWDOWN = (
    "under such load a small subnet and the teacher slow down unequally (speedups 11% high and "
    "18% low in our runs)"
)


def busy_clause(paired: Paired, what: str) -> str:
    """ "other jobs kept the cores busy while <what> (<load>, <threads>)": the clause that both
    a refusal (:meth:`BusyMachineError.of`) and a warning over loaded figures state."""
    return (
        f"other jobs kept the cores busy while {what} ({paired.describe_load()}, "
        f"{paired.threads} timing thread(s))"
    )


@dataclass(frozen=True, kw_only=True)
class MeasurePolicy:
    """How hard to try for a figure, and when to give up.

    Attributes:
        warmup: untimed calls of each candidate before the first round.
        repeats: back-to-back calls per candidate per round; the round keeps the fastest.
        min_rounds, max_rounds: rounds before a figure may be accepted, and at most.
        min_seconds: and at least this long, so that a figure spans more than one of the
            seconds-long phases in which a shared host runs slower.
        precision: stop once every figure's 95% interval is within this fraction of it.
        refuse_above: after the last round, an interval wider than this raises TooNoisyError.
        max_seconds: stop adding rounds after this long (then the refusal rule applies).
        replace_every: on CPU in eager mode, every this many rounds each ``nn.Module``
            candidate is copied to fresh memory (and warmed up again) before the next round; 0
            never. Where a model's weights lie in memory moves its speed by several percent at
            2 threads (speedups of one subnet and teacher measured 3.25-3.46x over 5 copies in
            one process, each copy +-2%), so figures from one placement have intervals that a
            re-measure in another process contradicts; rounds over several placements put that
            spread into the interval.
    """

    warmup: int = 2
    repeats: int = 3
    min_rounds: int = 5
    max_rounds: int = 200
    min_seconds: float = 1.0
    precision: float = 0.03
    refuse_above: float = field(default_factory=lambda: noise_bound(0.10))
    max_seconds: float = 60.0
    replace_every: int = 4

    def __post_init__(self) -> None:
        if self.warmup < 0 or self.repeats < 1 or self.min_rounds < 2:
            raise ValueError("need warmup >= 0, repeats >= 1 and min_rounds >= 2")
        if self.replace_every < 0:
            raise ValueError("replace_every must be >= 0 (0: never)")
        if self.max_rounds < self.min_rounds:
            raise ValueError(f"max_rounds {self.max_rounds} < min_rounds {self.min_rounds}")
        if not 0 < self.precision <= self.refuse_above:
            raise ValueError("need 0 < precision <= refuse_above")
        if self.max_seconds <= 0:
            raise ValueError("max_seconds must be positive")
        if not 0 <= self.min_seconds <= self.max_seconds:
            raise ValueError("need 0 <= min_seconds <= max_seconds")

    def final(self) -> MeasurePolicy:
        """This policy for a figure a user is shown: rounds over at least
        :func:`final_seconds` (10 s), so that its interval spans the phases, seconds to tens
        of seconds long, in which a shared host runs the teacher and a subnet at different
        relative speeds (one process measured 3.25x, the next 3.79x, each +-2% over 1 s)."""
        seconds = max(self.min_seconds, final_seconds())
        return replace(
            self,
            min_seconds=seconds,
            max_rounds=max(self.max_rounds, 10**7),  # no cap by count: a 20 us pair ran 20000
            # rounds in 2.2 s and stopped short of the seconds (a CI run); the time cap bounds it
            max_seconds=seconds + min(self.max_seconds, 20.0),  # the rounds are not capped now
        )

    @classmethod
    def quick(cls) -> MeasurePolicy:
        """For the many subnets of a profile: each figure within 15% (the bound the profile's
        held-out error is held to), the fastest of 5 calls a round."""
        bound = noise_bound(0.15)
        return cls(
            warmup=1,
            repeats=5,
            min_rounds=4,
            max_rounds=48,
            min_seconds=0.0,
            precision=min(0.04, bound),
            refuse_above=bound,
        )


@dataclass(frozen=True)
class Estimate:
    """A median with its 95% interval and the spread of the rounds it came from.

    ``value`` is in ms for latencies, a plain number for ratios and speedups.
    """

    value: float
    low: float
    high: float
    spread: float  # interquartile range of the rounds over their median
    rounds: int

    @property
    def interval(self) -> float:
        """Half the 95% interval, relative to the value (0.02 means +- 2%)."""
        return (self.high - self.low) / (2 * self.value) if self.value > 0 else math.inf

    @classmethod
    def of(cls, samples: list[float]) -> Estimate:
        median = statistics.median(samples)
        if len(samples) < 2:
            return cls(median, median, median, 0.0, len(samples))
        q1, _, q3 = statistics.quantiles(samples, n=4, method="inclusive")
        half = max(_NOTCH * (q3 - q1) / math.sqrt(len(samples)), _block_half(samples))
        return cls(
            value=median,
            low=median - half,
            high=median + half,
            spread=(q3 - q1) / median if median > 0 else 0.0,
            rounds=len(samples),
        )

    def scaled(self, factor: float) -> Estimate:
        """This figure times ``factor`` (a ratio turned into ms by a reference's latency)."""
        return Estimate(
            self.value * factor, self.low * factor, self.high * factor, self.spread, self.rounds
        )

    def inverse(self) -> Estimate:
        """1 / this (a ratio turned into a speedup), its interval turned with it."""
        low = 1.0 / self.high if self.high > 0 else math.inf
        high = 1.0 / self.low if self.low > 0 else math.inf
        return Estimate(1.0 / self.value, low, high, self.spread, self.rounds)

    def __str__(self) -> str:
        return f"{self.value:.3g} +- {100 * self.interval:.1f}%"

    def to_dict(self) -> dict[str, float]:
        return {
            "value": self.value,
            "low": self.low,
            "high": self.high,
            "spread": self.spread,
            "rounds": self.rounds,
        }


def _block_half(samples: list[float]) -> float:
    """Half the 95% t interval of the median over 4-8 blocks of consecutive samples (0 when
    there are too few): it widens with drift between blocks, which the notch does not see."""
    if len(samples) < _MIN_BLOCK_ROUNDS:
        return 0.0
    blocks = min(8, len(samples) // 3)
    size = len(samples) // blocks
    medians = [statistics.median(samples[i * size : (i + 1) * size]) for i in range(blocks)]
    return _T95[blocks - 1] * statistics.stdev(medians) / math.sqrt(blocks)


@dataclass(frozen=True)
class Paired:
    """Latencies of several candidates measured together, and their ratios to a reference.

    ``times[name]`` is each candidate's latency (ms); ``ratios[name]`` is the median of the
    per-round ratios name / reference (absent when no reference was named).
    """

    times: dict[str, Estimate]
    ratios: dict[str, Estimate]
    reference: str | None
    threads: int
    rounds: int
    seconds: float
    # cores that other jobs kept busy while the rounds ran (None where /proc/stat is missing),
    # out of ``cores``: beyond ``cores - threads`` they shared the cores the timed calls ran on
    others: float | None = None
    cores: int = 1

    @property
    def contended(self) -> bool:
        """Other jobs shared the cores the timed calls ran on. The 1-thread CPU-time clock
        leaves their time slices out, but not their pressure on caches and memory, which slows
        a small model and a big one unequally: a speedup measured so can read low or high
        against a quiet machine (docs/GUIDE.md)."""
        return self.others is not None and self.others > self.cores - self.threads + _SHARED

    def load(self) -> dict[str, Any]:
        """The load the rounds ran under, as JSON (``pareto.json``'s and a manifest's ``load``)."""
        return {
            "other_cores_busy": self.others,
            "cores": self.cores,
            "threads": self.threads,
            "contended": self.contended,
        }

    def describe_load(self) -> str:
        """'other jobs kept 1.9 of 2 cores busy': the load the rounds ran under."""
        if self.others is None:
            return "the load on the machine is unknown"
        if self.others > self.cores:  # no idle core: what they took from this process too
            return (
                f"other jobs kept {self.cores:.1f} of {self.cores} cores busy "
                f"(demanding {self.others:.1f})"
            )
        return f"other jobs kept {self.others:.1f} of {self.cores} cores busy"

    def speedup(self, name: str) -> Estimate:
        """reference / name, paired per round (2.0 means twice as fast as the reference)."""
        if self.reference is None:
            raise ValueError("no reference was measured: pass reference= to measure_paired")
        return self.ratios[name].inverse()

    def worst_interval(self, names: Collection[str] | None = None) -> float:
        """The widest interval that matters: with a reference, its latency and every ratio to
        it (drift cancels in the ratios); without one, every latency. ``names`` limits it to
        those candidates (and the reference)."""
        if self.reference is not None and self.ratios:
            figures = [self.times[self.reference]] + [
                e for name, e in self.ratios.items() if names is None or name in names
            ]
        else:
            figures = [e for name, e in self.times.items() if names is None or name in names]
        return max((e.interval for e in figures), default=0.0)


def _read_cpu_times() -> tuple[float, float] | None:
    try:
        with open("/proc/stat") as handle:
            fields = handle.readline().split()[1:]
    except OSError:
        return None
    values = [float(v) for v in fields]
    idle = values[3] + (values[4] if len(values) > 4 else 0.0)  # idle + iowait
    return idle, sum(values[:8])


def _cores() -> tuple[int, int]:
    """(cores this process may run on, cores the kernel counts in /proc/stat)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = cores or 1
    return cores, os.cpu_count() or cores


class LoadMeter:
    """Cores that *other* processes keep busy over a stretch of time: the machine's busy time
    from /proc/stat less this process's own CPU time. ``None`` where the kernel does not say."""

    def __init__(self) -> None:
        self._stat = _read_cpu_times()
        self._own = time.process_time()
        self._wall = time.perf_counter()

    def others(self, min_window_s: float = 0.2, threads: int | None = None) -> float | None:
        """Other processes' busy cores since this meter started; a stretch shorter than
        ``min_window_s`` is extended by sleeping (the kernel counts in 10 ms ticks). Given the
        ``threads`` this process kept busy, a machine with no idle core reports the cores the
        others demanded (which can exceed the cores there are), not only those they got."""
        short = min_window_s - (time.perf_counter() - self._wall)
        if short > 0:
            time.sleep(short)
        stat = _read_cpu_times()
        wall = time.perf_counter() - self._wall
        if stat is None or self._stat is None or stat[1] <= self._stat[1] or wall <= 0:
            return None
        cores, total_cores = _cores()
        idle_share = (stat[0] - self._stat[0]) / (stat[1] - self._stat[1])
        busy = (1.0 - idle_share) * total_cores
        own = (time.process_time() - self._own) / wall
        others = max(0.0, busy - own)
        if threads is not None and idle_share * total_cores < _SHARED and own > 0.05:
            # every core was busy, so the others' busy time is capped: what they *wanted* is
            # seen in what they took from this process. Time slices are shared fairly, so each
            # other busy process ran as long as each of this one's threads: 2 burners and a
            # 1-thread timer on 2 cores read 1.33 busy (at the margin) but demand 2 cores
            others = max(others, others * threads / own)
        return min(4.0 * cores, others)


def free_cores(window_s: float = 0.3) -> float:
    """Cores idle right now (over a short window), from /proc/stat; ``os.cpu_count()`` where
    the kernel does not say. Counts every process, this one included, so call it while idle."""
    cores, total_cores = _cores()
    first = _read_cpu_times()
    if first is None:
        return float(cores)
    time.sleep(window_s)
    second = _read_cpu_times()
    if second is None or second[1] <= first[1]:
        return float(cores)
    idle_share = (second[0] - first[0]) / (second[1] - first[1])
    return max(0.0, min(float(cores), idle_share * total_cores))


def choose_threads(requested: int | None = None, *, window_s: float = 0.3) -> int:
    """CPU threads to measure with: ``requested`` if given, else the cores idle now (>= 1)."""
    if requested is not None:
        if requested < 1:
            raise ValueError(f"threads must be positive, got {requested}")
        return requested
    free = free_cores(window_s)
    threads = max(1, int(free + 0.25))  # 1.8 idle cores is 2 threads, 1.6 is 1
    logger.info("%.1f cores idle: measuring with %d thread(s)", free, threads)
    return threads


def wait_until_idle(threads: int, seconds: float, poll_s: float = 2.0) -> float | None:
    """Wait up to ``seconds`` until ``threads`` cores are idle (beyond the margin that makes a
    measurement contended); the seconds waited, or ``None`` if they never were."""
    started = time.perf_counter()
    while True:
        if free_cores(min(poll_s, 1.0)) >= threads - _SHARED:  # not contended
            return time.perf_counter() - started
        remaining = seconds - (time.perf_counter() - started)
        if remaining <= 0:
            return None
        time.sleep(min(poll_s, remaining))


def _check_interval(
    paired: Paired,
    policy: MeasurePolicy,
    what: str,
    target: str,
    matters: Collection[str] | None = None,
) -> None:
    worst = paired.worst_interval(matters)
    if worst <= policy.refuse_above:
        return
    hint = (
        "a quieter machine, or fewer threads (--threads 1)"
        if paired.threads > 1
        else "a quieter machine (stop other jobs), or a longer run; where this machine's "
        "speed always swings that much, accept wider intervals with OFA_NOISE_BOUND=0.3"
    )
    raise TooNoisyError(
        f"too noisy to measure {what} on {target}: after {paired.rounds} rounds the figures "
        f"are still +-{100 * worst:.0f}% (bound {100 * policy.refuse_above:.0f}%); "
        f"measure on {hint}"
    )


def measure_paired(
    models: Mapping[str, nn.Module | Callable[[], Any]],
    inputs: Inputs | None = None,
    *,
    target: LatencyTarget,
    reference: str | None = None,
    policy: MeasurePolicy | None = None,
    what: str = "latency",
    refuse: bool = True,
    matters: Collection[str] | None = None,
) -> Paired:
    """Time several candidates together on ``target`` (interleaved rounds, robust estimator).

    Args:
        models: name -> an ``nn.Module`` (run on ``inputs``, moved to the target's device and
            dtype if needed) or a prepared zero-argument call.
        reference: a name in ``models``; every other candidate's ratio to it is estimated.
        what: what is measured, for the refusal message.
        refuse: raise :class:`TooNoisyError` when an interval stays above the bound; with
            ``False`` the caller reads ``worst_interval()`` itself.
        matters: the candidates whose intervals decide when to stop and whether to refuse
            (with the reference); the others are timed in the same rounds and reported with
            whatever interval they reach (default: all of them).
    """
    policy = policy or MeasurePolicy()
    if not models:
        raise ValueError("measure_paired needs at least one model")
    if reference is not None and reference not in models:
        raise ValueError(f"reference {reference!r} is not among {sorted(models)}")
    device = torch.device(target.device)
    time_one = _timer(device, target.num_threads)
    names = list(models)
    rounds: dict[str, list[float]] = {name: [] for name in names}
    started = time.perf_counter()
    with _threads(target.num_threads), torch.inference_mode():
        calls: dict[str, Callable[[], Any]] = {}
        for name in names:
            model = models[name]
            if isinstance(model, nn.Module):
                if inputs is None:
                    raise ValueError("pass inputs= to time nn.Module candidates")
                calls[name] = _prepare(
                    model,
                    inputs,
                    device,
                    _dtype(target.dtype),
                    target.runtime,
                    target.num_threads,
                    memory_format=target.memory_format,
                )
            else:
                calls[name] = model
        for name in names:
            for _ in range(policy.warmup):
                calls[name]()
        movable = _movable(models, target, policy)
        paired = _paired(rounds, reference, target, started)
        meter = LoadMeter()
        for index in range(policy.max_rounds):
            if movable and index and index % policy.replace_every == 0:
                for name in movable:  # fresh memory for its weights; the old copy is freed
                    movable[name] = copy.deepcopy(movable[name])
                    calls[name] = _prepare(
                        movable[name],
                        inputs,  # type: ignore[arg-type]
                        device,
                        _dtype(target.dtype),
                        target.runtime,
                        target.num_threads,
                        memory_format=target.memory_format,
                    )
                    calls[name]()  # untimed: the first call on new memory
            shift = index % len(names)
            for name in names[shift:] + names[:shift]:
                call = calls[name]
                rounds[name].append(min(time_one(call) for _ in range(policy.repeats)))
            if index + 1 < policy.min_rounds:
                continue
            if time.perf_counter() - started < policy.min_seconds:
                continue
            if index >= 200 and (index + 1) % ((index + 1) // 20):
                continue  # many fast rounds: the stopping rule every 5% more, not every round
            paired = _paired(rounds, reference, target, started)
            if paired.worst_interval(matters) <= policy.precision:
                break
            if time.perf_counter() - started > policy.max_seconds:
                break
    paired = replace(
        _paired(rounds, reference, target, started),
        others=meter.others(threads=target.num_threads if target.device == "cpu" else None),
        cores=_cores()[0],
    )
    logger.debug(
        "measured %s in %d rounds (%.1fs): worst interval %.1f%%; %s",
        what,
        paired.rounds,
        paired.seconds,
        100 * paired.worst_interval(),
        paired.describe_load(),
    )
    if refuse:
        _check_interval(paired, policy, what, target.describe(), matters)
    return paired


_MOVABLE_BYTES = 1 << 30  # a bigger model is timed where it lies: copying it costs too much


def _movable(
    models: Mapping[str, nn.Module | Callable[[], Any]],
    target: LatencyTarget,
    policy: MeasurePolicy,
) -> dict[str, nn.Module]:
    """The candidates that :attr:`MeasurePolicy.replace_every` copies to fresh memory."""
    if not policy.replace_every or target.device != "cpu" or target.runtime != "eager":
        return {}
    return {
        name: model
        for name, model in models.items()
        if isinstance(model, nn.Module)
        and sum(t.numel() * t.element_size() for t in model.state_dict().values())
        <= _MOVABLE_BYTES
    }


def _paired(
    rounds: Mapping[str, list[float]], reference: str | None, target: LatencyTarget, started: float
) -> Paired:
    times = {name: Estimate.of(values) for name, values in rounds.items() if values}
    ratios = {}
    if reference is not None and rounds[reference]:
        base = rounds[reference]
        ratios = {
            name: Estimate.of([v / b for v, b in zip(values, base)])
            for name, values in rounds.items()
            if name != reference and values
        }
    count = min((len(v) for v in rounds.values()), default=0)
    return Paired(
        times=times,
        ratios=ratios,
        reference=reference,
        threads=target.num_threads,
        rounds=count,
        seconds=time.perf_counter() - started,
    )
