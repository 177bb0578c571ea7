"""Elastic linear layer: the leading output rows and input columns are active."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ElasticLinear"]


class ElasticLinear(nn.Linear):
    """``nn.Linear`` whose leading output rows can be switched off at run time.

    The input width is read from the input (its leading columns, or those of
    ``active_in_index`` when set); the output rows are the leading ``active_out_features``, or
    those of ``active_out_index``. State-dict keys are those of ``nn.Linear``.

    Example:
        >>> layer = ElasticLinear.from_dense(nn.Linear(8, 6))
        >>> layer.active_out_features = 4
        >>> layer(torch.randn(2, 5)).shape
        torch.Size([2, 4])
    """

    active_out_features: int
    active_in_index: Tensor | None = None
    active_out_index: Tensor | None = None

    def __init__(self, in_features: int, out_features: int, bias: bool = True, **kwargs) -> None:
        super().__init__(in_features, out_features, bias=bias, **kwargs)
        self.active_out_features = out_features

    @classmethod
    def from_dense(cls, dense: nn.Linear) -> ElasticLinear:
        """Wrap ``dense``, sharing its parameters (no copy)."""
        elastic = cls.__new__(cls)
        nn.Module.__init__(elastic)
        elastic.in_features, elastic.out_features = dense.in_features, dense.out_features
        elastic.weight = dense.weight
        elastic.bias = dense.bias
        elastic.active_out_features = dense.out_features
        elastic.active_in_index = elastic.active_out_index = None
        return elastic

    def _rows(self, tensor: Tensor) -> Tensor:
        if self.active_out_index is not None:
            return tensor.index_select(0, self.active_out_index.to(tensor.device))
        return tensor[: self.active_out_features]

    def active_weight(self, in_features: int) -> Tensor:
        weight = self._rows(self.weight)
        if self.active_in_index is not None:
            return weight.index_select(1, self.active_in_index.to(weight.device))
        return weight[:, :in_features]

    def forward(self, x: Tensor) -> Tensor:
        out, in_ = self.active_out_features, x.shape[-1]
        indexed = self.active_in_index is not None or self.active_out_index is not None
        if out == self.out_features and in_ == self.in_features and not indexed:
            return F.linear(x, self.weight, self.bias)  # full size: the dense fast path
        bias = None if self.bias is None else self._rows(self.bias)
        return F.linear(x, self.active_weight(in_), bias)

    def extract(self) -> nn.Linear:
        """A plain ``nn.Linear`` of the active shape (for the full input width)."""
        return self.extract_for(self.in_features)

    def extract_for(self, in_features: int) -> nn.Linear:
        weight = self.active_weight(in_features).detach()
        dense = nn.Linear(weight.shape[1], weight.shape[0], bias=self.bias is not None)
        dense = dense.to(self.weight)
        dense.weight.data.copy_(weight)
        if self.bias is not None:
            dense.bias.data.copy_(self._rows(self.bias).detach())
        return dense

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, active_out_features={self.active_out_features}"
