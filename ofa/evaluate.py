"""Accuracy of one subnet with the supernet's shared weights: no retraining, no extraction."""

from __future__ import annotations

import datasets
import torch
from torch import nn

from ofa.space import Subnet
from ofa.supernet import Supernet

__all__ = ["evaluate", "accuracy"]


@torch.no_grad()
def accuracy(model: nn.Module, data: datasets.Dataset, *, batch_size: int = 64) -> float:
    """Share of rows of a tokenized dataset whose argmax logit equals ``labels``."""
    from ofa.data import pad_collate

    if not isinstance(data, datasets.Dataset) or "labels" not in data.column_names:
        raise ValueError(
            "data must be a tokenized datasets.Dataset with labels (ofa.data.tokenize)"
        )
    if len(data) == 0:
        raise ValueError("data is empty: nothing to evaluate")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    pad_id = getattr(getattr(model, "config", None), "pad_token_id", None) or 0
    correct = 0
    try:
        for start in range(0, len(data), batch_size):
            batch = pad_collate(data[start : start + batch_size], pad_id)
            labels = batch.pop("labels")
            logits = model(**{k: v.to(device) for k, v in batch.items()}).logits
            correct += int((logits.argmax(-1).cpu() == labels).sum())
    finally:
        model.train(was_training)
    return correct / len(data)


def evaluate(
    supernet: Supernet, subnet: Subnet, data: datasets.Dataset, *, batch_size: int = 64
) -> float:
    """Accuracy of ``subnet`` running on the supernet's shared weights.

    Example:
        >>> acc = ofa.evaluate(supernet, supernet.space.min_subnet(), task_validation)
    """
    if not isinstance(supernet, Supernet):
        raise TypeError(f"evaluate takes an ofa.Supernet, got {type(supernet).__name__}")
    with supernet.using(subnet):
        return accuracy(supernet, data, batch_size=batch_size)
