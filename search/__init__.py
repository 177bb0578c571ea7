"""search: latency measurement and models, Optuna search over a supernet's subnets.

Example:
    >>> import search
    >>> latency = search.LatencyModel.profile(supernet, device="cpu", batch_size=1, seq_len=128)
    >>> found = search.run(supernet, evaluate=accuracy, latency=latency, budget_ms=20.0,
    ...                    trials=100, out_dir="runs/search")
"""

from __future__ import annotations

from search._study import SAMPLERS, open_storage, set_budget_constraint, suggest_subnet
from search.latency import (
    LatencyResult,
    LatencyTarget,
    MeasuredLatency,
    compare_latency,
    device_name,
    example_inputs,
    measure_latency,
)
from search.pareto import ParetoPoint, SearchResult, hypervolume, pareto_front
from search.predictor import LatencyModel
from search.search import run

__all__ = [
    "SAMPLERS",
    "LatencyModel",
    "LatencyResult",
    "LatencyTarget",
    "MeasuredLatency",
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
