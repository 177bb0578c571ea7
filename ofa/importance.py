"""Importance of heads, FFN neurons and hidden channels. Pure: scoring changes nothing.

Metrics:
    ``"taylor"``: first-order Taylor, ``sum |w * dL/dw|`` over each unit's weights, summed over
    batches (DynaBERT, NNI's TaylorPruner). ``"l1"`` / ``"l2"``: the L1 / L2 norm of each
    unit's weights (NNI's L1NormPruner / L2NormPruner). Scores of a unit sum over every
    parameter coupled to it (see :class:`ofa.groups.UnitGroup`). ``"bn_scale"``: the absolute
    batch-norm scale of each channel (Network Slimming, NNI's SlimPruner); groups with no batch
    norm fall back to L1. ``"fpgm"``: each unit's summed distance to the others (filter pruning
    via geometric median, NNI's FPGMPruner): units near the median are the most replaceable.
    ``"activation"``: the L2 norm, over the calibration tokens, of what each unit feeds into the
    linear layers that read it (Minitron's activation-based importance, Sreenivas et al. 2024:
    a head's attention output, an MLP neuron's activation, a residual channel's normalised
    value); padding tokens are left out when the batch has an ``attention_mask``. Groups no
    linear layer reads fall back to L2.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from ofa.groups import UnitGroup

logger = logging.getLogger(__name__)

__all__ = ["METRICS", "score", "default_loss"]

Metric = Literal["taylor", "l1", "l2", "bn_scale", "fpgm", "activation"]
METRICS: tuple[str, ...] = ("taylor", "l1", "l2", "bn_scale", "fpgm", "activation")
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
        logits = logits.flatten(0, -2)  # a causal LM's (batch, tokens, vocab): one per token
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
            needed for ``"taylor"`` and ``"activation"``.
        metric: ``"taylor"``, ``"l1"``, ``"l2"``, ``"bn_scale"``, ``"fpgm"`` or
            ``"activation"``.
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
        raise ValueError(f"metric {metric!r} needs batches: pass an iterable of model-input dicts")
    if metric == "activation":
        return _activation(supernet, groups, params, batches, max_batches)
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


def _readers(model: Any, groups: list[UnitGroup]) -> dict[str, tuple[Any, int]]:
    """Linear layers whose input features are units of some group: name -> (module, index of
    the weight's first input dimension). Head-layout linears say how many trailing weight
    dimensions are inputs (``input_dims``); a plain ``nn.Linear`` has one."""
    readers = {}
    for group in groups:
        for name, dim in group.members:
            path, _, param = name.rpartition(".")
            if param != "weight" or path in readers:
                continue
            module = model.get_submodule(path)
            if not isinstance(module, torch.nn.Linear):
                continue
            offset = module.weight.dim() - getattr(module, "input_dims", 1)
            if math.prod(module.weight.shape[offset:]) == module.in_features:
                readers[path] = (module, offset)
    return readers


def _squared_inputs(
    supernet: Any,
    readers: Mapping[str, tuple[Any, int]],
    batches: Iterable[Mapping[str, Tensor]],
    max_batches: int | None,
) -> dict[str, Tensor]:
    """Per reader, the sum over the batches' (unpadded) tokens of each input feature squared."""
    sums = {p: torch.zeros(m.in_features, dtype=torch.float64) for p, (m, _) in readers.items()}
    mask: list[Tensor | None] = [None]  # the current batch's attention mask

    def recorder(path: str) -> Callable[..., None]:
        def record(module: Any, args: tuple[Any, ...]) -> None:
            squares = args[0].detach().float().pow(2)  # (..., in_features)
            current = mask[0]
            if current is not None and tuple(current.shape) == tuple(squares.shape[:-1]):
                squares = squares * current.to(squares)[..., None]
            sums[path] += squares.reshape(-1, squares.shape[-1]).sum(0).double().cpu()

        return record

    handles = [m.register_forward_pre_hook(recorder(p)) for p, (m, _) in readers.items()]
    device = next(supernet.parameters()).device
    count = 0
    try:
        with _scoring_mode(supernet), torch.no_grad():
            for batch in tqdm(batches, desc="importance (activation)", leave=False):
                if max_batches is not None and count >= max_batches:
                    break
                batch = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()}
                mask[0] = batch.get("attention_mask")
                supernet(**batch)
                count += 1
    finally:
        for handle in handles:
            handle.remove()
    if count == 0:
        raise ValueError("no batches were given to score: pass at least one batch")
    logger.info("recorded the inputs of %d linear layers over %d batches", len(readers), count)
    return sums


def _activation(
    supernet: Any,
    groups: list[UnitGroup],
    params: Mapping[str, Tensor],
    batches: Iterable[Mapping[str, Tensor]],
    max_batches: int | None,
) -> dict[str, Tensor]:
    readers = _readers(supernet.model, groups)
    sums = _squared_inputs(supernet, readers, batches, max_batches)
    totals = {}
    for group in groups:
        total = torch.zeros(group.size, dtype=torch.float64)
        read = False
        for name, dim in group.members:
            path = name.rpartition(".")[0]
            if name.endswith(".weight") and path in readers and dim >= readers[path][1]:
                module, offset = readers[path]
                stat = sums[path].view(module.weight.shape[offset:])
                total += _unit_reduce(stat, group, dim - offset)
                read = True
        if not read:
            logger.info("no linear layer reads the units of %s: L2 instead", group.name)
            squares = {n: params[n].detach().pow(2) for n, _ in group.members}
            _accumulate({group.name: total}, [group], squares)
        totals[group.name] = total.sqrt()
    return totals
