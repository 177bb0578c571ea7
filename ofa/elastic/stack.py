"""Elastic depth for stacks their model slices: ``self.layers[: config.num_hidden_layers]``."""

from __future__ import annotations

from typing import Any

from torch import nn

from ofa.elastic.layers import ElasticModuleList

__all__ = ["ElasticLayerStack"]


class ElasticLayerStack(ElasticModuleList):
    """An :class:`ElasticModuleList` whose slices, like its iteration, hold the active layers
    only (transformers' decoders run ``for layer in self.layers[: config.num_hidden_layers]``).

    An integer index still reaches any layer, so state-dict keys and setting a subnet see the
    whole stack.

    Example:
        >>> layers = ElasticLayerStack.from_dense(nn.ModuleList(nn.Identity() for _ in range(3)))
        >>> layers.active_indices = (0, 2)
        >>> len(layers[:3])
        2
    """

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return nn.ModuleList(list(self)[index])
        return super().__getitem__(index)
