"""The settings of one search, as frozen JSON data (beside ``ofa.TrainConfig``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from ofa._json import JsonMixin, known_fields
from search.latency import LatencyTarget
from search.predictor import MAX_ERROR
from search.timing import MeasurePolicy

if TYPE_CHECKING:
    from search.measured import MeasuredLatency
    from search.predictor import LatencyModel

__all__ = ["Budget", "SearchConfig"]


@dataclass(frozen=True)
class Budget:
    """A second latency budget for :func:`search.run`, on another target of the same subnets:
    a causal LM searched under a prefill budget and a decode budget at once, say.

    ``latency`` is the profile of that target (``ofa profile --phase decode``); the budget is
    ``budget_ms`` on it, or ``budget_fraction`` of the teacher's latency there, measured in
    the same run. Every trial must fit both (two Optuna constraints); at the end the Pareto
    subnets are re-measured beside the teacher on each target, and the best subnet is the most
    accurate that fits both by those measurements.

    Example:
        >>> decode = search.LatencyModel.load("runs/llm-decode.json")
        >>> search.run(supernet, evaluate=..., latency=prefill, config=config,
        ...            also=[search.Budget(decode, budget_fraction=0.6)])
    """

    latency: LatencyModel | MeasuredLatency
    budget_ms: float | None = None
    budget_fraction: float | None = None

    def __post_init__(self) -> None:
        if (self.budget_ms is None) == (self.budget_fraction is None):
            raise ValueError("a search.Budget takes either budget_ms or budget_fraction")
        if self.budget_ms is not None and not self.budget_ms > 0:
            raise ValueError(f"budget_ms must be positive, got {self.budget_ms}")
        if self.budget_fraction is not None and not 0 < self.budget_fraction <= 1:
            raise ValueError(f"budget_fraction must be in (0, 1], got {self.budget_fraction}")

    def settings(self) -> dict[str, Any]:
        """What a study records of it (a continued study must keep it)."""
        budget = (
            {"budget_ms": self.budget_ms}
            if self.budget_fraction is None
            else {"budget_fraction": self.budget_fraction}
        )
        return {"target": self.latency.target.to_dict(), **budget}


@dataclass(frozen=True, kw_only=True)
class SearchConfig(JsonMixin):
    """What :func:`search.run` does: the budget, how many trials, how they are drawn and checked.

    Attributes:
        trials: trials this run adds (a study continued from its storage keeps its old ones);
            0 creates the study for workers to share.
        budget_ms: the latency budget in ms; trials above it are infeasible (a constraint).
        budget_fraction: instead of ``budget_ms``: a share of the teacher's latency measured
            in the same run (0.5: twice as fast as the teacher); the check is the paired ratio.
        teacher_accuracy: marks the teacher on the Pareto plot.
        sampler: ``"tpe"``, ``"nsga2"`` or ``"random"``; ``population_size`` for NSGA-II.
        study_name: default ``"ofa-search"``; the same name and storage continue a study.
        target: when given, refuse a latency model profiled for anything else.
        seed: the sampler's seed (``None``: a fresh one).
        remeasure: extract the Pareto subnets and time them beside the teacher at the end.
        policy: rounds and noise bounds of every measurement (default ``MeasurePolicy()``).
        max_error: how far a latency model's anchors may have moved before it is refused.
        evaluate_infeasible: score trials over the budget too (they stay infeasible).
        split: the data split ``evaluate`` scores (labels the plot).
        settle_s: when other jobs shared the timing cores during the final measurement, wait
            up to this long for idle cores and measure the Pareto subnets again (0: never wait).
        allow_busy: when the cores stayed shared, report the figures measured under that load
            with a WARNING note instead of stopping with :class:`~search.BusyMachineError`.

    Example:
        >>> config = search.SearchConfig(budget_fraction=0.5, trials=200)
        >>> search.SearchConfig.from_json(config.to_json()) == config
        True
    """

    trials: int
    budget_ms: float | None = None
    budget_fraction: float | None = None
    teacher_accuracy: float | None = None
    sampler: Literal["tpe", "nsga2", "random"] | str = "tpe"
    population_size: int = 20
    study_name: str | None = None
    target: LatencyTarget | None = None
    seed: int | None = 0
    remeasure: bool = True
    policy: MeasurePolicy | None = None
    max_error: float = MAX_ERROR
    evaluate_infeasible: bool = False
    split: str | None = None
    settle_s: float = 60.0
    allow_busy: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.trials, bool) or not isinstance(self.trials, int) or self.trials < 0:
            raise ValueError(f"trials must be an integer >= 0, got {self.trials!r}")
        if isinstance(self.target, dict):
            object.__setattr__(self, "target", LatencyTarget.from_dict(self.target))
        if isinstance(self.policy, dict):
            object.__setattr__(self, "policy", MeasurePolicy(**self.policy))
        if self.settle_s < 0:
            raise ValueError(f"settle_s must be >= 0 seconds, got {self.settle_s}")

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["target"] = None if self.target is None else self.target.to_dict()
        data["policy"] = None if self.policy is None else dataclasses.asdict(self.policy)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchConfig:
        data = known_fields(cls, data)
        return cls(**data)
