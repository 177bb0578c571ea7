"""Elastic LayerNorm: normalises over the leading channels the input has."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ElasticLayerNorm"]


class ElasticLayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` over the last dimension whose width is read from the input.

    Example:
        >>> norm = ElasticLayerNorm.from_dense(nn.LayerNorm(8))
        >>> norm(torch.randn(2, 5)).shape
        torch.Size([2, 5])
    """

    @classmethod
    def from_dense(cls, dense: nn.LayerNorm) -> ElasticLayerNorm:
        if len(dense.normalized_shape) != 1:
            raise ValueError(
                f"only LayerNorms over the last dimension can be elastic, got "
                f"normalized_shape={dense.normalized_shape}"
            )
        elastic = cls.__new__(cls)
        nn.Module.__init__(elastic)
        elastic.normalized_shape = dense.normalized_shape
        elastic.eps = dense.eps
        elastic.elementwise_affine = dense.elementwise_affine
        elastic.weight = dense.weight
        elastic.bias = dense.bias
        return elastic

    def forward(self, x: Tensor) -> Tensor:
        width = x.shape[-1]
        if width == self.normalized_shape[0]:
            return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        weight = None if self.weight is None else self.weight[:width]
        bias = None if self.bias is None else self.bias[:width]
        return F.layer_norm(x, (width,), weight, bias, self.eps)

    def extract_for(self, width: int) -> nn.LayerNorm:
        dense = nn.LayerNorm(
            width,
            eps=self.eps,
            elementwise_affine=self.elementwise_affine,
            bias=self.bias is not None,
        )
        dense = dense.to(device=self.weight.device if self.weight is not None else None)
        if self.weight is not None:
            dense.weight.data.copy_(self.weight[:width])
        if self.bias is not None:
            dense.bias.data.copy_(self.bias[:width])
        return dense
