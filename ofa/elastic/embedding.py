"""Elastic embedding: the leading embedding channels are active."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ElasticEmbedding"]


class ElasticEmbedding(nn.Embedding):
    """``nn.Embedding`` that returns only its first ``active_embedding_dim`` channels.

    Example:
        >>> emb = ElasticEmbedding.from_dense(nn.Embedding(10, 8))
        >>> emb.active_embedding_dim = 4
        >>> emb(torch.tensor([[1, 2]])).shape
        torch.Size([1, 2, 4])
    """

    active_embedding_dim: int

    @classmethod
    def from_dense(cls, dense: nn.Embedding) -> ElasticEmbedding:
        elastic = cls.__new__(cls)
        nn.Module.__init__(elastic)
        for name in (
            "num_embeddings",
            "embedding_dim",
            "padding_idx",
            "max_norm",
            "norm_type",
            "scale_grad_by_freq",
            "sparse",
        ):
            setattr(elastic, name, getattr(dense, name))
        elastic.weight = dense.weight
        elastic.active_embedding_dim = dense.embedding_dim
        return elastic

    def forward(self, input: Tensor) -> Tensor:
        dim = self.active_embedding_dim
        weight = self.weight if dim == self.embedding_dim else self.weight[:, :dim]
        return F.embedding(
            input,
            weight,
            self.padding_idx,
            self.max_norm,
            self.norm_type,
            self.scale_grad_by_freq,
            self.sparse,
        )

    def extract(self) -> nn.Embedding:
        dim = self.active_embedding_dim
        dense = nn.Embedding(
            self.num_embeddings,
            dim,
            padding_idx=self.padding_idx,
            max_norm=self.max_norm,
            norm_type=self.norm_type,
            scale_grad_by_freq=self.scale_grad_by_freq,
            sparse=self.sparse,
        ).to(self.weight)
        dense.weight.data.copy_(self.weight[:, :dim])
        return dense

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, active_embedding_dim={self.active_embedding_dim}"
