"""One contract for every elastic module: full size equals dense, extract equals active."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ofa.elastic import ElasticEmbedding, ElasticLayerNorm, ElasticLinear, ElasticModuleList


def linear_case():
    dense = nn.Linear(12, 10)
    elastic = ElasticLinear.from_dense(dense)
    x = torch.randn(2, 5, 12)

    def shrink():
        elastic.active_out_features = 6
        return x[..., :7], elastic.extract_for(7)

    return dense, elastic, x, shrink


def layernorm_case():
    dense = nn.LayerNorm(12)
    with torch.no_grad():
        dense.weight.uniform_(0.5, 1.5)
        dense.bias.uniform_(-1, 1)
    elastic = ElasticLayerNorm.from_dense(dense)
    x = torch.randn(2, 5, 12)
    return dense, elastic, x, lambda: (x[..., :8], elastic.extract_for(8))


def embedding_case():
    dense = nn.Embedding(20, 12, padding_idx=0)
    elastic = ElasticEmbedding.from_dense(dense)
    x = torch.randint(0, 20, (2, 5))

    def shrink():
        elastic.active_embedding_dim = 5
        return x, elastic.extract()

    return dense, elastic, x, shrink


def module_list_case():
    layers = nn.ModuleList(nn.Linear(4, 4) for _ in range(3))
    dense = nn.Sequential(*layers)
    elastic_list = ElasticModuleList.from_dense(layers)

    class Stack(nn.Module):
        def __init__(self, items):
            super().__init__()
            self.items = items

        def forward(self, x):
            for layer in self.items:
                x = layer(x)
            return x

    elastic = Stack(elastic_list)
    x = torch.randn(2, 4)

    def shrink():
        elastic_list.active_indices = (0, 2)
        return x, nn.Sequential(layers[0], layers[2])

    return dense, elastic, x, shrink


CASES = [linear_case, layernorm_case, embedding_case, module_list_case]


@pytest.mark.parametrize("make", CASES, ids=lambda f: f.__name__)
def test_full_size_equals_dense_and_extract_equals_active(make):
    dense, elastic, x, shrink = make()
    torch.testing.assert_close(elastic(x), dense(x), atol=0, rtol=0)
    x_small, extracted = shrink()
    assert not any(type(m).__name__.startswith("Elastic") for m in extracted.modules())
    torch.testing.assert_close(extracted(x_small), elastic(x_small), atol=1e-6, rtol=0)


@pytest.mark.parametrize("make", CASES[:3], ids=lambda f: f.__name__)
def test_state_dict_keys_and_storage_are_shared(make):
    dense, elastic, *_ = make()
    assert elastic.state_dict().keys() == dense.state_dict().keys()
    assert elastic.weight is dense.weight
    assert isinstance(elastic, type(dense))


def test_elastic_linear_slices_are_leading():
    dense = nn.Linear(6, 4)
    elastic = ElasticLinear.from_dense(dense)
    elastic.active_out_features = 2
    x = torch.randn(3, 5)
    expected = x @ dense.weight[:2, :5].T + dense.bias[:2]
    torch.testing.assert_close(elastic(x), expected)


def test_module_list_keeps_every_layer_registered():
    layers = ElasticModuleList.from_dense(nn.ModuleList(nn.Linear(2, 2) for _ in range(3)))
    layers.active_indices = (1,)
    assert len(layers) == 3 and len(list(layers)) == 1
    assert set(layers.state_dict()) == {f"{i}.{p}" for i in range(3) for p in ("weight", "bias")}
