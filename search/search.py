"""The search: an Optuna study over a supernet's subnets, accuracy up and latency down, under a
latency budget; at the end the Pareto subnets are extracted and re-measured on the device."""

from __future__ import annotations

import json
import logging
import os
import statistics
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage

from ofa.supernet import Supernet
from search._families import AnySubnet, latency_family, subnet_from_dict
from search._stale import fail_dead_trials, tag_worker
from search._study import (
    SAMPLERS,
    is_feasible,
    largest_within,
    make_sampler,
    open_storage,
    redact,
    set_budget_constraint,
    subnet_params,
    suggest_subnet,
)
from search.latency import LatencyTarget, MeasuredLatency, compare_latency
from search.pareto import ParetoPoint, SearchResult, write_pareto
from search.plots import plot_pareto_html, plot_pareto_png
from search.predictor import LatencyModel

logger = logging.getLogger(__name__)

__all__ = ["run"]

Evaluate = Callable[[Supernet, Any], float]
Latency = LatencyModel | MeasuredLatency


def _check_inputs(
    supernet: Supernet,
    latency: Latency,
    budget_ms: float,
    trials: int,
    sampler: str,
    target: LatencyTarget | None,
) -> None:
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}: use one of {', '.join(SAMPLERS)}")
    if not isinstance(latency, (LatencyModel, MeasuredLatency)):
        raise TypeError(
            "latency must be a search.LatencyModel or a search.MeasuredLatency, got "
            f"{type(latency).__name__}"
        )
    if target is not None:  # a CNN target without an image size means the space's
        target = latency_family(supernet.family_name).resolve_target(supernet, target)
    if isinstance(latency, LatencyModel):
        latency.check(target, supernet.space)
    elif target is not None and target != latency.target:
        raise ValueError(f"latency measures {latency.target.describe()}, not {target.describe()}")
    if not budget_ms > 0:
        raise ValueError(f"budget_ms must be positive, got {budget_ms}")
    if trials < 0:
        raise ValueError(f"trials must be >= 0, got {trials}")
    smallest = latency(supernet.space.min_subnet())
    if smallest > budget_ms:
        raise ValueError(
            f"budget {budget_ms:g} ms is below the smallest subnet's latency {smallest:.3g} ms on "
            f"{latency.target.describe()}: raise the budget to at least {smallest:.3g} ms"
        )


def _open_study(
    supernet: Supernet,
    storage: BaseStorage,
    name: str,
    sampler: optuna.samplers.BaseSampler,
    budget_ms: float,
    target: LatencyTarget,
) -> optuna.Study:
    study = optuna.create_study(
        storage=storage,
        study_name=name,
        sampler=sampler,
        directions=["maximize", "minimize"],
        load_if_exists=True,
    )
    settings: dict[str, Any] = {
        "ofa_space": supernet.space.to_dict(),
        "ofa_budget_ms": budget_ms,
        "ofa_target": target.to_dict(),
    }
    for key, value in settings.items():
        value = json.loads(json.dumps(value))  # as stored: tuples become lists
        stored = study.user_attrs.get(key)
        if stored is None:
            study.set_user_attr(key, value)
        elif stored != value:
            raise ValueError(
                f"study {name!r} was run with another {key[4:]} ({stored}); continue it with the "
                "same settings or pick a new study name"
            )
    return study


def _objective(
    supernet: Supernet,
    evaluate: Evaluate,
    latency: Latency,
    budget_ms: float,
    evaluate_infeasible: bool,
) -> Callable[[optuna.trial.Trial], tuple[float, float]]:
    cache: dict[AnySubnet, float] = {}

    def objective(trial: optuna.trial.Trial) -> tuple[float, float]:
        tag_worker(trial)
        subnet = suggest_subnet(trial, supernet.space)
        if subnet not in cache:
            cache[subnet] = float(latency(subnet))
        latency_ms = cache[subnet]
        set_budget_constraint(trial, latency_ms=latency_ms, budget_ms=budget_ms)
        trial.set_user_attr("subnet", subnet.to_dict())
        trial.set_user_attr("predicted_ms", latency_ms)
        evaluated = latency_ms <= budget_ms or evaluate_infeasible
        trial.set_user_attr("evaluated", evaluated)
        # an over-budget subnet is never chosen, so its accuracy is not worth computing
        accuracy = float(evaluate(supernet, subnet)) if evaluated else 0.0
        return accuracy, latency_ms

    return objective


def _enqueue_seeds(
    study: optuna.Study, supernet: Supernet, latency: Latency, budget_ms: float
) -> None:
    """The largest uniform subnet within budget and the smallest subnet go first."""
    space = supernet.space
    family = latency_family(supernet.family_name)
    largest = largest_within(
        family.uniform_subnets(space),
        latency,
        budget_ms,
        lambda s: family.flops(supernet, s, latency.target),
    )
    for subnet in (largest, space.min_subnet()):
        if subnet is not None:
            study.enqueue_trial(subnet_params(subnet, space), skip_if_exists=True)


def _front(study: optuna.Study, supernet: Supernet, target: LatencyTarget) -> list[ParetoPoint]:
    points = []
    family = latency_family(supernet.family_name)
    for trial in study.best_trials:  # feasible, non-dominated (Optuna honours the constraints)
        if not is_feasible(trial) or not trial.user_attrs.get("evaluated", True):
            continue
        subnet = subnet_from_dict(supernet.family_name, trial.user_attrs["subnet"])
        points.append(
            ParetoPoint(
                trial_number=trial.number,
                subnet=subnet,
                accuracy=float(trial.values[0]),
                predicted_ms=float(trial.values[1]),
                flops=family.flops(supernet, subnet, target),
                num_params=supernet.num_params(subnet),  # type: ignore[arg-type]
            )
        )
    unique = {p.subnet: p for p in sorted(points, key=lambda p: -p.trial_number)}
    return sorted(unique.values(), key=lambda p: p.predicted_ms)


def _remeasure(
    points: list[ParetoPoint], supernet: Supernet, target: LatencyTarget, warmup: int, rounds: int
) -> list[ParetoPoint]:
    """Extract every Pareto subnet and time them interleaved on the target."""
    if not points:
        return points
    models = {
        str(p.trial_number): supernet.extract(p.subnet)  # type: ignore[arg-type]
        for p in points
    }
    inputs = latency_family(supernet.family_name).inputs(supernet, target)
    results = compare_latency(
        models,
        inputs,
        device=target.device,
        dtype=target.dtype,
        warmup=warmup,
        rounds=rounds,
        num_threads=target.num_threads,
    )
    return [
        replace(
            p,
            measured_ms=results[str(p.trial_number)].median_ms,
            measured_iqr_ms=results[str(p.trial_number)].iqr_ms,
        )
        for p in points
    ]


def _corrected(
    study: optuna.Study,
    supernet: Supernet,
    target: LatencyTarget,
    points: list[ParetoPoint],
    budget_ms: float,
    limit: int = 6,
) -> tuple[float, list[ParetoPoint]]:
    """When the Pareto subnets all measured over budget: the latency model underestimates the
    device now (load, clocks). Scale its predictions by the measured/predicted ratio seen on the
    front and return the front of the evaluated trials that fit under the corrected prediction.
    """
    ratio = statistics.median(
        p.measured_ms / p.predicted_ms
        for p in points
        if p.measured_ms is not None and p.predicted_ms > 0
    )
    if ratio <= 1.0:
        return ratio, []
    done = [
        t
        for t in study.get_trials(deepcopy=False)
        if t.values is not None
        and t.user_attrs.get("evaluated")
        and t.values[1] * ratio <= budget_ms
    ]
    front: dict[AnySubnet, ParetoPoint] = {}
    family = latency_family(supernet.family_name)
    for trial in sorted(done, key=lambda t: (t.values[1], -t.values[0])):
        subnet = subnet_from_dict(supernet.family_name, trial.user_attrs["subnet"])
        best_so_far = max((p.accuracy for p in front.values()), default=float("-inf"))
        if subnet not in front and trial.values[0] > best_so_far:
            front[subnet] = ParetoPoint(
                trial_number=trial.number,
                subnet=subnet,
                accuracy=float(trial.values[0]),
                predicted_ms=float(trial.values[1]),
                flops=family.flops(supernet, subnet, target),
                num_params=supernet.num_params(subnet),  # type: ignore[arg-type]
            )
    return ratio, sorted(front.values(), key=lambda p: -p.accuracy)[:limit]


def _choose(
    points: list[ParetoPoint], budget_ms: float, remeasured: bool
) -> tuple[ParetoPoint | None, str]:
    fitting = [p for p in points if p.within(budget_ms)]
    basis = "measured" if remeasured else "predicted (not re-measured)"
    if fitting:
        best = max(fitting, key=lambda p: (p.accuracy, -p.predicted_ms))
        shown = best.measured_ms if best.measured_ms is not None else best.predicted_ms
        return best, (
            f"best subnet: trial {best.trial_number}, accuracy {best.accuracy:.4f}, "
            f"{basis} {shown:.3g} ms within the {budget_ms:g} ms budget"
        )
    if not points:
        return None, f"no trial ran within the {budget_ms:g} ms budget: run more trials"
    fastest = min(points, key=lambda p: p.measured_ms or p.predicted_ms)
    return None, (
        f"NO subnet fits: none of the {len(points)} Pareto subnets ran within {budget_ms:g} ms "
        f"when re-measured (fastest: {fastest.measured_ms:.3g} ms measured, "
        f"{fastest.predicted_ms:.3g} ms predicted); the latency model underestimates this "
        "device now: re-profile it, or search with a lower budget"
    )


def run(
    supernet: Supernet,
    *,
    evaluate: Evaluate,
    latency: Latency,
    budget_ms: float,
    trials: int,
    sampler: str = "tpe",
    storage: str | os.PathLike | BaseStorage | None = None,
    study_name: str | None = None,
    out_dir: str | os.PathLike | None = None,
    target: LatencyTarget | None = None,
    seed: int | None = 0,
    remeasure: bool = True,
    remeasure_warmup: int = 3,
    remeasure_rounds: int = 10,
    evaluate_infeasible: bool = False,
    population_size: int = 20,
) -> SearchResult:
    """Search ``supernet`` for the most accurate subnets within ``budget_ms`` on a device.

    Args:
        evaluate: ``evaluate(supernet, subnet) -> accuracy`` (higher is better), e.g.
            ``lambda s, n: ofa.evaluate(s, n, data)``.
        latency: a :class:`LatencyModel` (profiled on the device) or :class:`MeasuredLatency`.
        budget_ms: the latency budget; trials above it are infeasible (an Optuna constraint).
        trials: trials this call adds (a study continued from ``storage`` keeps its old ones).
        sampler: ``"tpe"``, ``"nsga2"`` or ``"random"``.
        storage: journal file path, RDB URL or Optuna storage; default ``out_dir/study.journal``.
        study_name: default ``"ofa-search"``; the same name and storage continue a study.
        out_dir: where pareto.json, pareto.csv, pareto.png and pareto.html go (none if ``None``).
        target: when given, refuse a latency model profiled for anything else.
        remeasure: extract the Pareto subnets and time them on the device at the end.

    Example:
        >>> latency = search.LatencyModel.load("runs/latency_cpu.json")
        >>> found = search.run(supernet, evaluate=lambda s, n: ofa.evaluate(s, n, data),
        ...                    latency=latency, budget_ms=20.0, trials=100, out_dir="runs/s")
        >>> found.best.subnet, found.best.measured_ms
    """
    _check_inputs(supernet, latency, budget_ms, trials, sampler, target)
    target = latency.target
    out = None if out_dir is None else Path(out_dir)
    store = open_storage(storage, out)
    name = study_name or "ofa-search"
    study = _open_study(
        supernet,
        store,
        name,
        make_sampler(sampler, seed=seed, population_size=population_size),
        budget_ms,
        target,
    )
    fail_dead_trials(study)
    if not study.get_trials(deepcopy=False):
        _enqueue_seeds(study, supernet, latency, budget_ms)
    study.optimize(
        _objective(supernet, evaluate, latency, budget_ms, evaluate_infeasible), n_trials=trials
    )
    fail_dead_trials(study)
    points = _front(study, supernet, target)
    if remeasure:
        points = _remeasure(points, supernet, target, remeasure_warmup, remeasure_rounds)
    best, message = _choose(points, budget_ms, remeasure)
    also: list[ParetoPoint] = []
    if best is None and remeasure and points:
        ratio, also = _corrected(study, supernet, target, points, budget_ms)
        also = _remeasure(also, supernet, target, remeasure_warmup, remeasure_rounds)
        if also:
            fallback, note = _choose(also, budget_ms, True)
            message = (
                f"{note}: the Pareto subnets measured {ratio:.2g}x their prediction, so "
                f"{len(also)} faster ones were re-measured"
                if fallback
                else message
            )
            best = fallback
    done = [t for t in study.get_trials(deepcopy=False) if t.values is not None]
    result = SearchResult(
        study_name=name,
        storage=redact(str(storage))
        if storage is not None
        else str("in-memory" if out is None else out / "study.journal"),
        budget_ms=budget_ms,
        target=target.to_dict(),
        num_trials=len(done),
        num_feasible=sum(is_feasible(t) for t in done),
        pareto=tuple(points),
        best=best,
        message=message,
        also_measured=tuple(also),
        out_dir=out,
    )
    (logger.info if best is not None else logger.warning)(message)
    if out is not None:
        write_pareto(result, out)
        plot_pareto_png(study, result, out / "pareto.png")
        plot_pareto_html(study, out / "pareto.html")
    return result
