"""Pareto fronts of (accuracy, latency), their hypervolume, and the pareto.json / .csv files."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ofa._io import write_json_atomic, write_text_atomic
from ofa.families import SubnetLike
from search._families import family_of

__all__ = [
    "OtherTiming",
    "ParetoPoint",
    "SearchResult",
    "hypervolume",
    "pareto_front",
    "write_pareto",
]


def _fits(
    share: float | None,
    measured_ms: float | None,
    predicted_ms: float,
    budget_ms: float,
    fraction: float | None,
) -> bool:
    """A budget relative to the teacher by the paired share when re-measured; otherwise by
    measured latency when re-measured, else by prediction."""
    if fraction is not None and share is not None:
        return share <= fraction
    latency = measured_ms if measured_ms is not None else predicted_ms
    return latency <= budget_ms


def _speedup_text(speedup: float | None, low: float | None, high: float | None) -> str:
    if speedup is None:
        return "-"
    return f"{speedup:.2f}x ({low:.2f}-{high:.2f})"


@dataclass(frozen=True, kw_only=True)
class OtherTiming:
    """A Pareto subnet's figures under a search's second budget (:class:`search.Budget`):
    another latency target of the same subnet, e.g. its decode step beside a prefill search.

    The fields mean what :class:`ParetoPoint`'s do, on ``target``; ``teacher_ms`` is the
    teacher measured beside it on that target, in the same run."""

    target: dict[str, Any]
    budget_ms: float
    budget_fraction: float | None
    predicted_ms: float
    measured_ms: float | None = None
    share: float | None = None
    speedup: float | None = None
    speedup_low: float | None = None
    speedup_high: float | None = None

    def fits(self) -> bool:
        return _fits(
            self.share, self.measured_ms, self.predicted_ms, self.budget_ms, self.budget_fraction
        )

    def describe(self) -> str:
        """'decode: 1.92x (1.85-1.99) the teacher's speed, 3.1 ms within 0.6 x the teacher'."""
        phase = self.target.get("phase", "prefill")
        shown = self.measured_ms if self.measured_ms is not None else self.predicted_ms
        budget = (
            f"{self.budget_ms:.3g} ms"
            if self.budget_fraction is None
            else f"{self.budget_fraction:g} x the teacher ({self.budget_ms:.3g} ms)"
        )
        speed = (
            ""
            if self.speedup is None
            else f", {_speedup_text(self.speedup, self.speedup_low, self.speedup_high)} the "
            "teacher's speed"
        )
        fit = "within" if self.fits() else "NOT within"
        return f"{phase}: {shown:.3g} ms {fit} {budget}{speed}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "budget_ms": self.budget_ms,
            "budget_fraction": self.budget_fraction,
            "predicted_ms": self.predicted_ms,
            "measured_ms": self.measured_ms,
            "share_of_teacher": self.share,
            "speedup": self.speedup,
            "speedup_low": self.speedup_low,
            "speedup_high": self.speedup_high,
        }


@dataclass(frozen=True, kw_only=True)
class ParetoPoint:
    """One subnet on the front: its accuracy, predicted and (after re-measuring) measured ms."""

    trial_number: int
    subnet: SubnetLike
    accuracy: float
    predicted_ms: float
    measured_ms: float | None = None
    measured_iqr_ms: float | None = None
    flops: int = 0
    num_params: int = 0
    # re-measured side by side with the teacher: this subnet's latency over the teacher's
    # (median of per-round ratios) and the teacher's over this one's, with its 95% interval
    share: float | None = None
    speedup: float | None = None
    speedup_low: float | None = None
    speedup_high: float | None = None
    # its figures under the search's second budgets (search.Budget), in their order
    also: tuple[OtherTiming, ...] = ()

    def within(self, budget_ms: float, fraction: float | None = None) -> bool:
        """Fits the budget (and every second budget): a budget relative to the teacher by the
        paired share when re-measured; otherwise by measured latency when re-measured, else by
        prediction."""
        fits = _fits(self.share, self.measured_ms, self.predicted_ms, budget_ms, fraction)
        return fits and all(other.fits() for other in self.also)

    def describe_speedup(self) -> str:
        """'1.92x (1.85-1.99)': the paired speedup over the teacher and its 95% interval."""
        return _speedup_text(self.speedup, self.speedup_low, self.speedup_high)

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
            "share_of_teacher": self.share,
            "speedup": self.speedup,
            "speedup_low": self.speedup_low,
            "speedup_high": self.speedup_high,
            **({"also": [other.to_dict() for other in self.also]} if self.also else {}),
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
    budget_fraction: float | None = None
    teacher_ms: float | None = None  # measured in this run, beside the Pareto subnets
    validation: dict[str, Any] | None = None  # the latency model's anchors measured again
    notes: tuple[str, ...] = ()
    # the load the best subnet's figures were measured under (search.timing.Paired.contended)
    load: dict[str, Any] | None = None
    # the second budgets (search.Budget): each one's target, budget_ms, budget_fraction and
    # the teacher's latency on that target measured in this run
    also: tuple[dict[str, Any], ...] = ()

    def fits(self, point: ParetoPoint) -> bool:
        return point.within(self.budget_ms, self.budget_fraction)

    def to_dict(self) -> dict[str, Any]:
        return {
            "study_name": self.study_name,
            "storage": self.storage,
            "budget_ms": self.budget_ms,
            "budget_fraction": self.budget_fraction,
            "teacher_ms": self.teacher_ms,
            "validation": self.validation,
            "notes": list(self.notes),
            "load": self.load,
            "target": self.target,
            "num_trials": self.num_trials,
            "num_feasible": self.num_feasible,
            "best": None if self.best is None else self.best.to_dict(),
            "message": self.message,
            "pareto": [point.to_dict() for point in self.pareto],
            "also_measured": [point.to_dict() for point in self.also_measured],
            **({"also": list(self.also)} if self.also else {}),
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


def _csv_text(points: Sequence[ParetoPoint], budget_ms: float) -> str:
    buffer = io.StringIO()
    family = family_of(points[0].subnet) if points else None
    names = list(family.csv_names) if family is not None else []
    columns = _POINT_COLUMNS + names + ["flops", "num_params"]
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
                **family.csv_columns(point.subnet),  # type: ignore[union-attr]
                "flops": point.flops,
                "num_params": point.num_params,
            }
        )
    return buffer.getvalue()


def write_pareto(result: SearchResult, out_dir: str | os.PathLike) -> list[Path]:
    """Write ``pareto.json`` and ``pareto.csv`` into ``out_dir`` atomically; return the paths.

    A result without a best subnet never replaces an earlier result that has one: when
    ``out_dir/pareto.json`` already names a best subnet and ``result.best`` is None, the
    earlier files stay and this result goes to ``pareto.failed.json`` / ``pareto.failed.csv``
    (a warning says so). A result with a best subnet replaces the files as usual.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = "pareto"
    if result.best is None and _has_best(out / "pareto.json"):
        stem = "pareto.failed"
        _logger().warning(
            "this search found no best subnet (%s); %s keeps the earlier best, and this "
            "result is in %s",
            result.message,
            out / "pareto.json",
            out / "pareto.failed.json",
        )
    json_path, csv_path = out / f"{stem}.json", out / f"{stem}.csv"
    write_json_atomic(json_path, result.to_dict())
    write_text_atomic(csv_path, _csv_text(result.pareto, result.budget_ms))  # cleans dead writers'
    if stem == "pareto":  # a failure recorded earlier is no longer the latest word
        for stale in (out / "pareto.failed.json", out / "pareto.failed.csv"):
            stale.unlink(missing_ok=True)
    return [json_path, csv_path]


def _logger() -> Any:
    import logging

    return logging.getLogger(__name__)


def _has_best(path: Path) -> bool:
    """True when ``path`` is a readable search result whose ``best`` is set."""
    import json

    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("best") is not None
