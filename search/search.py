"""The search: an Optuna study over a supernet's subnets, accuracy up and latency down, under a
latency budget; at the end the Pareto subnets are extracted and re-measured on the device."""

from __future__ import annotations

import json
import logging
import os
import statistics
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage
from torch import nn

from ofa._config import settings_from
from ofa.families import SubnetLike
from ofa.supernet import Supernet
from search._families import latency_family, subnet_from_dict
from search._measure import contradictions
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
from search.config import Budget, SearchConfig
from search.latency import LatencyTarget
from search.measured import MeasuredLatency
from search.pareto import OtherTiming, ParetoPoint, SearchResult, write_pareto
from search.plots import plot_pareto_html, plot_pareto_png
from search.predictor import LatencyModel, StaleProfileError, Validation
from search.timing import (
    UNEQUAL_SLOWDOWN,
    BusyMachineError,
    Estimate,
    MeasurePolicy,
    Paired,
    TooNoisyError,
    busy_clause,
    measure_paired,
    wait_until_idle,
)

logger = logging.getLogger(__name__)

__all__ = ["run"]

Evaluate = Callable[[Supernet, Any], float]
Latency = LatencyModel | MeasuredLatency
# a second budget as the search holds it: its latency (rescaled to now), budget in ms, the
# fraction it came from (None for a budget in ms)
Other = tuple[Latency, float, float | None]


def _check_inputs(
    supernet: Supernet,
    latency: Latency,
    budget_ms: float | None,
    budget_fraction: float | None,
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
    if (budget_ms is None) == (budget_fraction is None):
        raise ValueError("give either budget_ms or budget_fraction (of the teacher's latency)")
    if budget_ms is not None and not budget_ms > 0:
        raise ValueError(f"budget_ms must be positive, got {budget_ms}")
    if budget_fraction is not None and not 0 < budget_fraction <= 1:
        raise ValueError(f"budget_fraction must be in (0, 1], got {budget_fraction}")
    if trials < 0:
        raise ValueError(f"trials must be >= 0, got {trials}")


def _check_also(supernet: Supernet, also: Sequence[Budget], latency: Latency) -> list[Budget]:
    """The second budgets, each checked: a profile of this supernet's space, on a target of
    its own (not the search's own target, nor another second budget's)."""
    seen = [latency.target]
    for budget in also:
        if not isinstance(budget, Budget):
            raise TypeError(f"also takes search.Budget items, got {type(budget).__name__}")
        other = budget.latency
        if not isinstance(other, (LatencyModel, MeasuredLatency)):
            raise TypeError(
                "a search.Budget's latency must be a search.LatencyModel or a "
                f"search.MeasuredLatency, got {type(other).__name__}"
            )
        if isinstance(other, LatencyModel):
            other.check(None, supernet.space)
        if other.target in seen:
            raise ValueError(
                f"a second budget on {other.target.describe()} times what another budget of "
                "this search times: give each budget a target of its own (e.g. prefill and "
                "decode)"
            )
        seen.append(other.target)
    return list(also)


def _check_smallest_predicted(
    supernet: Supernet, latency: Latency, budget_ms: float, slack: float = 1.0
) -> None:
    """Refuse a budget below the smallest subnet's predicted latency, or, with ``slack`` 2,
    below half of it (far enough that no profile moved within 2x would let it fit)."""
    smallest = latency(supernet.space.min_subnet())
    if smallest > slack * budget_ms:
        far = "" if slack == 1.0 else ", less than half of it"
        raise ValueError(
            f"budget {budget_ms:g} ms is below the smallest subnet's latency {smallest:.3g} ms "
            f"on {latency.target.describe()} (predicted{far}): raise the budget to at least "
            f"{smallest:.3g} ms"
        )


def _measure_anchors(
    supernet: Supernet, target: LatencyTarget, teacher: nn.Module | None, policy: MeasurePolicy
) -> Paired:
    """The teacher, the max and the min subnet, measured side by side now (teacher the
    reference; without a separate teacher the max subnet is the teacher)."""
    space = supernet.space
    models: dict[str, nn.Module] = {
        "teacher": teacher if teacher is not None else supernet.extract(space.max_subnet()),  # type: ignore[arg-type]
        "min": supernet.extract(space.min_subnet()),  # type: ignore[arg-type]
    }
    if teacher is not None:
        models["max"] = supernet.extract(space.max_subnet())  # type: ignore[arg-type]
    inputs = latency_family(supernet.family_name).inputs(supernet, target)
    return measure_paired(
        models,
        inputs,
        target=target,
        reference="teacher",
        policy=policy,
        what="the teacher beside the smallest subnet",
    )


def _calibrate_budget(
    supernet: Supernet,
    latency: Latency,
    anchors: Paired,
    budget_ms: float | None,
    budget_fraction: float | None,
    bound: float,
) -> tuple[Latency, float, Validation | None, list[str]]:
    """The latency model checked against the anchors measured now, and the budget in ms now.

    A profile whose min/max shape moved is refused (re-profile). One whose scale moved (the
    machine is slower or faster now) is rescaled to now, and says so; for a budget in ms a move
    beyond 2x is refused (that is not the machine that was profiled). A budget relative to the
    teacher always uses predictions rescaled to now (only ratios matter there). The smallest
    subnet must fit: by its paired share of the teacher, or by its latency measured now.
    """
    notes: list[str] = []
    teacher_ms = anchors.times["teacher"]
    min_share = anchors.ratios["min"]
    max_share = anchors.ratios.get("max", Estimate(1.0, 1.0, 1.0, 0.0, anchors.rounds))
    describe = latency.target.describe()
    validation = None
    if isinstance(latency, LatencyModel):
        max_ms = (
            max_share.scaled(teacher_ms.value)
            if "max" in anchors.ratios
            else teacher_ms  # the max subnet was the teacher
        )
        ratio = min_share.scaled(1.0 / max_share.value)  # min over max
        validation = Validation.from_anchors(latency, max_ms, ratio, bound)
        if validation.stale:
            raise StaleProfileError(
                f"the latency model no longer predicts {describe} ({validation.describe()})",
                "run `ofa profile` again",
            )
        if budget_fraction is None and not 0.5 <= validation.scale <= 2.0:
            raise StaleProfileError(
                f"this device runs at {validation.scale:.2f}x the latency it was profiled at "
                f"({validation.describe()})",
                "that is not the machine as profiled; profile again on the machine as it will "
                "run, or give a budget relative to the teacher (--budget-fraction)",
            )
        if validation.moved:
            notes.append(
                f"the device runs at {validation.scale:.2f}x the profiled latency now "
                f"({validation.describe()}): predictions rescaled to now"
            )
        if budget_fraction is not None or validation.moved:
            latency = latency.rescaled(validation.scale)
    if budget_fraction is not None:
        if min_share.low > budget_fraction:
            raise ValueError(
                f"budget fraction {budget_fraction:g} is below the smallest subnet's share of the "
                f"teacher's latency, {min_share.value:.2f} (95% interval {min_share.low:.2f}-"
                f"{min_share.high:.2f}, measured side by side on {describe}): raise it to at "
                f"least {min_share.high:.2f}"
            )
        return latency, budget_fraction * teacher_ms.value, validation, notes
    assert budget_ms is not None
    smallest = min_share.value * teacher_ms.value
    if min_share.low * teacher_ms.value > budget_ms:
        raise ValueError(
            f"budget {budget_ms:g} ms is below the smallest subnet's latency {smallest:.3g} ms on "
            f"{describe} (measured now): raise the budget to at least {smallest:.3g} ms"
        )
    return latency, budget_ms, validation, notes


def _anchored_budget(
    supernet: Supernet,
    latency: Latency,
    target: LatencyTarget,
    teacher: nn.Module | None,
    policy: MeasurePolicy,
    budget_ms: float | None,
    budget_fraction: float | None,
    bound: float,
    settle_s: float,
) -> tuple[Paired, Latency, float, Validation | None, list[str]]:
    """The anchors measured now and :func:`_calibrate_budget` on them. A profile that reads
    stale or moved is measured once more, after waiting up to ``settle_s`` for idle cores,
    before it is refused: a passing slowdown (another job, a clock that dropped for a few
    seconds) is not a different machine."""
    anchors = _measure_anchors(supernet, target, teacher, policy)
    try:
        return anchors, *_calibrate_budget(
            supernet, latency, anchors, budget_ms, budget_fraction, bound
        )
    except StaleProfileError as first:
        logger.warning("%s; measuring the anchors once more before refusing", first)
        if target.device == "cpu" and settle_s > 0:
            wait_until_idle(anchors.threads, settle_s)
    anchors = _measure_anchors(supernet, target, teacher, policy)
    return anchors, *_calibrate_budget(
        supernet, latency, anchors, budget_ms, budget_fraction, bound
    )


def _open_study(
    supernet: Supernet,
    storage: BaseStorage,
    name: str,
    sampler: optuna.samplers.BaseSampler,
    budget: dict[str, float],
    target: LatencyTarget,
    also: Sequence[Budget] = (),
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
        **budget,  # ofa_budget_ms, or ofa_budget_fraction (its ms follow the teacher measured now)
        "ofa_target": target.to_dict(),
    }
    if also:
        settings["ofa_also"] = [other.settings() for other in also]
    settings = {k: json.loads(json.dumps(v)) for k, v in settings.items()}  # tuples -> lists
    stored = study.user_attrs
    if study.get_trials(deepcopy=False) and ("ofa_also" in stored) != ("ofa_also" in settings):
        had = "second budgets" if "ofa_also" in stored else "no second budget"
        raise ValueError(
            f"study {name!r} was run with {had}; continue it with the same budgets or pick a "
            "new study name"
        )
    for key, value in settings.items():  # every check before any write: a refusal writes nothing
        if key in stored and stored[key] != value:
            what = "second budget" if key == "ofa_also" else key[4:]
            raise ValueError(
                f"study {name!r} was run with another {what} ({stored[key]}); continue it with "
                "the same settings or pick a new study name"
            )
    other_budget = {"ofa_budget_ms", "ofa_budget_fraction"} - set(settings)
    if stored and other_budget & set(stored):
        raise ValueError(
            f"study {name!r} was run with a budget of another kind "
            f"({', '.join(f'{k[4:]}={stored[k]}' for k in other_budget & set(stored))}); "
            "continue it with the same kind of budget or pick a new study name"
        )
    for key, value in settings.items():
        if key not in stored:
            study.set_user_attr(key, value)
    return study


def _objective(
    supernet: Supernet,
    evaluate: Evaluate,
    latency: Latency,
    budget_ms: float,
    evaluate_infeasible: bool,
    others: Sequence[Other] = (),
) -> Callable[[optuna.trial.Trial], tuple[float, float]]:
    cache: dict[SubnetLike, tuple[float, ...]] = {}

    def objective(trial: optuna.trial.Trial) -> tuple[float, float]:
        tag_worker(trial)
        subnet = suggest_subnet(trial, supernet.space)
        if subnet not in cache:
            cache[subnet] = tuple(float(lat(subnet)) for lat in (latency, *(o[0] for o in others)))
        latency_ms, *others_ms = cache[subnet]
        set_budget_constraint(trial, latency_ms=latency_ms, budget_ms=budget_ms)
        fits = latency_ms <= budget_ms
        for which, (ms, (_, other_budget, _)) in enumerate(zip(others_ms, others), start=1):
            set_budget_constraint(trial, latency_ms=ms, budget_ms=other_budget, which=which)
            fits = fits and ms <= other_budget
        trial.set_user_attr("subnet", subnet.to_dict())
        trial.set_user_attr("predicted_ms", latency_ms)
        if others:
            trial.set_user_attr("also_predicted_ms", others_ms)
        evaluated = fits or evaluate_infeasible
        trial.set_user_attr("evaluated", evaluated)
        # an over-budget subnet is never chosen, so its accuracy is not worth computing
        accuracy = float(evaluate(supernet, subnet)) if evaluated else 0.0
        return accuracy, latency_ms

    return objective


def _enqueue_seeds(
    study: optuna.Study, supernet: Supernet, latency: Latency, budget_ms: float, trials: int
) -> None:
    """First the subnets training trained every step (``supernet.trained_subnets``: width
    multipliers, anchors) that fit the budget and lie inside no other that does, most FLOPs
    first; then the largest uniform subnet within budget and the smallest subnet; with a
    profiled latency model, then the other uniform subnets on the budget's edge (within it and
    inside no other uniform subnet that is), most FLOPs first; up to a quarter of the trials.
    A trained shape is the best-trained subnet near its size, and one inside a larger fitting
    uniform subnet is not on the edge, so TPE would rarely draw it; the uniform edge holds
    subnets of every depth, where TPE starts from."""
    space = supernet.space
    family = latency_family(supernet.family_name)
    uniform = family.uniform_subnets(space)

    def flops(subnet: Any) -> int:
        return family.flops(supernet, subnet, latency.target)

    def outermost(fitting: list[Any]) -> list[Any]:
        fitting = sorted(fitting, key=flops, reverse=True)
        return [s for s in fitting if not any(o != s and family.contains(o, s) for o in fitting)]

    seeds = outermost([s for s in supernet.trained_subnets if latency(s) <= budget_ms])
    seeds += [largest_within(uniform, latency, budget_ms, flops), space.min_subnet()]
    if isinstance(latency, LatencyModel):  # a measured latency would time every uniform subnet
        seeds += outermost([s for s in uniform if latency(s) <= budget_ms])
    unique = list(dict.fromkeys(s for s in seeds if s is not None))
    for subnet in unique[: max(2, trials // 4)]:
        study.enqueue_trial(subnet_params(subnet, space), skip_if_exists=True)


def _point(
    trial: optuna.trial.FrozenTrial,
    supernet: Supernet,
    target: LatencyTarget,
    others: Sequence[Other],
) -> ParetoPoint:
    """The Pareto point of a finished trial, with its predictions under the second budgets."""
    subnet = subnet_from_dict(supernet.family_name, trial.user_attrs["subnet"])
    others_ms = trial.user_attrs.get("also_predicted_ms", [])
    return ParetoPoint(
        trial_number=trial.number,
        subnet=subnet,
        accuracy=float(trial.values[0]),
        predicted_ms=float(trial.values[1]),
        flops=latency_family(supernet.family_name).flops(supernet, subnet, target),
        num_params=supernet.num_params(subnet),  # type: ignore[arg-type]
        also=tuple(
            OtherTiming(
                target=lat.target.to_dict(),
                budget_ms=budget,
                budget_fraction=fraction,
                predicted_ms=float(ms),
            )
            for (lat, budget, fraction), ms in zip(others, others_ms)
        ),
    )


def _front(
    study: optuna.Study, supernet: Supernet, target: LatencyTarget, others: Sequence[Other] = ()
) -> list[ParetoPoint]:
    points = [
        _point(trial, supernet, target, others)
        for trial in study.best_trials  # feasible, non-dominated (Optuna honours constraints)
        if is_feasible(trial) and trial.user_attrs.get("evaluated", True)
    ]
    unique = {p.subnet: p for p in sorted(points, key=lambda p: -p.trial_number)}
    return sorted(unique.values(), key=lambda p: p.predicted_ms)


def _remeasure(
    points: list[ParetoPoint],
    models: dict[str, nn.Module],
    supernet: Supernet,
    target: LatencyTarget,
    teacher: nn.Module,
    policy: MeasurePolicy,
    budget_ms: float,
) -> tuple[dict[str, Estimate], dict[str, Estimate], Paired]:
    """Time every Pareto subnet (``models``, extracted, by trial number) side by side with the
    teacher on ``target``:
    each one's latency and share of the teacher's (the median of per-round ratios), by trial
    number. A subnet contained in another that timed slower beyond both intervals is measured
    again beside it; if that holds, the machine is too noisy.

    The intervals held to the policy's bound are the teacher's and those of the subnets that
    may be chosen (predicted near the budget, and the most accurate): the tiny subnets far
    below it are the noisiest to time and would stop a search whose answer does not depend on
    them. They are reported with the interval they reached.
    """
    family = latency_family(supernet.family_name)
    inputs = family.inputs(supernet, target)
    paired = measure_paired(
        {"teacher": teacher, **models},
        inputs,
        target=target,
        reference="teacher",
        policy=policy,
        what="the Pareto subnets beside the teacher",
        matters=_may_be_chosen(points, budget_ms),
    )
    times, ratios = dict(paired.times), dict(paired.ratios)
    subnets = {str(p.trial_number): p.subnet for p in points}
    for small, big in contradictions(family, subnets, ratios):
        again = measure_paired(
            {"teacher": teacher, small: models[small], big: models[big]},
            inputs,
            target=target,
            reference="teacher",
            policy=policy,
            what="two Pareto subnets that contradict each other",
        )
        for name in (small, big):
            times[name], ratios[name] = again.times[name], again.ratios[name]
    if contradictions(family, subnets, ratios):
        raise TooNoisyError(
            f"too noisy to measure on {target.describe()}: a subnet contained in another still "
            "times slower than it after measuring both again; measure on a quieter machine or "
            "with fewer threads (--threads 1)"
        )
    return times, ratios, paired


def _measure_all(
    points: list[ParetoPoint],
    supernet: Supernet,
    target: LatencyTarget,
    teacher: nn.Module,
    policy: MeasurePolicy,
    budget_ms: float,
    fraction: float | None = None,
    others: Sequence[Other] = (),
) -> tuple[list[ParetoPoint], Estimate | None, Paired | None, list[Paired]]:
    """The Pareto subnets timed beside the teacher on the search's target and on each second
    budget's (:func:`_remeasure`), each point given its latency, share of the teacher's and
    speedup with its 95% interval there. The subnet chosen (the most accurate that fits every
    budget by those measurements) is then measured again beside the teacher alone on each
    target, over at least :meth:`MeasurePolicy.final`'s span, and those figures are reported
    for it (a choice that no longer fits is made again and confirmed alike). Returns the
    points, the teacher's latency on the search's target (from the chosen subnet's
    measurement), and the measurements on the search's target and on the second ones.
    """
    if not points:
        return points, None, None, []
    targets = [(target, budget_ms), *((lat.target, budget) for lat, budget, _ in others)]
    # extracted once, timed on every target
    models = {str(p.trial_number): supernet.extract(p.subnet) for p in points}  # type: ignore[arg-type]
    ratios: list[dict[str, Estimate]] = []
    measured: list[Paired] = []
    for which, (here, budget) in enumerate(targets):
        predicted = [
            p if which == 0 else replace(p, predicted_ms=p.also[which - 1].predicted_ms)
            for p in points
        ]
        times, ratio, paired = _remeasure(
            predicted, models, supernet, here, teacher, policy, budget
        )
        points = [
            _timed(p, which, times[str(p.trial_number)], ratio[str(p.trial_number)])
            for p in points
        ]
        ratios.append(ratio)
        measured.append(paired)
    family = latency_family(supernet.family_name)
    confirmed: set[tuple[str, int]] = set()
    teacher_ms = measured[0].times["teacher"]  # the chosen subnet's own measurement's, below
    for _ in range(len(points)):
        best, _note = _choose(points, budget_ms, True, fraction)
        key = None if best is None else str(best.trial_number)
        again_on = [w for w in range(len(targets)) if key and (key, w) not in confirmed]
        if best is None or not again_on:
            break
        for which in again_on:
            here = targets[which][0]
            confirmed.add((str(key), which))
            again = measure_paired(  # refuses if even alone beside the teacher it stays too wide
                {"teacher": teacher, key: models[key]},  # type: ignore[index]
                family.inputs(supernet, here),
                target=here,
                reference="teacher",
                policy=policy.final(),
                what="the chosen subnet beside the teacher",
            )
            ratios[which][key] = again.ratios[key]
            if which == 0:
                teacher_ms = again.times["teacher"]
            if again.contended:  # the load the caller's settle rule must see
                measured[which] = again
            points = [
                _timed(p, which, again.times[key], again.ratios[key]) if p is best else p
                for p in points
            ]
            best = next(p for p in points if str(p.trial_number) == key)
    return points, teacher_ms, measured[0], measured[1:]


def _may_be_chosen(points: list[ParetoPoint], budget_ms: float) -> set[str]:
    """The Pareto subnets whose measured figures decide the choice: those predicted within
    0.6-1.5x the budget (the profile's error is held to 15%), and the most accurate one."""
    near = {str(p.trial_number) for p in points if 0.6 <= p.predicted_ms / budget_ms <= 1.5}
    return near | {str(max(points, key=lambda p: p.accuracy).trial_number)}


def _timed(point: ParetoPoint, which: int, time_ms: Estimate, ratio: Estimate) -> ParetoPoint:
    """``point`` with its paired figures on the search's target (``which`` 0) or on its
    second budget ``which``."""
    if which == 0:
        return _with_timing(point, time_ms, ratio)
    speedup = ratio.inverse()
    other = replace(
        point.also[which - 1],
        measured_ms=time_ms.value,
        share=ratio.value,
        speedup=speedup.value,
        speedup_low=speedup.low,
        speedup_high=speedup.high,
    )
    return replace(point, also=(*point.also[: which - 1], other, *point.also[which:]))


def _with_timing(point: ParetoPoint, time_ms: Estimate, ratio: Estimate) -> ParetoPoint:
    """``point`` with its paired latency, share of the teacher's and speedup."""
    speedup = ratio.inverse()
    return replace(
        point,
        measured_ms=time_ms.value,
        measured_iqr_ms=time_ms.spread * time_ms.value,
        share=ratio.value,
        speedup=speedup.value,
        speedup_low=speedup.low,
        speedup_high=speedup.high,
    )


def _most_contended(measured: list[Paired]) -> Paired:
    """The measurement that other jobs contended, if one was (the first such), else the first."""
    return next((m for m in measured if m.contended), measured[0])


def _settle(
    paired: Paired, target: LatencyTarget, config: SearchConfig
) -> tuple[bool, str | None]:
    """After a final measurement that other jobs contended (:attr:`Paired.contended`): whether
    the cores went idle within ``config.settle_s`` (so that the caller measures again), or
    else the WARNING note to report with the loaded figures (``config.allow_busy``).

    Raises:
        BusyMachineError: the cores stayed busy and ``allow_busy`` is off.
    """
    if not paired.contended or target.device != "cpu":
        return False, None
    if config.settle_s > 0:
        logger.info(
            "the final measurement ran while %s: waiting up to %.0f s for idle cores",
            paired.describe_load(),
            config.settle_s,
        )
        if wait_until_idle(paired.threads, config.settle_s) is not None:
            return True, None
    waited = f" and for the {config.settle_s:.0f} s waited after" if config.settle_s > 0 else ""
    if not config.allow_busy:
        raise BusyMachineError.of(
            paired,
            target,
            f"the subnets were timed{waited}",
            "Rerun when the machine is quieter (the study's trials are kept), wait longer "
            f"(--settle {max(600.0, 2 * config.settle_s):.0f}), or report the loaded figures "
            "with a warning (--allow-busy)",
        )
    what = busy_clause(paired, f"the subnets were timed{waited}")
    return False, (
        f"WARNING: {what}; {UNEQUAL_SLOWDOWN}, so on a quiet machine the speedups can differ "
        "beyond their intervals. Measure again on a quiet machine: `ofa export ... --remeasure`"
    )


def _corrected(
    study: optuna.Study,
    supernet: Supernet,
    target: LatencyTarget,
    points: list[ParetoPoint],
    budget_ms: float,
    limit: int = 6,
    others: Sequence[Other] = (),
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
        # the second budgets' predictions still fit them (only the first one measured over)
        and all(
            ms <= budget
            for ms, (_, budget, _) in zip(t.user_attrs.get("also_predicted_ms", []), others)
        )
    ]
    front: dict[SubnetLike, ParetoPoint] = {}
    for trial in sorted(done, key=lambda t: (t.values[1], -t.values[0])):
        point = _point(trial, supernet, target, others)
        best_so_far = max((p.accuracy for p in front.values()), default=float("-inf"))
        if point.subnet not in front and point.accuracy > best_so_far:
            front[point.subnet] = point
    return ratio, sorted(front.values(), key=lambda p: -p.accuracy)[:limit]


def _choose(
    points: list[ParetoPoint],
    budget_ms: float,
    remeasured: bool,
    fraction: float | None = None,
) -> tuple[ParetoPoint | None, str]:
    fitting = [p for p in points if p.within(budget_ms, fraction)]
    basis = "measured" if remeasured else "predicted (not re-measured)"
    budget = (
        f"the {budget_ms:.3g} ms budget"
        if fraction is None
        else f"the budget of {fraction:g} x the teacher ({budget_ms:.3g} ms)"
    )
    if fitting:
        best = max(fitting, key=lambda p: (p.accuracy, -p.predicted_ms))
        shown = best.measured_ms if best.measured_ms is not None else best.predicted_ms
        speed = (
            ""
            if best.speedup is None
            else f", {best.describe_speedup()} the teacher's speed (paired, 95% interval)"
        ) + "".join(f"; {other.describe()}" for other in best.also)
        return best, (
            f"best subnet: trial {best.trial_number}, accuracy {best.accuracy:.4f}, "
            f"{basis} {shown:.3g} ms within {budget}{speed}"
        )
    if not points:
        return None, f"no trial ran within {budget}: run more trials"
    fastest = min(points, key=lambda p: p.measured_ms or p.predicted_ms)
    return None, (
        f"NO subnet fits: none of the {len(points)} Pareto subnets ran within {budget} "
        f"when re-measured (fastest: {fastest.measured_ms:.3g} ms measured, "
        f"{fastest.predicted_ms:.3g} ms predicted); the latency model underestimates this "
        "device now: re-profile it, or search with a higher budget"
    )


def _same_scores(study: optuna.Study) -> str | None:
    """A warning when every evaluated trial scored the same (a broken model or metric)."""
    scores = [
        round(t.values[0], 9)
        for t in study.get_trials(deepcopy=False)
        if t.values is not None and t.user_attrs.get("evaluated")
    ]
    if len(scores) >= 3 and len(set(scores)) == 1:
        return (
            f"WARNING: all {len(scores)} evaluated trials scored {scores[0]:.4f}: the accuracy "
            "does not tell subnets apart (a broken teacher or supernet, too few examples, or a "
            "wrong label column); the choice among them is by latency alone"
        )
    return None


def run(
    supernet: Supernet,
    *,
    evaluate: Evaluate,
    latency: Latency,
    config: SearchConfig | None = None,
    teacher: nn.Module | None = None,
    storage: str | os.PathLike | BaseStorage | None = None,
    out_dir: str | os.PathLike | None = None,
    also: Sequence[Budget] = (),
    **settings: Any,
) -> SearchResult:
    """Search ``supernet`` for the most accurate subnets within a latency budget on a device.

    Before the study, the teacher, the max and the min subnet are measured side by side now
    (:mod:`search.timing`): a latency model whose anchors moved beyond ``max_error`` is refused
    (:class:`search.StaleProfileError`), and a budget below the smallest subnet is refused. At
    the end the Pareto subnets are extracted and measured side by side with the teacher; the
    best one is the most accurate that fits by that measurement, and its speedup is the paired
    one, with its 95% interval. A machine too noisy for that raises :class:`TooNoisyError`.

    A new study starts from seeds: the largest uniform subnet within budget, the min subnet
    and, with a latency model, the other uniform subnets on the budget's edge (up to a quarter
    of the trials), since training trains uniform subnets directly; the sampler goes on from
    there.

    Args:
        evaluate: ``evaluate(supernet, subnet) -> accuracy`` (higher is better), e.g.
            ``lambda s, n: ofa.evaluate(s, n, data)``.
        latency: a :class:`LatencyModel` (profiled on the device) or :class:`MeasuredLatency`.
        config: the settings (budget, trials, sampler, study name...): :class:`SearchConfig`.
        teacher: the model the speedup is quoted against (default: the max subnet extracted).
        storage: journal file path, RDB URL or Optuna storage; default ``out_dir/study.journal``.
        out_dir: where pareto.json, pareto.csv, pareto.png and pareto.html go (none if ``None``).
        also: second budgets on other targets of the same subnets (:class:`search.Budget`),
            e.g. a decode budget beside a prefill search: every trial must fit them too, and
            the Pareto subnets are re-measured beside the teacher on each target.
        **settings: the former keyword form of ``config`` (``budget_ms=...``, ``trials=...``),
            kept for one release with a ``DeprecationWarning``.

    Example:
        >>> latency = search.LatencyModel.load("runs/latency_cpu.json")
        >>> config = search.SearchConfig(budget_fraction=0.5, trials=100)
        >>> found = search.run(supernet, evaluate=lambda s, n: ofa.evaluate(s, n, data),
        ...                    latency=latency, config=config, out_dir="runs/s")
        >>> found.best.subnet, found.best.speedup, found.best.measured_ms
    """
    config = settings_from(SearchConfig, config, settings, where="search.run", name="SearchConfig")
    budget_ms, budget_fraction, trials = config.budget_ms, config.budget_fraction, config.trials
    sampler, study_name, target, seed = (
        config.sampler,
        config.study_name,
        config.target,
        config.seed,
    )
    remeasure, policy, max_error, split = (
        config.remeasure,
        config.policy,
        config.max_error,
        config.split,
    )
    teacher_accuracy = config.teacher_accuracy
    _check_inputs(supernet, latency, budget_ms, budget_fraction, trials, sampler, target)
    target = latency.target
    also = _check_also(supernet, also, latency)
    policy = policy or MeasurePolicy()
    teacher_model = (
        teacher if teacher is not None else supernet.extract(supernet.space.max_subnet())
    )  # type: ignore[arg-type]
    out = None if out_dir is None else Path(out_dir)
    store = open_storage(storage, out)  # a bad storage URL fails before anything is timed
    if remeasure or budget_fraction is not None:
        if budget_ms is not None and isinstance(latency, LatencyModel):
            # far below the prediction (beyond the 2x a profile may move): no need to measure
            _check_smallest_predicted(supernet, latency, budget_ms, slack=2.0)
        anchors, latency, budget, validation, notes = _anchored_budget(
            supernet,
            latency,
            target,
            teacher,
            policy,
            budget_ms,
            budget_fraction,
            max_error,
            config.settle_s,
        )
        teacher_ms: Estimate | None = anchors.times["teacher"]
        logger.info("teacher %s ms on %s; budget %.3g ms", teacher_ms, target.describe(), budget)
        others: list[Other] = []
        for other in also:  # each second budget's profile checked and its budget set the same way
            if other.budget_ms is not None and isinstance(other.latency, LatencyModel):
                _check_smallest_predicted(supernet, other.latency, other.budget_ms, slack=2.0)
            _, other_latency, other_budget, _, other_notes = _anchored_budget(
                supernet,
                other.latency,
                other.latency.target,
                teacher,
                policy,
                other.budget_ms,
                other.budget_fraction,
                max_error,
                config.settle_s,
            )
            others.append((other_latency, other_budget, other.budget_fraction))
            notes += [f"{other.latency.target.describe()}: {n}" for n in other_notes]
    else:  # an extra worker of a shared study: the first worker checks and re-measures
        assert budget_ms is not None
        budget, validation, notes, teacher_ms = budget_ms, None, [], None
        _check_smallest_predicted(supernet, latency, budget)
        if any(other.budget_ms is None for other in also):
            raise ValueError(
                "a worker that does not re-measure takes second budgets in ms (the first "
                "worker's, from its pareto.json), not as a fraction of the teacher"
            )
        for other in also:
            _check_smallest_predicted(supernet, other.latency, other.budget_ms)  # type: ignore[arg-type]
        others = [(other.latency, other.budget_ms, None) for other in also]  # type: ignore[misc]
    name = study_name or "ofa-search"
    study = _open_study(
        supernet,
        store,
        name,
        make_sampler(sampler, seed=seed, population_size=config.population_size),
        {"ofa_budget_ms": budget}
        if budget_fraction is None
        else {"ofa_budget_fraction": budget_fraction},
        target,
        also,
    )
    fail_dead_trials(study)
    if not study.get_trials(deepcopy=False):
        _enqueue_seeds(study, supernet, latency, budget, trials)
    study.optimize(
        _objective(supernet, evaluate, latency, budget, config.evaluate_infeasible, others),
        n_trials=trials,
    )
    fail_dead_trials(study)
    warning = _same_scores(study)
    if warning:
        notes.append(warning)
        logger.warning(warning)
    points = _front(study, supernet, target, others)
    paired: Paired | None = None
    other_paired: list[Paired] = []

    def measure_all(front: list[ParetoPoint]) -> tuple[Any, ...]:
        return _measure_all(
            front, supernet, target, teacher_model, policy, budget, budget_fraction, others
        )

    if remeasure:
        points, teacher_ms, paired, other_paired = measure_all(points)
    best, message = _choose(points, budget, remeasure, budget_fraction)
    faster: list[ParetoPoint] = []
    if best is None and remeasure and points:
        ratio, faster = _corrected(study, supernet, target, points, budget, others=others)
        faster, _, paired_faster, other_faster = measure_all(faster)
        if faster:
            fallback, note = _choose(faster, budget, True, budget_fraction)
            message = (
                f"{note}: the Pareto subnets measured {ratio:.2g}x their prediction, so "
                f"{len(faster)} faster ones were re-measured"
                if fallback
                else message
            )
            best, paired, other_paired = fallback, paired_faster, other_faster
    if best is not None and paired is not None:
        loaded = _most_contended([paired, *other_paired])
        first = loaded.describe_load()
        again, note = _settle(loaded, target, config)
        if again:  # the cores went idle: the figures under load are dropped, not mixed in
            points, teacher_ms, paired, other_paired = measure_all(points)
            best, message = _choose(points, budget, remeasure, budget_fraction)
            faster = []
            loaded = _most_contended([paired, *other_paired])  # type: ignore[list-item]
            note = (
                f"the Pareto subnets were first measured while {first}; the cores went idle and "
                f"they were measured beside the teacher again ({loaded.describe_load()})"
            )
            if loaded.contended:  # the load came back: stop or warn as if it never left
                note = _settle(loaded, target, replace(config, settle_s=0))[1]
        if note is not None:
            notes.append(note)
            (logger.warning if note.startswith("WARNING") else logger.info)(note)
    load = None if paired is None else paired.load()
    done = [t for t in study.get_trials(deepcopy=False) if t.values is not None]
    result = SearchResult(
        study_name=name,
        storage=redact(str(storage))
        if storage is not None
        else str("in-memory" if out is None else out / "study.journal"),
        budget_ms=budget,
        target=target.to_dict(),
        num_trials=len(done),
        num_feasible=sum(is_feasible(t) for t in done),
        pareto=tuple(points),
        best=best,
        message=message,
        also_measured=tuple(faster),
        out_dir=out,
        budget_fraction=budget_fraction,
        teacher_ms=None if teacher_ms is None else teacher_ms.value,
        validation=None if validation is None else validation.to_dict(),
        notes=tuple(notes),
        load=load,
        also=tuple(
            {
                **other.settings(),
                "budget_ms": budget_ms_other,
                "teacher_ms": None
                if i >= len(other_paired)
                else other_paired[i].times["teacher"].value,
            }
            for i, (other, (_, budget_ms_other, _)) in enumerate(zip(also, others))
        ),
    )
    (logger.info if best is not None else logger.warning)(message)
    if out is not None:
        write_pareto(result, out)
        teacher_point = (
            None
            if teacher_accuracy is None or teacher_ms is None
            else (teacher_accuracy, teacher_ms.value)
        )
        _plot(study, result, out, teacher_point, split)
    return result


def _plot(
    study: optuna.Study,
    result: SearchResult,
    out: Path,
    teacher: tuple[float, float] | None,
    split: str | None,
) -> None:
    plot_pareto_png(study, result, out / "pareto.png", teacher=teacher, split=split)
    plot_pareto_html(study, out / "pareto.html", teacher=teacher, split=split)
