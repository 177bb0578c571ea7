"""BERT-of-Theseus (Xu et al., 2020) for shallow subnets of a supernet.

A subnet keeping layers ``L[0] < L[1] < ...`` stands in for the teacher's layer groups
``(L[i-1], L[i]]``. Each forward pass runs, per group, either the subnet's layer ``L[i]`` (the
successor, trained) or the teacher's layers of that group (the predecessor, frozen); the
successor is picked with probability ``p``, which the schedule raises to 1 over the phase.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from ofa.space import Subnet

__all__ = ["theseus_forward", "theseus_groups"]


def theseus_groups(subnet: Subnet) -> list[tuple[int, ...]]:
    """Teacher layers each kept layer replaces: ``[(0, 1), (2, 3), ...]`` for layers (1, 3, ...)."""
    groups, previous = [], -1
    for layer in subnet.layers:
        groups.append(tuple(range(previous + 1, layer + 1)))
        previous = layer
    return groups


@contextlib.contextmanager
def _swapped_layers(encoder: nn.Module, layers: list[nn.Module]) -> Iterator[None]:
    original = encoder.layer
    try:
        encoder.layer = nn.ModuleList(layers)
        yield
    finally:
        encoder.layer = original


def theseus_forward(
    supernet: Any, teacher: Any, subnet: Subnet, inputs: dict[str, torch.Tensor], p: float
) -> Any:
    """One forward pass of ``subnet`` with each layer group replaced by the teacher's at ``1 - p``.

    The teacher must have the supernet's depth and width, and the subnet full hidden width
    (teacher layers read and write the full residual stream).
    """
    space = supernet.space
    teacher_layers = list(teacher.base_model.encoder.layer)
    if len(teacher_layers) != space.num_layers:
        raise ValueError("BERT-of-Theseus needs a teacher as deep as the supernet")
    if subnet.hidden_size != space.max_hidden_size:
        raise ValueError(
            "BERT-of-Theseus needs subnets of full hidden width: keep hidden_sizes='max'"
        )
    student_layers = supernet.model.base_model.encoder.layer
    mixed: list[nn.Module] = []
    draws = torch.rand(len(subnet.layers)).tolist()
    for layer, group, draw in zip(subnet.layers, theseus_groups(subnet), draws):
        if draw < p:
            mixed.append(student_layers[layer])
        else:
            mixed.extend(teacher_layers[i] for i in group)
    with _swapped_layers(supernet.model.base_model.encoder, mixed):
        return supernet(**inputs, output_hidden_states=False)
