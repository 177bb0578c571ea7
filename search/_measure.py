"""Measuring many subnets of one supernet so that their figures agree with each other.

Each subnet is timed in a small block beside a fixed reference (the max subnet), and its
latency is its per-round ratio to the reference times the reference's latency over the whole
run: a machine that slows down halfway slows the reference too, and the ratio cancels it.
After all blocks, a subnet contained in another (every dimension smaller or equal) that timed
slower beyond the noise is a contradiction; both are measured again, side by side.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from torch import nn
from tqdm.auto import tqdm

from ofa.supernet import Supernet
from search._families import latency_family
from search.latency import LatencyTarget
from search.timing import Estimate, MeasurePolicy, Paired, TooNoisyError, measure_paired

logger = logging.getLogger(__name__)

__all__ = ["SubnetTiming", "contradictions", "measure_anchors", "measure_subnets"]

K = TypeVar("K")

_BLOCK = 3  # subnets per block beside the reference


@dataclass(frozen=True)
class SubnetTiming:
    """One subnet's latency (ms) and the 95% interval of its ratio to the reference."""

    ms: float
    interval: float
    ratio: Estimate


def _block(
    reference: nn.Module,
    models: dict[str, nn.Module],
    inputs: Any,
    target: LatencyTarget,
    policy: MeasurePolicy,
) -> Paired:
    """One block; measured again once if its spread is over the bound, then refused."""
    for attempt in range(2):
        paired = measure_paired(
            {"reference": reference, **models},
            inputs,
            target=target,
            reference="reference",
            policy=policy,
            what="the profile's subnets",
            refuse=attempt == 1,
        )
        if paired.worst_interval() <= policy.refuse_above:
            break
    return paired


def measure_subnets(
    supernet: Supernet,
    target: LatencyTarget,
    subnets: Sequence[Any],
    *,
    policy: MeasurePolicy,
    progress: bool = False,
    desc: str = "profile subnets",
) -> tuple[list[SubnetTiming], Estimate]:
    """Latency of each subnet, in blocks beside the max subnet; and the max subnet's latency.

    Raises TooNoisyError when a block stays too noisy, or when more than a tenth of the
    contained pairs still contradict each other after being measured again.
    """
    family = latency_family(supernet.family_name)
    inputs = family.inputs(supernet, target)
    reference = supernet.extract(supernet.space.max_subnet())
    ratios: list[Estimate | None] = [None] * len(subnets)
    blocks = [
        list(range(i, min(i + _BLOCK, len(subnets)))) for i in range(0, len(subnets), _BLOCK)
    ]
    for block in tqdm(blocks, desc=desc, disable=not progress):
        models = {str(i): supernet.extract(subnets[i]) for i in block}
        paired = _block(reference, models, inputs, target, policy)
        for i in block:
            ratios[i] = paired.ratios[str(i)]
    _resolve_contradictions(supernet, subnets, ratios, reference, inputs, target, policy)
    # the absolute scale: the max subnet beside the min one, as LatencyModel.validate
    # re-measures them later, so that check compares like with like
    reference_ms = measure_anchors(supernet, target, max_model=reference, policy=policy).times[
        "max"
    ]
    timings = [
        SubnetTiming(ms=r.scaled(reference_ms.value).value, interval=r.interval, ratio=r)
        for r in ratios
        if r is not None
    ]
    return timings, reference_ms


def measure_anchors(
    supernet: Supernet,
    target: LatencyTarget,
    *,
    policy: MeasurePolicy | None = None,
    max_model: nn.Module | None = None,
) -> Paired:
    """The max and the min subnet side by side (the max the reference): the anchors a profile
    takes its scale from and a later check measures again."""
    space = supernet.space
    return measure_paired(
        {
            "max": max_model if max_model is not None else supernet.extract(space.max_subnet()),
            "min": supernet.extract(space.min_subnet()),
        },
        latency_family(supernet.family_name).inputs(supernet, target),
        target=target,
        reference="max",
        policy=policy,
        what="the latency model's anchors",
    )


def measure_speedup(
    supernet: Supernet,
    subnet: Any,
    target: LatencyTarget,
    *,
    teacher: nn.Module | None = None,
    policy: MeasurePolicy | None = None,
) -> Paired:
    """``subnet`` extracted and timed beside the teacher (default: the max subnet), the
    teacher the reference: ``paired.speedup("subnet")`` with its interval, and the load the
    rounds ran under (``paired.contended``).

    Example:
        >>> paired = search.measure_speedup(supernet, subnet, search.LatencyTarget(seq_len=64))
        >>> str(paired.speedup("subnet")), paired.describe_load()
    """
    space = supernet.space
    return measure_paired(
        {
            "teacher": teacher if teacher is not None else supernet.extract(space.max_subnet()),
            "subnet": supernet.extract(subnet),
        },
        latency_family(supernet.family_name).inputs(supernet, target),
        target=target,
        reference="teacher",
        policy=(policy or MeasurePolicy()).final(),
        what="the subnet beside the teacher",
    )


def contradictions(
    family: Any, subnets: Mapping[K, Any], ratios: Mapping[K, Estimate | None]
) -> list[tuple[K, K]]:
    """Keys (small, big): ``small`` is contained in ``big`` (every dimension smaller or equal)
    but timed slower beyond both 95% intervals, which no machine explains: measure again."""
    found = []
    for i, small in subnets.items():
        for j, big in subnets.items():
            a, b = ratios.get(i), ratios.get(j)
            if i == j or a is None or b is None or small == big:
                continue
            if a.low > b.high and family.contains(big, small):
                found.append((i, j))
    return found


def _resolve_contradictions(
    supernet: Supernet,
    subnets: Sequence[Any],
    ratios: list[Estimate | None],
    reference: nn.Module,
    inputs: Any,
    target: LatencyTarget,
    policy: MeasurePolicy,
) -> None:
    """Measure every contradicting pair again side by side; refuse if too many remain."""
    family = latency_family(supernet.family_name)
    by_index = dict(enumerate(subnets))
    pairs = contradictions(family, by_index, dict(enumerate(ratios)))
    if not pairs:
        return
    logger.info(
        "%d contained subnets timed slower than their container: measuring again", len(pairs)
    )
    for i, j in pairs:
        models = {str(i): supernet.extract(subnets[i]), str(j): supernet.extract(subnets[j])}
        paired = _block(reference, models, inputs, target, policy)
        ratios[i], ratios[j] = paired.ratios[str(i)], paired.ratios[str(j)]
    remaining = contradictions(family, by_index, dict(enumerate(ratios)))
    if len(remaining) > max(1, len(subnets) // 10):
        raise TooNoisyError(
            f"too noisy to profile on {target.describe()}: {len(remaining)} subnets still time "
            "slower than subnets that contain them after measuring again; profile on a quieter "
            "machine or with fewer threads (--threads 1)"
        )
