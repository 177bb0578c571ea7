from __future__ import annotations

import pytest
import torch

from ofa import SearchSpace, Subnet
from ofa.space import select_layers


def space(**overrides) -> SearchSpace:
    settings = dict(
        num_layers=6,
        max_num_heads=4,
        head_dim=8,
        max_ffn_dim=128,
        max_hidden_size=32,
        depths=(2, 4, 6),
        num_heads=(1, 2, 4),
        ffn_dims=(32, 64, 128),
        hidden_sizes=(16, 32),
        ffn_step=32,
    )
    return SearchSpace(**{**settings, **overrides})


def test_json_round_trips():
    s = space()
    assert SearchSpace.from_json(s.to_json()) == s
    subnet = s.sample(torch.Generator().manual_seed(3))
    assert Subnet.from_json(subnet.to_json()) == subnet
    assert hash(Subnet.from_dict(subnet.to_dict())) == hash(subnet)


def test_layer_selection_rules():
    assert select_layers(6, 3, "first") == (0, 1, 2)
    assert select_layers(6, 3, "evenly_spaced") == (1, 3, 5)
    assert select_layers(12, 4, "evenly_spaced") == (2, 5, 8, 11)
    assert select_layers(5, 5, "evenly_spaced") == (0, 1, 2, 3, 4)
    with pytest.raises(ValueError, match="outside 1..6"):
        select_layers(6, 7, "first")


def test_max_min_sample_are_inside():
    s = space()
    assert s.max_subnet() == Subnet(
        layers=tuple(range(6)), num_heads=(4,) * 6, ffn_dims=(128,) * 6, hidden_size=32
    )
    assert s.min_subnet().depth == 2 and s.min_subnet().layers == (2, 5)
    generator = torch.Generator().manual_seed(0)
    samples = {s.sample(generator) for _ in range(50)}
    assert len(samples) > 40 and all(s.contains(x) for x in samples)


def test_sample_is_reproducible_with_a_seed():
    s = space()
    a = [s.sample(torch.Generator().manual_seed(7)) for _ in range(2)]
    assert a[0] == a[1]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(ffn_step=48), "does not divide the FFN width"),
        (dict(ffn_dims=(40, 128)), "not a multiple of 32"),
        (dict(num_heads=(2, 5)), "outside 1..4"),
        (dict(hidden_sizes=(20, 32)), "not a multiple of 8"),
        (dict(hidden_sizes=(32, 64)), "outside 8..32"),
        (dict(depths=(4, 2)), "strictly increasing"),
        (dict(depths=()), "empty"),
        (dict(layer_selection="random"), "unknown layer_selection"),
        (dict(head_dim=12), "does not divide hidden size"),
    ],
)
def test_bad_space_is_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        space(**overrides)


def test_subnet_outside_space_names_every_problem():
    s = space()
    bad = Subnet(layers=(0, 1, 2), num_heads=(3, 4, 4), ffn_dims=(128, 96, 128), hidden_size=24)
    with pytest.raises(ValueError) as error:
        s.check(bad)
    text = str(error.value)
    for part in ("depth 3", "head counts [3]", "FFN widths [96]", "hidden_size 24"):
        assert part in text
    wrong_layers = Subnet(layers=(0, 1), num_heads=(4, 4), ffn_dims=(128, 128), hidden_size=32)
    with pytest.raises(ValueError, match="evenly_spaced choice"):
        s.check(wrong_layers)


def test_bad_subnet_is_refused():
    with pytest.raises(ValueError, match="one entry per kept layer"):
        Subnet(layers=(0, 1), num_heads=(4,), ffn_dims=(8, 8), hidden_size=8)
    with pytest.raises(ValueError, match="increasing"):
        Subnet(layers=(1, 0), num_heads=(4, 4), ffn_dims=(8, 8), hidden_size=8)
    with pytest.raises(ValueError, match="unknown Subnet fields"):
        Subnet.from_dict(
            {"layers": [0], "num_heads": [1], "ffn_dims": [8], "hidden_size": 8, "depth": 1}
        )


def test_default_space_from_shape():
    s = SearchSpace.default(
        num_layers=12, max_num_heads=12, head_dim=64, max_ffn_dim=3072, max_hidden_size=768
    )
    assert s.num_heads == (3, 6, 9, 12)
    assert s.ffn_dims == (768, 1536, 2304, 3072) and s.ffn_step == 64
    assert s.hidden_sizes == (384, 576, 768)
    assert s.depths == tuple(range(4, 13))
