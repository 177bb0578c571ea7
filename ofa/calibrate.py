"""Batch-norm recalibration: recompute running statistics for the subnet that will run."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

logger = logging.getLogger(__name__)

__all__ = ["calibrate_bn_", "has_batch_norm"]


def _norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    found = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    return [m for m in found if m.track_running_stats]


def has_batch_norm(model: nn.Module) -> bool:
    """Whether ``model`` has a batch norm with running statistics (something to calibrate)."""
    return bool(_norms(model))


def _images(batch: Tensor | Mapping[str, Any] | tuple | list) -> Tensor:
    if isinstance(batch, Tensor):
        return batch
    if isinstance(batch, Mapping):
        return batch["pixel_values"]
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], Tensor):
        return batch[0]  # (images, labels) pairs
    raise TypeError(
        f"calibration batches must be image tensors, (images, labels) pairs or dicts with "
        f"'pixel_values', got {type(batch).__name__}"
    )


@torch.no_grad()
def calibrate_bn_(
    model: nn.Module, batches: Iterable[Any], *, max_batches: int | None = None
) -> int:
    """Recompute every batch norm's running mean and variance over ``batches``, in place.

    A subnet's channels see different statistics than the full network's, so evaluate or export
    a subnet only after calibrating it (OFA's ``set_running_statistics``). Statistics are the
    exact average over all given batches (``momentum=None``). On a supernet this calibrates the
    active subnet; the statistics of channels it does not use are reset. Weights never change,
    and the modules' training flags and momenta are restored afterwards.

    Args:
        model: an :class:`ofa.Supernet` (its active subnet) or any model, e.g. an extracted one.
        batches: image tensors, ``(images, labels)`` pairs or dicts with ``"pixel_values"``.
        max_batches: stop after this many batches.

    Returns:
        The number of batches used.

    Raises:
        ValueError: the model has no batch norm with running statistics (see
            :func:`has_batch_norm`; :func:`ofa.evaluate` and ``export.save`` skip calibrating
            such a model), or no batch was given.

    Example:
        >>> supernet.set_subnet(subnet)
        >>> ofa.calibrate_bn_(supernet, (x for x, _ in loader), max_batches=20)
    """
    norms = _norms(model)
    if not norms:
        raise ValueError("the model has no batch norm with running statistics to calibrate")
    was_training = model.training
    saved = [(m, m.momentum) for m in norms]
    device = next(model.parameters()).device
    count = 0
    try:
        model.eval()
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None  # cumulative average over the calibration batches
            norm.train()
        for batch in batches:
            if max_batches is not None and count >= max_batches:
                break
            model(_images(batch).to(device))
            count += 1
    finally:
        for norm, momentum in saved:
            norm.momentum = momentum
        model.train(was_training)
    if count == 0:
        raise ValueError("no batches were given to calibrate on: pass at least one batch")
    logger.info("calibrated %d batch norms over %d batches", len(norms), count)
    return count
