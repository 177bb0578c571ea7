"""Elastic RMSNorm: normalises over the leading channels the input has."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["ElasticRMSNorm"]


class ElasticRMSNorm(nn.Module):
    """RMSNorm as transformers' Llama, Qwen2 and Mistral compute it (in float32, scaled by
    ``weight`` in the input's dtype), over the width of its input: the leading channels of
    ``weight`` scale it. The state-dict key is ``weight``, as theirs.

    Example:
        >>> norm = ElasticRMSNorm(8)
        >>> norm(torch.randn(2, 5)).shape
        torch.Size([2, 5])
    """

    def __init__(self, hidden_size: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    @classmethod
    def from_dense(cls, dense: nn.Module) -> ElasticRMSNorm:
        """Wrap a transformers RMSNorm (``weight`` and ``variance_epsilon``, or torch's
        ``nn.RMSNorm``), sharing its weight (no copy)."""
        weight = getattr(dense, "weight", None)
        eps = getattr(dense, "variance_epsilon", getattr(dense, "eps", None))
        if not isinstance(weight, nn.Parameter) or weight.dim() != 1 or eps is None:
            raise ValueError(
                f"{type(dense).__name__} is not an RMSNorm with a 1-d weight and an epsilon"
            )
        elastic = cls.__new__(cls)
        nn.Module.__init__(elastic)
        elastic.weight = weight
        elastic.variance_epsilon = float(eps)
        return elastic

    def forward(self, hidden_states: Tensor) -> Tensor:
        width = hidden_states.shape[-1]
        weight = self.weight if width == self.weight.shape[0] else self.weight[:width]
        input_dtype = hidden_states.dtype
        hidden_states = hidden_states.to(torch.float32)
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
        return weight * hidden_states.to(input_dtype)

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, eps={self.variance_epsilon}"
