"""Elastic depth: a ``ModuleList`` whose iteration yields only the active layers."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from torch import nn

__all__ = ["ElasticModuleList"]


class ElasticModuleList(nn.ModuleList):
    """``nn.ModuleList`` that iterates over ``active_indices`` only.

    Encoders that run ``for layer in self.layer`` then run the kept layers, unchanged; every
    layer stays registered, so state-dict keys and indexing are those of the full list.

    Example:
        >>> layers = ElasticModuleList.from_dense(nn.ModuleList([nn.Identity()] * 3))
        >>> layers.active_indices = (0, 2)
        >>> len(list(layers))
        2
    """

    active_indices: tuple[int, ...] | None  # None: every layer

    def __init__(self, modules: Iterable[nn.Module] | None = None) -> None:
        super().__init__(modules)
        self.active_indices = None

    @classmethod
    def from_dense(cls, dense: nn.ModuleList) -> ElasticModuleList:
        return cls(list(dense))

    def __iter__(self) -> Iterator[nn.Module]:
        modules = list(self._modules.values())
        if self.active_indices is None:
            return iter(modules)
        return iter([modules[i] for i in self.active_indices])

    def extra_repr(self) -> str:
        return f"active_indices={self.active_indices}"
