"""Elastic 2-d batch norm: normalises the leading channels the input has."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ElasticBatchNorm2d"]


class ElasticBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` that normalises the first ``x.shape[1]`` channels, or the channels of
    ``active_index`` when set (an input whose parts each shrink).

    In training mode the running statistics of those channels are updated in place (leading
    slices are views of the full buffers); the others are left alone. State-dict keys are
    those of ``nn.BatchNorm2d``. Statistics of channels picked by ``active_index`` are
    updated through a scatter, as the leading slice's are through a view.

    Example:
        >>> norm = ElasticBatchNorm2d.from_dense(nn.BatchNorm2d(16))
        >>> norm(torch.randn(2, 8, 4, 4)).shape
        torch.Size([2, 8, 4, 4])
    """

    @classmethod
    def from_dense(cls, dense: nn.BatchNorm2d) -> ElasticBatchNorm2d:
        """Wrap ``dense``, sharing its parameters and buffers (no copy)."""
        elastic = cls.__new__(cls)
        elastic.__dict__.update(dense.__dict__)
        elastic._parameters = dict(dense._parameters)
        elastic._buffers = dict(dense._buffers)
        elastic._modules = dict(dense._modules)
        elastic.active_index = None
        return elastic

    active_index: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        channels = x.shape[1]
        if self.active_index is not None:
            return self._indexed(x, self.active_index.to(x.device))
        if channels == self.num_features:
            return super().forward(x)  # full width: the dense path
        self._check_input_dim(x)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average
                factor = 1.0 / float(self.num_batches_tracked)
        batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        use_running = not self.training or self.track_running_stats
        return F.batch_norm(
            x,
            self._lead(self.running_mean, channels) if use_running else None,
            self._lead(self.running_var, channels) if use_running else None,
            self._lead(self.weight, channels),
            self._lead(self.bias, channels),
            batch_stats,
            factor,
            self.eps,
        )

    def _indexed(self, x: Tensor, index: Tensor) -> Tensor:
        self._check_input_dim(x)
        factor = 0.0 if self.momentum is None else self.momentum
        update = self.training and self.track_running_stats
        if update and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                factor = 1.0 / float(self.num_batches_tracked)
        batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        use_running = not self.training or self.track_running_stats
        mean = var = None
        if use_running and self.running_mean is not None and self.running_var is not None:
            mean = self.running_mean.index_select(0, index)
            var = self.running_var.index_select(0, index)
        weight = None if self.weight is None else self.weight.index_select(0, index)
        bias = None if self.bias is None else self.bias.index_select(0, index)
        out = F.batch_norm(x, mean, var, weight, bias, batch_stats, factor, self.eps)
        if update and mean is not None and var is not None:
            with torch.no_grad():
                self.running_mean.index_copy_(0, index, mean)  # type: ignore[union-attr]
                self.running_var.index_copy_(0, index, var)  # type: ignore[union-attr]
        return out

    @staticmethod
    def _lead(tensor: Tensor | None, channels: int) -> Tensor | None:
        return None if tensor is None else tensor[:channels]

    def extract_for(self, num_features: int) -> nn.BatchNorm2d:
        """A plain ``nn.BatchNorm2d`` over the first ``num_features`` channels (those of
        ``active_index`` when set)."""
        dense = nn.BatchNorm2d(
            num_features,
            eps=self.eps,
            momentum=self.momentum,
            affine=self.affine,
            track_running_stats=self.track_running_stats,
        )
        reference = self.weight if self.weight is not None else self.running_mean
        if reference is not None:
            dense.to(device=reference.device, dtype=reference.dtype)
        index = self.active_index

        def part(v: Tensor) -> Tensor:
            if not v.dim():
                return v.clone()
            if index is not None:
                return v.index_select(0, index.to(v.device)).clone()
            return v[:num_features].clone()

        state = {k: part(v) for k, v in self.state_dict().items()}
        dense.load_state_dict(state)
        return dense
