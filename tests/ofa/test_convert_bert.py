"""Conversion of BERT-family models: the max subnet is the original model."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import BertConfig, BertForMaskedLM, GPT2Config, GPT2Model

import ofa
from ofa.elastic import ElasticEmbedding, ElasticLayerNorm, ElasticLinear, ElasticModuleList
from tests.tiny import KINDS, main_output, make_inputs, make_model


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("kind", KINDS)
def test_max_subnet_equals_original_with_padding(kind, attn):
    model = make_model(kind, attn=attn)
    supernet = ofa.convert(model).eval()
    inputs = make_inputs()
    assert inputs["attention_mask"].min() == 0  # padding is exercised
    with torch.no_grad():
        expected = main_output(model(**inputs))
        got = main_output(supernet(**inputs))
    assert (got - expected).abs().max().item() <= 1e-5


def test_convert_does_not_modify_the_given_model():
    model = make_model("bert-cls")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    types = [type(m) for m in model.modules()]
    supernet = ofa.convert(model)
    supernet.set_subnet(supernet.space.min_subnet())
    assert [type(m) for m in model.modules()] == types
    assert not any(isinstance(m, ElasticLinear) for m in model.modules())
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])
    assert supernet.model is not model


def test_convert_inplace_reuses_the_model():
    model = make_model("bert-cls")
    supernet = ofa.convert(model, inplace=True)
    assert supernet.model is model
    assert isinstance(model.bert.encoder.layer[0].attention.self.query, ElasticLinear)


def test_state_dict_keys_are_the_dense_models():
    model = make_model("roberta-cls")
    supernet = ofa.convert(model)
    assert set(supernet.model.state_dict()) == set(model.state_dict())
    kinds = {type(m) for m in supernet.modules()}
    assert {ElasticLinear, ElasticLayerNorm, ElasticEmbedding, ElasticModuleList} <= kinds


def test_subnet_runs_with_the_wrapped_models_inputs_and_outputs():
    model = make_model("bert-cls")
    supernet = ofa.convert(model).eval()
    subnet = supernet.space.min_subnet()
    supernet.set_subnet(subnet)
    inputs = make_inputs()
    out = supernet(**inputs, labels=torch.tensor([0, 1, 2]), output_hidden_states=True)
    assert out.logits.shape == (3, 3) and out.loss is not None
    assert len(out.hidden_states) == subnet.depth + 1
    assert out.hidden_states[-1].shape[-1] == subnet.hidden_size
    assert supernet.active_subnet == subnet


def test_using_restores_the_previous_subnet():
    supernet = ofa.convert(make_model("bert-cls"))
    small = supernet.space.min_subnet()
    with supernet.using(small):
        assert supernet.active_subnet == small
    assert supernet.active_subnet == supernet.space.max_subnet()


def test_default_space_is_derived_from_the_model():
    space = ofa.convert(make_model("bert-cls")).space
    assert (space.num_layers, space.max_num_heads, space.head_dim) == (4, 4, 8)
    assert (space.max_ffn_dim, space.max_hidden_size) == (64, 32)
    assert space.max_subnet().num_heads == (4,) * 4


@pytest.mark.parametrize(
    "model, message",
    [
        (
            BertForMaskedLM(
                BertConfig(
                    vocab_size=50,
                    hidden_size=16,
                    num_hidden_layers=1,
                    num_attention_heads=2,
                    intermediate_size=32,
                )
            ),
            "does not support BertForMaskedLM; supported models: BertForSequenceClassification",
        ),
        (
            GPT2Model(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50)),
            "does not support GPT2Model",
        ),
        (nn.Linear(3, 3), "does not support Linear"),
    ],
)
def test_unsupported_model_is_refused_naming_what_is(model, message):
    with pytest.raises(TypeError, match=message):
        ofa.convert(model)


def test_decoder_bert_is_refused():
    model = make_model("bert", is_decoder=True)
    with pytest.raises(ValueError, match="decoder"):
        ofa.convert(model)


def test_space_that_does_not_fit_the_model_is_refused():
    space = ofa.convert(make_model("bert-cls", num_hidden_layers=2)).space
    with pytest.raises(ValueError, match="num_layers=2 but the model has 4"):
        ofa.convert(make_model("bert-cls"), space)


def test_subnet_outside_the_space_is_refused():
    supernet = ofa.convert(make_model("bert-cls"))
    space = supernet.space
    bad_heads = ofa.Subnet(
        layers=(0, 1, 2, 3), num_heads=(4, 4, 4, 5), ffn_dims=(64,) * 4, hidden_size=32
    )
    with pytest.raises(ValueError, match="head counts \\[5\\]"):
        supernet.set_subnet(bad_heads)
    bad_ffn = ofa.Subnet(
        layers=space.layers_for(4), num_heads=(4,) * 4, ffn_dims=(64, 64, 64, 50), hidden_size=32
    )
    with pytest.raises(ValueError, match="FFN widths \\[50\\]"):
        supernet.extract(bad_ffn)
    bad_hidden = ofa.Subnet(
        layers=space.layers_for(4), num_heads=(4,) * 4, ffn_dims=(64,) * 4, hidden_size=20
    )
    with pytest.raises(ValueError, match="hidden_size 20"):
        supernet.flops(bad_hidden)
    with pytest.raises(TypeError, match="takes an ofa.Subnet"):
        supernet.set_subnet({"layers": [0]})
    assert supernet.active_subnet == space.max_subnet()


def test_custom_space_with_first_k_layers():
    model = make_model("bert-cls")
    space = ofa.SearchSpace(
        num_layers=4,
        max_num_heads=4,
        head_dim=8,
        max_ffn_dim=64,
        max_hidden_size=32,
        depths=(1, 2, 4),
        num_heads=(2, 4),
        ffn_dims=(32, 64),
        hidden_sizes=(16, 32),
        ffn_step=16,
        layer_selection="first",
    )
    supernet = ofa.convert(model, space).eval()
    subnet = space.uniform(depth=2, num_heads=2, ffn_dim=32, hidden_size=16)
    assert subnet.layers == (0, 1)
    supernet.set_subnet(subnet)
    small = supernet.extract(subnet).eval()
    inputs = make_inputs()
    with torch.no_grad():
        torch.testing.assert_close(
            small(**inputs).logits, supernet(**inputs).logits, atol=1e-5, rtol=0
        )
