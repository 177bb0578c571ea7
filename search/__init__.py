"""search: latency measurement and models, Optuna search over a supernet's subnets.

Example:
    >>> import search
    >>> latency = search.LatencyModel.profile(supernet, device="cpu", batch_size=1, seq_len=128)
    >>> config = search.SearchConfig(budget_fraction=0.5, trials=100)
    >>> found = search.run(supernet, evaluate=accuracy, latency=latency, config=config,
    ...                    out_dir="runs/search")
    >>> found.best.speedup, found.best.speedup_low, found.best.speedup_high   # paired
"""

from __future__ import annotations

from search._families import LatencyFamily, register_family
from search._measure import measure_speedup
from search._study import SAMPLERS, open_storage, set_budget_constraint, suggest_subnet
from search.config import Budget, SearchConfig
from search.latency import (
    LatencyResult,
    LatencyTarget,
    compare_latency,
    device_name,
    example_inputs,
    measure_latency,
)
from search.measured import MeasuredLatency
from search.pareto import OtherTiming, ParetoPoint, SearchResult, hypervolume, pareto_front
from search.predictor import LatencyModel, StaleProfileError, UnusableProfileError, Validation
from search.search import run
from search.timing import (
    BusyMachineError,
    Estimate,
    MeasurePolicy,
    Paired,
    TooNoisyError,
    choose_threads,
    free_cores,
    measure_paired,
    wait_until_idle,
)

__all__ = [
    "BusyMachineError",
    "SAMPLERS",
    "Budget",
    "SearchConfig",
    "LatencyFamily",
    "register_family",
    "Estimate",
    "MeasurePolicy",
    "Paired",
    "StaleProfileError",
    "TooNoisyError",
    "UnusableProfileError",
    "Validation",
    "choose_threads",
    "free_cores",
    "measure_paired",
    "measure_speedup",
    "wait_until_idle",
    "LatencyModel",
    "LatencyResult",
    "LatencyTarget",
    "MeasuredLatency",
    "OtherTiming",
    "ParetoPoint",
    "SearchResult",
    "compare_latency",
    "device_name",
    "example_inputs",
    "hypervolume",
    "measure_latency",
    "open_storage",
    "pareto_front",
    "run",
    "set_budget_constraint",
    "suggest_subnet",
]
