"""Reordering: permute coupled weights in place so the most important units come first."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

logger = logging.getLogger(__name__)

__all__ = ["reorder_", "permutation"]


def permutation(scores: Tensor) -> Tensor:
    """Unit indices by decreasing score; ties keep their original order."""
    return torch.sort(scores, descending=True, stable=True).indices


def reorder_(
    supernet: Any, scores: Mapping[str, Tensor], *, reorder_hidden: bool | None = None
) -> dict[str, Tensor]:
    """Permute every coupled weight so the units with the highest ``scores`` come first.

    A pure permutation: the full model computes the same function afterwards. Groups missing
    from ``scores`` stay as they are.

    Args:
        supernet: an :class:`ofa.Supernet`.
        scores: unit-group name to one score per unit, as :func:`ofa.importance.score` returns.
        reorder_hidden: permute the hidden channels too. Default: only when a task head reads
            them; for a bare encoder the output channels themselves would be permuted.

    Returns:
        The permutation applied to each group (new position ``i`` holds old unit ``perm[i]``).
    """
    groups = {g.name: g for g in supernet.unit_groups()}
    unknown = sorted(set(scores) - set(groups))
    if unknown:
        raise ValueError(f"scores name unknown unit groups {unknown[:3]}; score this supernet")
    if reorder_hidden is None:
        reorder_hidden = supernet.hidden_is_internal()
    params = dict(supernet.model.named_parameters())
    params.update(supernet.model.named_buffers())
    applied = {}
    with torch.no_grad():
        for name, values in scores.items():
            group = groups[name]
            if name == "hidden" and not reorder_hidden:
                logger.info("hidden channels not reordered: the bare encoder outputs them")
                continue
            if tuple(values.shape) != (group.size,):
                raise ValueError(
                    f"scores[{name!r}] has shape {tuple(values.shape)}, expected ({group.size},)"
                )
            perm = permutation(values.detach().cpu())
            for param_name, dim in group.members + group.buffers:
                param = params[param_name]
                index = (perm[:, None] * group.block + torch.arange(group.block)).flatten()
                param.copy_(param.index_select(dim, index.to(param.device)))
            applied[name] = perm
    logger.info("reordered %d unit groups by importance", len(applied))
    return applied
