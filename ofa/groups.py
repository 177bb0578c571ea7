"""Coupled units: the weights that must be sliced, scored and permuted together."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["UnitGroup"]


@dataclass(frozen=True, kw_only=True)
class UnitGroup:
    """A set of ``size`` units (heads, neurons, channels) shared by several parameters.

    Unit ``i`` owns the slice ``[i * block, (i + 1) * block)`` along ``dim`` of every member
    parameter. A head is a unit with ``block = head_dim``; a neuron or channel has ``block = 1``.

    Attributes:
        name: a stable key, e.g. ``"encoder.layer.3.heads"`` or ``"hidden"``.
        size: number of units.
        block: elements per unit along each member's dimension.
        members: ``(parameter name, dim)`` pairs; one parameter may appear once per dim.
        buffers: ``(buffer name, dim)`` pairs permuted with the units but never scored
            (batch-norm running statistics).
        scales: parameters whose absolute value is the units' scale (batch-norm weights), for
            the ``"bn_scale"`` importance metric.
    """

    name: str
    size: int
    block: int
    members: tuple[tuple[str, int], ...]
    buffers: tuple[tuple[str, int], ...] = ()
    scales: tuple[str, ...] = ()
