"""Elastic LayerNorm: normalises over the leading channels the input has."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ElasticLayerNorm"]


class ElasticLayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` over the last dimension whose width is read from the input (its leading
    channels, or those of ``active_index`` when set).

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
        elastic.active_index = None
        return elastic

    active_index: Tensor | None = None

    def _part(self, tensor: Tensor | None, width: int) -> Tensor | None:
        if tensor is None:
            return None
        if self.active_index is not None:
            return tensor.index_select(0, self.active_index.to(tensor.device))
        return tensor[:width]

    def _normalise(self, x: Tensor) -> Tensor:
        width = x.shape[-1]
        if width == self.normalized_shape[0] and self.active_index is None:
            return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        weight, bias = self._part(self.weight, width), self._part(self.bias, width)
        return F.layer_norm(x, (width,), weight, bias, self.eps)

    def forward(self, x: Tensor) -> Tensor:
        return self._normalise(x)

    def extract_for(self, width: int) -> nn.LayerNorm:
        return self._extract(nn.LayerNorm, width)

    def _extract(self, cls: type[nn.LayerNorm], width: int) -> nn.LayerNorm:
        dense = cls(
            width,
            eps=self.eps,
            elementwise_affine=self.elementwise_affine,
            bias=self.bias is not None,
        )
        dense = dense.to(device=self.weight.device if self.weight is not None else None)
        with torch.no_grad():
            if self.weight is not None:
                dense.weight.copy_(self._part(self.weight, width))  # type: ignore[arg-type]
            if self.bias is not None:
                dense.bias.copy_(self._part(self.bias, width))  # type: ignore[arg-type]
        return dense
