"""Elastic modules: torch modules whose leading slices are active."""

from ofa.elastic.embedding import ElasticEmbedding
from ofa.elastic.layernorm import ElasticLayerNorm
from ofa.elastic.layers import ElasticModuleList
from ofa.elastic.linear import ElasticLinear

__all__ = ["ElasticEmbedding", "ElasticLayerNorm", "ElasticLinear", "ElasticModuleList"]
