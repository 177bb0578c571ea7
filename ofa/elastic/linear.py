"""Elastic linear layer: the leading output rows and input columns are active."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ElasticLinear"]


class ElasticLinear(nn.Linear):
    """``nn.Linear`` whose leading output rows can be switched off at run time.

    The input width is read from the input; the output width is ``active_out_features``.
    State-dict keys are those of ``nn.Linear``.

    Example:
        >>> layer = ElasticLinear.from_dense(nn.Linear(8, 6))
        >>> layer.active_out_features = 4
        >>> layer(torch.randn(2, 5)).shape
        torch.Size([2, 4])
    """

    active_out_features: int

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
        return elastic

    def forward(self, x: Tensor) -> Tensor:
        out, in_ = self.active_out_features, x.shape[-1]
        if out == self.out_features and in_ == self.in_features:
            return F.linear(x, self.weight, self.bias)  # full size: the dense fast path
        weight = self.weight[:out, :in_]
        bias = None if self.bias is None else self.bias[:out]
        return F.linear(x, weight, bias)

    def extract(self) -> nn.Linear:
        """A plain ``nn.Linear`` of the active shape (for the full input width)."""
        return self.extract_for(self.in_features)

    def extract_for(self, in_features: int) -> nn.Linear:
        out = self.active_out_features
        dense = nn.Linear(in_features, out, bias=self.bias is not None).to(self.weight)
        dense.weight.data.copy_(self.weight[:out, :in_features])
        if self.bias is not None:
            dense.bias.data.copy_(self.bias[:out])
        return dense

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, active_out_features={self.active_out_features}"
