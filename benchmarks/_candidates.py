"""Pick a subnet under a FLOPs budget the way a user of the search would: best of several.

A trained supernet scores any subnet for the cost of one evaluation, so the benchmarks compare
the best of ``count`` candidates on a held-out split (the OFA claim) and report it on another.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TypeVar

import torch

S = TypeVar("S")
log = logging.getLogger(__name__)


def candidates_under(
    space,
    flops: Callable[[S], float],
    budget: float,
    count: int,
    *,
    extra: Iterable[S] = (),
    keep: Callable[[S], bool] = lambda s: True,
    pool: int = 3000,
    seed: int = 7,
) -> list[S]:
    """The ``count`` largest distinct subnets of ``space`` with ``flops(s) <= budget``.

    Drawn from ``pool`` seeded random samples plus the max subnet and ``extra`` (uniform shapes,
    say), keeping those for which ``keep`` holds (the shapes training covered, say). Raises when
    none fits, so a too-small budget is not silently replaced.
    """
    generator = torch.Generator().manual_seed(seed)
    drawn = {space.sample(generator) for _ in range(pool)} | {space.max_subnet(), *extra}
    drawn = {s for s in drawn if keep(s)}
    cost = {s: flops(s) for s in drawn}
    fitting = sorted((s for s in drawn if cost[s] <= budget), key=lambda s: -cost[s])
    if not fitting:
        raise ValueError(f"no subnet of the space fits {budget:.3g} FLOPs; raise the budget")
    return fitting[:count]


def best_of(subnets: list[S], score: Callable[[S], float]) -> tuple[S, dict[S, float]]:
    """The subnet of highest ``score`` (first one on ties) and every score."""
    scores: dict[S, float] = {}
    for i, subnet in enumerate(subnets):
        scores[subnet] = score(subnet)
        log.info("candidate %d/%d: %.4f", i + 1, len(subnets), scores[subnet])
    best = max(subnets, key=lambda s: scores[s])
    return best, scores
