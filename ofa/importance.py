"""Importance of heads, FFN neurons and hidden channels. Pure: scoring changes nothing.

Metrics:
    ``"taylor"``: first-order Taylor, ``sum |w * dL/dw|`` over each unit's weights, summed over
    batches (DynaBERT, NNI's TaylorPruner). ``"l1"`` / ``"l2"``: the L1 / L2 norm of each
    unit's weights (NNI's L1NormPruner / L2NormPruner). Scores of a unit sum over every
    parameter coupled to it (see :class:`ofa.groups.UnitGroup`). ``"bn_scale"``: the absolute
    batch-norm scale of each channel (Network Slimming, NNI's SlimPruner); groups with no batch
    norm fall back to L1. ``"fpgm"``: each unit's summed distance to the others (filter pruning
    via geometric median, NNI's FPGMPruner): units near the median are the most replaceable.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from ofa.groups import UnitGroup

logger = logging.getLogger(__name__)

__all__ = ["METRICS", "score", "default_loss"]

Metric = Literal["taylor", "l1", "l2", "bn_scale", "fpgm"]
METRICS: tuple[str, ...] = ("taylor", "l1", "l2", "bn_scale", "fpgm")
LossFn = Callable[[Any, Mapping[str, Tensor]], Tensor]


def default_loss(outputs: Any, batch: Mapping[str, Tensor]) -> Tensor:
    """The task loss when the batch has labels; otherwise a label-free proxy.

    Without labels, a classifier is scored against its own predictions (cross-entropy to the
    argmax) and a bare encoder by the mean squared output, so a unit matters when removing it
    changes what the model outputs.
    """
    if isinstance(outputs, Tensor):  # a CNN's logits
        labels = batch.get("labels")
        target = labels if labels is not None else outputs.argmax(-1).detach()
        return F.cross_entropy(outputs, target)
    loss = getattr(outputs, "loss", None)
    if loss is not None:
        return loss
    logits = getattr(outputs, "logits", None)
    if logits is not None:
        return F.cross_entropy(logits, logits.argmax(-1).detach())
    hidden = outputs.last_hidden_state if hasattr(outputs, "last_hidden_state") else outputs[0]
    return 0.5 * hidden.pow(2).mean()


def _unit_reduce(stat: Tensor, group: UnitGroup, dim: int) -> Tensor:
    """Sum an elementwise statistic over everything but ``dim``, then over each unit's block."""
    per_index = (
        stat.transpose(0, dim).reshape(stat.shape[dim], -1).sum(1) if stat.dim() > 1 else stat
    )
    return per_index.view(group.size, group.block).sum(1)


def _accumulate(
    totals: dict[str, Tensor], groups: list[UnitGroup], stats: Mapping[str, Tensor]
) -> None:
    for group in groups:
        for name, dim in group.members:
            totals[group.name] += _unit_reduce(stats[name], group, dim).double().cpu()


@contextlib.contextmanager
def _scoring_mode(supernet: Any) -> Iterator[None]:
    """Max subnet, eval mode, every parameter differentiable; all restored afterwards."""
    was_training = supernet.training
    frozen = [p for p in supernet.parameters() if not p.requires_grad]
    try:
        supernet.eval()
        for param in frozen:
            param.requires_grad_(True)
        with supernet.using(supernet.space.max_subnet()):
            yield
    finally:
        for param in frozen:
            param.requires_grad_(False)
        supernet.train(was_training)


def score(
    supernet: Any,
    batches: Iterable[Mapping[str, Tensor]] | None = None,
    *,
    metric: Metric = "taylor",
    loss_fn: LossFn | None = None,
    max_batches: int | None = None,
) -> dict[str, Tensor]:
    """Score every coupled unit of ``supernet``; the supernet is left exactly as it was.

    Args:
        supernet: an :class:`ofa.Supernet`.
        batches: dicts of model inputs (``input_ids``, ``attention_mask``, optional ``labels``);
            needed for ``"taylor"`` only.
        metric: ``"taylor"``, ``"l1"``, ``"l2"``, ``"bn_scale"`` or ``"fpgm"``.
        loss_fn: ``(outputs, batch) -> loss``; :func:`default_loss` when ``None``.
        max_batches: stop after this many batches.

    Returns:
        Unit-group name (``"encoder.layer.0.heads"``, ``"encoder.layer.0.ffn"``, ``"hidden"``,
        prefixed as the model's parameters are) to a float64 CPU tensor, one score per unit.

    Example:
        >>> scores = ofa.importance.score(supernet, metric="l1")
        >>> ofa.reorder_(supernet, scores)
    """
    if metric not in METRICS:
        raise ValueError(f"unknown importance metric {metric!r}: use one of {METRICS}")
    groups = supernet.unit_groups()
    params = dict(supernet.model.named_parameters())
    totals = {g.name: torch.zeros(g.size, dtype=torch.float64) for g in groups}
    if metric in ("l1", "l2"):
        with torch.no_grad():
            stats = {n: p.abs() if metric == "l1" else p.pow(2) for n, p in params.items()}
            _accumulate(totals, groups, stats)
        return {k: v.sqrt() if metric == "l2" else v for k, v in totals.items()}
    if metric in ("bn_scale", "fpgm"):
        with torch.no_grad():
            return {g.name: _weight_metric(metric, g, params) for g in groups}
    if batches is None:
        raise ValueError('metric "taylor" needs batches: pass an iterable of model-input dicts')
    return _taylor(supernet, groups, params, totals, batches, loss_fn or default_loss, max_batches)


def _weight_metric(metric: str, group: UnitGroup, params: Mapping[str, Tensor]) -> Tensor:
    if metric == "bn_scale" and group.scales:
        return sum(
            params[n].detach().abs().view(group.size, -1).sum(1).double().cpu()
            for n in group.scales
        )
    if metric == "bn_scale":
        logger.info("group %s has no batch norm: bn_scale falls back to L1", group.name)
        total = torch.zeros(group.size, dtype=torch.float64)
        _accumulate({group.name: total}, [group], {n: params[n].abs() for n, _ in group.members})
        return total
    rows = [  # (units, elements of one unit in this member)
        params[n].detach().transpose(0, dim).reshape(group.size, -1).double().cpu()
        for n, dim in group.members
    ]
    units = torch.cat(rows, dim=1)
    return torch.cdist(units, units).sum(1)


def _taylor(
    supernet: Any,
    groups: list[UnitGroup],
    params: dict[str, Tensor],
    totals: dict[str, Tensor],
    batches: Iterable[Mapping[str, Tensor]],
    loss_fn: LossFn,
    max_batches: int | None,
) -> dict[str, Tensor]:
    names = sorted({name for group in groups for name, _ in group.members})
    device = next(supernet.parameters()).device
    count = 0
    with _scoring_mode(supernet):
        for batch in tqdm(batches, desc="importance (taylor)", leave=False, total=max_batches):
            if max_batches is not None and count >= max_batches:
                break
            batch = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()}
            loss = loss_fn(supernet(**batch), batch)
            grads = torch.autograd.grad(loss, [params[n] for n in names], allow_unused=True)
            with torch.no_grad():
                stats = {
                    n: (params[n] * g).abs() if g is not None else torch.zeros_like(params[n])
                    for n, g in zip(names, grads)
                }
                _accumulate(totals, groups, stats)
            count += 1
    if count == 0:
        raise ValueError("no batches were given to score: pass at least one batch")
    logger.info("scored %d unit groups with taylor over %d batches", len(groups), count)
    return totals
