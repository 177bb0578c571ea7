"""Elastic modules: torch modules whose leading slices are active."""

from ofa.elastic.embedding import ElasticEmbedding
from ofa.elastic.heads import ElasticHeadOutput, ElasticHeadProjection
from ofa.elastic.layernorm import ElasticLayerNorm
from ofa.elastic.layers import ElasticModuleList
from ofa.elastic.linear import ElasticLinear
from ofa.elastic.rmsnorm import ElasticRMSNorm
from ofa.elastic.stack import ElasticLayerStack

__all__ = [
    "ElasticEmbedding",
    "ElasticHeadOutput",
    "ElasticHeadProjection",
    "ElasticLayerNorm",
    "ElasticLayerStack",
    "ElasticLinear",
    "ElasticModuleList",
    "ElasticRMSNorm",
]
