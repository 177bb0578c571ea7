"""Pareto fronts of (accuracy, latency), their hypervolume, and the pareto.json / .csv files."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ofa._io import write_json_atomic
from ofa.cnn_space import CnnSubnet
from ofa.space import Subnet

__all__ = ["ParetoPoint", "SearchResult", "hypervolume", "pareto_front", "write_pareto"]


@dataclass(frozen=True, kw_only=True)
class ParetoPoint:
    """One subnet on the front: its accuracy, predicted and (after re-measuring) measured ms."""

    trial_number: int
    subnet: Subnet | CnnSubnet
    accuracy: float
    predicted_ms: float
    measured_ms: float | None = None
    measured_iqr_ms: float | None = None
    flops: int = 0
    num_params: int = 0

    def within(self, budget_ms: float) -> bool:
        """Fits the budget: by measured latency when re-measured, else by prediction."""
        latency = self.measured_ms if self.measured_ms is not None else self.predicted_ms
        return latency <= budget_ms

    def to_dict(self) -> dict[str, Any]:
        return {
            "trial_number": self.trial_number,
            "subnet": self.subnet.to_dict(),
            "accuracy": self.accuracy,
            "predicted_ms": self.predicted_ms,
            "measured_ms": self.measured_ms,
            "measured_iqr_ms": self.measured_iqr_ms,
            "flops": self.flops,
            "num_params": self.num_params,
        }


@dataclass(frozen=True, kw_only=True)
class SearchResult:
    """What a search returns: the Pareto front and the best subnet within the budget.

    ``best`` is ``None`` when no Pareto subnet's measured latency fits; ``message`` says so.
    """

    study_name: str
    storage: str
    budget_ms: float
    target: dict[str, Any]
    num_trials: int
    num_feasible: int
    pareto: tuple[ParetoPoint, ...]
    best: ParetoPoint | None
    message: str
    also_measured: tuple[ParetoPoint, ...] = ()
    out_dir: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "study_name": self.study_name,
            "storage": self.storage,
            "budget_ms": self.budget_ms,
            "target": self.target,
            "num_trials": self.num_trials,
            "num_feasible": self.num_feasible,
            "best": None if self.best is None else self.best.to_dict(),
            "message": self.message,
            "pareto": [point.to_dict() for point in self.pareto],
            "also_measured": [point.to_dict() for point in self.also_measured],
        }


def pareto_front(points: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """Non-dominated (accuracy, latency_ms) pairs: higher accuracy and lower latency win."""
    front: list[tuple[float, float]] = []
    for accuracy, latency in sorted(points, key=lambda p: (p[1], -p[0])):
        if not front or accuracy > front[-1][0]:
            front.append((accuracy, latency))
    return front


def hypervolume(
    points: Iterable[tuple[float, float]], *, reference_accuracy: float, reference_ms: float
) -> float:
    """Area dominated by (accuracy, latency_ms) points, bounded by a reference point.

    Points with accuracy below ``reference_accuracy`` or latency above ``reference_ms`` add
    nothing. Units: accuracy times milliseconds.

    Example:
        >>> hypervolume([(0.9, 5.0), (0.8, 2.0)], reference_accuracy=0.5, reference_ms=10.0)
        2.9
    """
    inside = [(a, ms) for a, ms in points if a > reference_accuracy and ms < reference_ms]
    front = pareto_front(inside)
    area = 0.0
    for index, (accuracy, latency) in enumerate(front):
        right = front[index + 1][1] if index + 1 < len(front) else reference_ms
        # the strip between this point's latency and the next one's, at this point's height
        area += (right - latency) * (accuracy - reference_accuracy)
    return area


_POINT_COLUMNS = [
    "trial_number",
    "accuracy",
    "predicted_ms",
    "measured_ms",
    "measured_iqr_ms",
    "within_budget",
]
_BERT_COLUMNS = ["depth", "layers", "num_heads", "ffn_dims", "hidden_size"]
_CNN_COLUMNS = ["widths", "depths", "kernel_sizes"]


def _subnet_columns(subnet: Subnet | CnnSubnet) -> dict[str, Any]:
    """The subnet's choices as CSV cells: tuples become space-separated numbers."""
    if isinstance(subnet, CnnSubnet):
        return {name: " ".join(map(str, getattr(subnet, name))) for name in _CNN_COLUMNS}
    return {
        "depth": subnet.depth,
        "layers": " ".join(map(str, subnet.layers)),
        "num_heads": " ".join(map(str, subnet.num_heads)),
        "ffn_dims": " ".join(map(str, subnet.ffn_dims)),
        "hidden_size": subnet.hidden_size,
    }


def _csv_text(points: Sequence[ParetoPoint], budget_ms: float) -> str:
    buffer = io.StringIO()
    cnn = bool(points) and isinstance(points[0].subnet, CnnSubnet)
    columns = _POINT_COLUMNS + (_CNN_COLUMNS if cnn else _BERT_COLUMNS) + ["flops", "num_params"]
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    for point in points:
        writer.writerow(
            {
                "trial_number": point.trial_number,
                "accuracy": f"{point.accuracy:.6f}",
                "predicted_ms": f"{point.predicted_ms:.4f}",
                "measured_ms": "" if point.measured_ms is None else f"{point.measured_ms:.4f}",
                "measured_iqr_ms": ""
                if point.measured_iqr_ms is None
                else f"{point.measured_iqr_ms:.4f}",
                "within_budget": point.within(budget_ms),
                **_subnet_columns(point.subnet),
                "flops": point.flops,
                "num_params": point.num_params,
            }
        )
    return buffer.getvalue()


def write_pareto(result: SearchResult, out_dir: str | os.PathLike) -> list[Path]:
    """Write ``pareto.json`` and ``pareto.csv`` into ``out_dir`` atomically; return the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, csv_path = out / "pareto.json", out / "pareto.csv"
    write_json_atomic(json_path, result.to_dict())
    tmp = out / f".pareto.csv.{os.getpid()}.tmp"
    tmp.write_text(_csv_text(result.pareto, result.budget_ms))
    os.replace(tmp, csv_path)
    return [json_path, csv_path]
