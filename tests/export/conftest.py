"""Fixtures for export tests: tiny supernets and subnets of both checkpoint kinds."""

from __future__ import annotations

import pytest
import torch

import ofa
from ofa.space import Subnet
from tests.tiny import make_model


def make_supernet(kind: str = "bert-cls", **overrides: object) -> ofa.Supernet:
    return ofa.convert(make_model(kind, **overrides))


def per_layer_subnet(supernet: ofa.Supernet) -> Subnet:
    """Non-uniform heads and FFN widths: needs the shipped modeling file."""
    space = supernet.space
    depth = space.depths[1]
    heads = [space.num_heads[(i + 1) % len(space.num_heads)] for i in range(depth)]
    ffn = [space.ffn_dims[i % len(space.ffn_dims)] for i in range(depth)]
    heads[0] = space.num_heads[0]  # make sure it is not vanilla
    return Subnet(
        layers=space.layers_for(depth),
        num_heads=tuple(heads),
        ffn_dims=tuple(ffn),
        hidden_size=space.hidden_sizes[-1],
    )


def vanilla_subnet(supernet: ofa.Supernet) -> Subnet:
    """Layers dropped and one FFN width, all heads: fits the family's own config."""
    space = supernet.space
    return space.uniform(
        depth=space.depths[0],
        num_heads=space.max_num_heads,
        ffn_dim=space.ffn_dims[1],
        hidden_size=space.max_hidden_size,
    )


@pytest.fixture
def supernet() -> ofa.Supernet:
    torch.manual_seed(0)
    return make_supernet()
