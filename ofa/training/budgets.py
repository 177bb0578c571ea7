"""The shapes to train every step for the FLOP budgets you will deploy at.

Width multipliers (DynaBERT) train, every step, the uniform subnet at a fraction of every width
at full depth; they brought BERT's and the CNN's 50%-FLOPs subnets level with same-shape
prune-then-fine-tune. A small budget can have no full-depth multiplier under it (a CNN at 25% of
its FLOPs needs shallower stages or smaller kernels); for such a budget an *anchor* is trained
instead: the uniform subnet with the most FLOPs under it, at whatever depth and kernel size.
:func:`budget_shapes` picks both from the budgets, so ``ofa train --flop-budgets 0.5,0.25``
needs no shapes worked out by hand; with ``fill`` (``ofa train --fill-budgets``) a budget's
multiplier's subnet is widened to the largest uniform subnet around it that still fits.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable
from typing import Any

from ofa.families import space_family
from ofa.training.config import PhaseConfig

__all__ = ["BudgetShapes", "anchor_for", "budget_shapes", "filled_for", "width_multiplier_for"]

logger = logging.getLogger(__name__)


def _probe(space: Any) -> PhaseConfig:
    """A phase with every dimension of the family open: a multiplier's subnet there is at full
    depth (and kernels) with every width scaled."""
    dimensions = space_family(space).phase_dimensions
    return PhaseConfig(name="probe", steps=1, **{name: "all" for name in dimensions})


@dataclasses.dataclass(frozen=True)
class BudgetShapes:
    """What :func:`budget_shapes` found: the multipliers and anchors to train, and per budget
    (a fraction of the max subnet's FLOPs) the multiplier or the anchor that serves it."""

    width_multipliers: tuple[float, ...]
    anchors: tuple[Any, ...]
    per_budget: dict[float, float | Any]


def _multiplier_subnet(supernet: Any, multiplier: float, phase: PhaseConfig) -> Any:
    probe = dataclasses.replace(phase, width_multipliers=(multiplier,))
    return probe.multiplier_subnets(supernet.space)[0]


def width_multiplier_for(
    supernet: Any,
    target_flops: float,
    *,
    phase: PhaseConfig | None = None,
    cost: Callable[[Any], float] | None = None,
) -> float | None:
    """The largest width multiplier whose uniform subnet in ``phase``'s part of the space (by
    default: full depth and kernels, every width) has at most ``target_flops``, by bisection
    (FLOPs grow with the multiplier), to 4 decimals; None when even the narrowest has more.
    ``cost`` (subnet -> a figure that grows with width, e.g. a latency model's prediction)
    replaces the FLOPs, and ``target_flops`` is then in its unit."""

    probe = _probe(supernet.space) if phase is None else phase
    measure = supernet.flops if cost is None else cost

    def at(m: float) -> float:
        return measure(_multiplier_subnet(supernet, m, probe))

    if at(1e-6) > target_flops:
        return None
    low, high = 1e-6, 1.0
    for _ in range(30):
        mid = (low + high) / 2
        low, high = (mid, high) if at(mid) <= target_flops else (low, mid)
    # to 4 decimals, down where rounding up would leave the budget
    for rounded in (round(low, 4), int(low * 10_000) / 10_000):
        if rounded > 0 and at(rounded) <= target_flops:
            return rounded
    return low


def anchor_for(
    supernet: Any, target_flops: float, *, cost: Callable[[Any], float] | None = None
) -> Any | None:
    """The uniform subnet (``space.uniform_subnets()``) with the most FLOPs (or ``cost``) at or
    under ``target_flops``; the first found on ties; None when none fits."""
    measure = supernet.flops if cost is None else cost
    return _most_under(supernet.space.uniform_subnets(), target_flops, measure)


def filled_for(
    supernet: Any, start: Any, target_flops: float, *, cost: Callable[[Any], float] | None = None
) -> Any:
    """The uniform subnet (``space.uniform_subnets()``) that contains ``start`` (every
    dimension at least its, ``ModelFamily.contains``) with the most FLOPs (or ``cost``) at or
    under ``target_flops``; ``start`` itself when no wider one fits. A width multiplier scales
    every width alike and takes the choices at or above that fraction, so the steps between
    choices can leave much of a budget unused: here the heads (a decoder's query heads per KV
    head) and FFN are widened each on its own while the budget holds (a multiplier's subnet
    already has full depth, hidden width and KV heads). A CNN's uniform subnets share one
    width fraction, so for a CNN multiplier it is ``start`` itself."""
    measure = supernet.flops if cost is None else cost
    family = space_family(supernet.space)
    around = (s for s in supernet.space.uniform_subnets() if family.contains(s, start))
    return _most_under(around, target_flops, measure, best=start)


def _most_under(
    candidates: Iterable[Any],
    target: float,
    measure: Callable[[Any], float],
    *,
    best: Any | None = None,
) -> Any | None:
    """The candidate with the most ``measure`` at or under ``target``, the first on ties;
    ``best`` (already known to fit) unless one beats it; None when none fits."""
    best_value = -1.0 if best is None else measure(best)
    for candidate in candidates:
        value = measure(candidate)
        if best_value < value <= target:
            best, best_value = candidate, value
    return best


def budget_shapes(
    supernet: Any,
    fractions: tuple[float, ...],
    *,
    cost: Callable[[Any], float] | None = None,
    what: str = "FLOP",
    fill: bool = False,
) -> BudgetShapes:
    """For each FLOP budget (a fraction of the max subnet's FLOPs, in (0, 1]): the full-depth
    width multiplier whose subnet fits it or, where none does, the anchor (see module doc).
    With ``cost`` (subnet -> a figure that grows with width: a latency model, so that the
    shapes trained every step are the widest under each *latency* budget), the fractions are
    of ``cost(max subnet)``; ``what`` names it in the log and errors ("latency").

    With ``fill``, a budget whose multiplier's subnet leaves room under it gets, instead of
    the multiplier, the widest uniform subnet around that subnet that still fits
    (:func:`filled_for`: e.g. 3 heads and FFN 768 where the multiplier gives 3 and 384),
    trained as an anchor.

    Raises ValueError for a fraction outside (0, 1], and for a budget that no uniform subnet
    of the space fits (smaller than its min subnet), naming the smallest fraction possible.
    """
    if not fractions or not all(0 < f <= 1 for f in fractions):
        raise ValueError(
            f"{what} budgets must be fractions in (0, 1], e.g. 0.5,0.25; got {fractions}"
        )
    if not hasattr(supernet.space, "uniform_subnets"):
        raise ValueError(
            f"{type(supernet.space).__name__} lists no uniform subnets; give the shapes to train "
            "as width multipliers and anchors instead of FLOP budgets"
        )
    measure = supernet.flops if cost is None else cost
    full = measure(supernet.space.max_subnet())
    multipliers: list[float] = []
    anchors: list[Any] = []
    per_budget: dict[float, float | Any] = {}
    for fraction in fractions:
        multiplier = width_multiplier_for(supernet, fraction * full, cost=cost)
        shape: float | Any = multiplier
        how = "width multiplier"
        if multiplier is None:
            shape = anchor_for(supernet, fraction * full, cost=cost)
            how = "no full-depth width multiplier fits; anchor"
            if shape is None:
                smallest = measure(supernet.space.min_subnet()) / full
                raise ValueError(
                    f"no subnet of this space has {fraction:g} of the max subnet's {what} or "
                    f"less (the min subnet has {smallest:.3f}); give budgets of at least "
                    f"{smallest:.3f}"
                )
        elif fill:
            start = _multiplier_subnet(supernet, multiplier, _probe(supernet.space))
            filled = filled_for(supernet, start, fraction * full, cost=cost)
            if filled != start:
                shape = filled
                how = (
                    f"width multiplier {multiplier} ({100 * measure(start) / full:.0f}%) filled to"
                )
        per_budget[fraction] = shape
        found = multipliers if isinstance(shape, float) else anchors
        if shape not in found:
            found.append(shape)
        described = (
            f"{shape}" if isinstance(shape, float) else
            f"{shape.to_json()} ({100 * measure(shape) / full:.0f}%)"
        )  # fmt: skip
        logger.info("%s budget %.0f%%: %s %s", what, 100 * fraction, how, described)
    return BudgetShapes(tuple(multipliers), tuple(anchors), per_budget)
