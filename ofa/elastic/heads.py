"""Elastic attention projections whose heads lie on a grid (grouped-query attention).

In grouped-query attention query head ``kv * heads_per_kv + j`` reads key/value head ``kv``. A
subnet keeps the leading ``k`` KV heads and, in each of them, the leading ``g`` query heads: rows
``{(kv, j) : kv < k, j < g}`` of ``q_proj``, a strided set, not a leading slice. These modules
therefore hold their weights in head layout, the head grid as leading dimensions
(``q_proj``: ``(num_kv_heads, heads_per_kv, head_dim, in_features)``; ``k_proj`` / ``v_proj``:
``(num_kv_heads, head_dim, in_features)``; ``o_proj``: ``(out_features, num_kv_heads,
heads_per_kv, head_dim)``), so each elastic head dimension is one tensor dimension: leading
slices select whole heads, and importance scores and reorders the KV heads and the query
heads within them along those dimensions. The state dict keeps the shapes of ``nn.Linear``
(the views are reshaped on save and load), so checkpoints of the dense model load unchanged.
"""

from __future__ import annotations

import math
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ElasticHeadOutput", "ElasticHeadProjection"]


def _lead(sizes: tuple[int, ...]) -> tuple[slice, ...]:
    return tuple(slice(0, n) for n in sizes)


class _HeadLayout(nn.Linear):
    """Shared by both projections: parameters in head layout, ``nn.Linear`` shapes on disk."""

    grid: tuple[int, ...]
    head_dim: int
    active_grid: tuple[int, ...]
    input_dims: int  # trailing weight dimensions that are input features

    def _dense_shapes(self) -> dict[str, tuple[int, ...]]:
        shapes: dict[str, tuple[int, ...]] = {"weight": (self.out_features, self.in_features)}
        if self.bias is not None:
            shapes["bias"] = (self.out_features,)
        return shapes

    def _save_to_state_dict(self, destination: Any, prefix: str, keep_vars: bool) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        for name, shape in self._dense_shapes().items():
            destination[prefix + name] = destination[prefix + name].reshape(shape)

    def _load_from_state_dict(self, state_dict: Any, prefix: str, *args: Any) -> None:
        for name, shape in self._dense_shapes().items():
            value = state_dict.get(prefix + name)
            if value is not None and tuple(value.shape) == shape:
                state_dict[prefix + name] = value.reshape(getattr(self, name).shape)
        super()._load_from_state_dict(state_dict, prefix, *args)

    @classmethod
    def _wrap(cls, dense: nn.Linear, weight_shape: tuple[int, ...], grid: tuple[int, ...]) -> Any:
        elastic = cls.__new__(cls)
        nn.Module.__init__(elastic)
        elastic.in_features, elastic.out_features = dense.in_features, dense.out_features
        weight = nn.Parameter(dense.weight.data.view(weight_shape))  # the same storage
        weight.requires_grad_(dense.weight.requires_grad)
        elastic.weight = weight
        elastic.register_parameter("bias", None)
        elastic.grid = tuple(int(n) for n in grid)
        elastic.active_grid = elastic.grid
        return elastic

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, grid={self.grid}, active_grid={self.active_grid}"


class ElasticHeadProjection(_HeadLayout):
    """``nn.Linear`` whose output rows are attention heads on a grid; the leading
    ``active_grid`` heads of every grid dimension are active, the input width is read from the
    input (its leading columns).

    Example:
        >>> q_proj = ElasticHeadProjection.from_dense(nn.Linear(32, 64), grid=(2, 4), head_dim=8)
        >>> q_proj.active_grid = (2, 2)  # both KV heads, 2 query heads each
        >>> q_proj(torch.randn(3, 24)).shape
        torch.Size([3, 32])
    """

    @classmethod
    def from_dense(
        cls, dense: nn.Linear, *, grid: tuple[int, ...], head_dim: int
    ) -> ElasticHeadProjection:
        """Wrap ``dense``, viewing its parameters in head layout (no copy)."""
        if math.prod(grid) * head_dim != dense.out_features:
            raise ValueError(
                f"a {dense.out_features}-row projection is not {grid} heads of {head_dim}"
            )
        elastic = cls._wrap(dense, (*grid, head_dim, dense.in_features), grid)
        elastic.head_dim, elastic.input_dims = head_dim, 1
        if dense.bias is not None:
            elastic.bias = nn.Parameter(dense.bias.data.view(*grid, head_dim))
        return elastic

    def part(self, grid: tuple[int, ...], in_features: int) -> tuple[Tensor, Tensor | None]:
        """The ``nn.Linear`` weight and bias of the leading ``grid`` heads over the leading
        ``in_features`` inputs."""
        heads = _lead(grid)
        weight = self.weight[heads][..., :in_features].reshape(-1, in_features)
        bias = None if self.bias is None else self.bias[heads].reshape(-1)
        return weight, bias

    def forward(self, x: Tensor) -> Tensor:
        if self.active_grid == self.grid and x.shape[-1] == self.in_features:
            bias = None if self.bias is None else self.bias.view(-1)
            return F.linear(x, self.weight.view(self.out_features, -1), bias)  # the dense path
        return F.linear(x, *self.part(self.active_grid, x.shape[-1]))


class ElasticHeadOutput(_HeadLayout):
    """``nn.Linear`` whose input columns are attention heads on a grid (the attention output
    projection): the input holds the leading ``active_grid`` heads, the leading
    ``active_out_features`` rows are active.

    Example:
        >>> o_proj = ElasticHeadOutput.from_dense(nn.Linear(64, 32), grid=(2, 4), head_dim=8)
        >>> o_proj.active_grid, o_proj.active_out_features = (2, 2), 24
        >>> o_proj(torch.randn(3, 32)).shape
        torch.Size([3, 24])
    """

    active_out_features: int

    @classmethod
    def from_dense(
        cls, dense: nn.Linear, *, grid: tuple[int, ...], head_dim: int
    ) -> ElasticHeadOutput:
        """Wrap ``dense``, viewing its weight in head layout (no copy)."""
        if math.prod(grid) * head_dim != dense.in_features:
            raise ValueError(
                f"a {dense.in_features}-column projection is not {grid} heads of {head_dim}"
            )
        elastic = cls._wrap(dense, (dense.out_features, *grid, head_dim), grid)
        elastic.head_dim, elastic.input_dims = head_dim, len(grid) + 1
        elastic.bias = dense.bias
        elastic.active_out_features = dense.out_features
        return elastic

    def part(self, grid: tuple[int, ...], out_features: int) -> tuple[Tensor, Tensor | None]:
        """The ``nn.Linear`` weight and bias of the leading ``out_features`` rows over the
        leading ``grid`` heads."""
        weight = self.weight[(slice(0, out_features), *_lead(grid))].reshape(out_features, -1)
        bias = None if self.bias is None else self.bias[:out_features]
        return weight, bias

    def forward(self, x: Tensor) -> Tensor:
        full = self.active_grid == self.grid and self.active_out_features == self.out_features
        if full:
            return F.linear(x, self.weight.view(self.out_features, -1), self.bias)
        return F.linear(x, *self.part(self.active_grid, self.active_out_features))
