"""Extraction: a plain, really smaller model equal to the supernet running the subnet."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import ofa
from tests.tiny import main_output, make_inputs, make_model


def _plain(model: nn.Module) -> bool:
    return not any(type(m).__module__.startswith("ofa") for m in model.modules())


@pytest.mark.parametrize("kind", ["bert-cls", "roberta-cls", "electra-project", "bert"])
def test_twenty_random_subnets_extract_equal_supernet(kind):
    model = make_model(kind, attn="sdpa")
    supernet = ofa.convert(model).eval()
    inputs = make_inputs()
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        subnet = supernet.space.sample(generator)
        supernet.set_subnet(subnet)
        small = supernet.extract(subnet).eval()
        assert type(small) is type(model) and _plain(small)
        with torch.no_grad():
            diff = (main_output(small(**inputs)) - main_output(supernet(**inputs))).abs().max()
        assert diff.item() <= 1e-5, subnet
        assert sum(p.numel() for p in small.parameters()) == supernet.num_params(subnet)


def test_extracted_modules_are_really_smaller():
    model = make_model("bert-cls")
    supernet = ofa.convert(model)
    space = supernet.space
    subnet = ofa.Subnet(
        layers=space.layers_for(2), num_heads=(1, 3), ffn_dims=(16, 48), hidden_size=16
    )
    small = supernet.extract(subnet)
    layers = small.bert.encoder.layer
    assert len(layers) == 2
    assert layers[0].attention.self.query.weight.shape == (8, 16)
    assert layers[1].attention.self.value.weight.shape == (24, 16)
    assert layers[0].attention.output.dense.weight.shape == (16, 8)
    assert layers[0].intermediate.dense.weight.shape == (16, 16)
    assert layers[1].output.dense.weight.shape == (16, 48)
    assert layers[1].output.LayerNorm.weight.shape == (16,)
    assert small.bert.embeddings.word_embeddings.weight.shape == (100, 16)
    assert small.bert.pooler.dense.weight.shape == (16, 16)
    assert small.classifier.weight.shape == (3, 16)
    assert small.config.ofa_subnet == subnet.to_dict()
    full = sum(p.numel() for p in model.parameters())
    assert sum(p.numel() for p in small.parameters()) < full / 2


def test_max_subnet_extract_has_the_original_parameter_count():
    model = make_model("roberta-cls")
    supernet = ofa.convert(model)
    assert supernet.num_params(supernet.space.max_subnet()) == sum(
        p.numel() for p in model.parameters()
    )


def test_extract_does_not_share_storage_with_the_supernet():
    supernet = ofa.convert(make_model("bert-cls"))
    small = supernet.extract(supernet.space.min_subnet())
    with torch.no_grad():
        for p in small.parameters():
            p.zero_()
    assert supernet.model.bert.embeddings.word_embeddings.weight.abs().sum() > 0


@pytest.mark.parametrize("kind", ["bert-cls", "roberta-cls", "electra-project", "bert"])
def test_flops_match_torch_flop_counter(kind):
    # eager attention: FlopCounterMode does not count CPU sdpa kernels, but does count bmm
    model = make_model(kind, attn="eager")
    supernet = ofa.convert(model).eval()
    generator = torch.Generator().manual_seed(1)
    batch, length = 2, 9
    inputs = make_inputs(batch, length)
    inputs["attention_mask"][:] = 1
    for subnet in [supernet.space.max_subnet(), supernet.space.min_subnet()] + [
        supernet.space.sample(generator) for _ in range(3)
    ]:
        small = supernet.extract(subnet).eval()
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            small(**inputs)
        assert counter.get_total_flops() == supernet.flops(
            subnet, batch_size=batch, seq_len=length
        ), subnet


def test_flops_shrink_with_the_subnet():
    supernet = ofa.convert(make_model("bert-cls"))
    space = supernet.space
    assert supernet.flops(space.min_subnet()) < supernet.flops(space.max_subnet()) / 4
    with pytest.raises(ValueError, match="positive"):
        supernet.flops(batch_size=0)
