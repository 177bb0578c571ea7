"""FLOP budgets to train shapes: ofa.budget_shapes picks, per budget, the full-depth width
multiplier that fits it or, where none does, the uniform subnet with the most FLOPs under it."""

from __future__ import annotations

import pytest

import ofa
from ofa.families.cnn import default_space
from ofa.training.budgets import width_multiplier_for
from tests.ofa._cnn_nets import home_net
from tests.ofa.test_train import tiny_bert


@pytest.fixture(scope="module")
def cnn():
    teacher = home_net()
    return ofa.convert(teacher, default_space(teacher, image_size=8))


def test_cnn_uniform_subnets_are_distinct_members_from_max_to_min(cnn):
    space = cnn.space
    subnets = space.uniform_subnets()
    assert len(set(subnets)) == len(subnets) > 2
    for subnet in subnets:
        space.check(subnet)
    assert space.max_subnet() in subnets and space.min_subnet() in subnets
    depths = {s.depths for s in subnets}
    kernels = {s.kernel_sizes for s in subnets}
    assert len(depths) > 1 and len(kernels) > 1  # shallower stages and smaller kernels too


def test_each_budget_gets_a_multiplier_that_fits_or_the_largest_uniform_subnet_under_it(cnn):
    full = cnn.flops(cnn.space.max_subnet())
    uniform = {s: cnn.flops(s) for s in cnn.space.uniform_subnets()}
    smallest = min(uniform.values()) / full
    fractions = (0.6, 0.3, smallest + 0.01)
    shapes = ofa.budget_shapes(cnn, fractions)
    assert set(shapes.per_budget) == set(fractions)
    kinds = {type(v).__name__ for v in shapes.per_budget.values()}
    assert kinds == {"float", "CnnSubnet"}, shapes  # this space needs both at these budgets
    probe = ofa.PhaseConfig(name="p", steps=1, depths="all", widths="all", kernel_sizes="all")
    for fraction, shape in shapes.per_budget.items():
        if isinstance(shape, float):
            assert shape in shapes.width_multipliers
            subnet = probe.__class__(**{**probe.to_dict(), "width_multipliers": (shape,)})
            flops = cnn.flops(subnet.multiplier_subnets(cnn.space)[0])
            assert flops <= fraction * full
            wider = probe.__class__(**{**probe.to_dict(), "width_multipliers": (shape + 0.05,)})
            wider_flops = cnn.flops(wider.multiplier_subnets(cnn.space)[0])
            assert wider_flops > fraction * full or shape + 0.05 > 1
        else:
            assert shape in shapes.anchors
            assert width_multiplier_for(cnn, fraction * full) is None
            assert uniform[shape] <= fraction * full
            assert uniform[shape] == max(f for f in uniform.values() if f <= fraction * full)


def test_bert_budgets_get_width_multipliers():
    supernet = ofa.convert(tiny_bert())
    shapes = ofa.budget_shapes(supernet, (0.5,))
    (multiplier,) = shapes.width_multipliers
    assert 0 < multiplier < 1 and shapes.anchors == ()


@pytest.mark.parametrize(
    ("fractions", "message"),
    [((0.0,), "fractions in \\(0, 1\\]"), ((1.5,), "fractions in"), ((1e-6,), "at least 0\\.")],
)
def test_bad_budgets_are_refused_in_one_line(cnn, fractions, message):
    with pytest.raises(ValueError, match=message):
        ofa.budget_shapes(cnn, fractions)


def test_fill_widens_a_multiplier_to_the_widest_uniform_subnet_around_it_that_fits():
    """The quarter choices leave room under most budgets: with fill, such a budget trains the
    uniform subnet around the multiplier's (no dimension narrower) with the most FLOPs that
    still fits, as an anchor; a budget with no room keeps its multiplier."""
    supernet = ofa.convert(tiny_bert())
    family = ofa.families.space_family(supernet.space)
    full = supernet.flops(supernet.space.max_subnet())
    uniform = supernet.space.uniform_subnets()
    fractions = (0.3, 0.45, 0.6, 0.8)
    plain = ofa.budget_shapes(supernet, fractions)
    filled = ofa.budget_shapes(supernet, fractions, fill=True)
    probe = ofa.PhaseConfig(name="p", steps=1, depths="all", num_heads="all", ffn_dims="all")
    widened = 0
    for fraction in fractions:
        multiplier = plain.per_budget[fraction]
        start = ofa.PhaseConfig(
            **{**probe.to_dict(), "width_multipliers": (multiplier,)}
        ).multiplier_subnets(supernet.space)[0]
        shape = filled.per_budget[fraction]
        if isinstance(shape, float):  # no wider uniform subnet around it fits
            assert shape == multiplier
            assert not any(
                s != start and family.contains(s, start) and supernet.flops(s) <= fraction * full
                for s in uniform
            )
            continue
        widened += 1
        assert shape in filled.anchors and family.contains(shape, start) and shape != start
        assert supernet.flops(start) < supernet.flops(shape) <= fraction * full
        assert supernet.flops(shape) == max(
            supernet.flops(s)
            for s in uniform
            if family.contains(s, start) and supernet.flops(s) <= fraction * full
        )
    assert widened >= 2, filled.per_budget  # the quarter steps leave room at these budgets


def test_ofa_train_fill_budgets_trains_the_filled_shapes_as_anchors(tmp_path):
    """``ofa train --flop-budgets ... --fill-budgets`` builds the schedule from
    ``budget_shapes(fill=True)``: the filled shapes as every phase's anchors, the multipliers
    of the budgets with no room left."""
    from ofa_app.cli import build_parser
    from ofa_app.commands.train import train_config

    supernet = ofa.convert(tiny_bert())
    _, parsers = build_parser()
    argv = ["--supernet", str(tmp_path), "--out", str(tmp_path / "t"), "--flop-budgets"]
    args = parsers["train"].parse_args([*argv, "0.3,0.45,0.6", "--fill-budgets"])
    phases = train_config(args, supernet).phases
    expected = ofa.budget_shapes(supernet, (0.3, 0.45, 0.6), fill=True)
    assert expected.anchors  # at least one budget was widened
    assert all(p.anchors == expected.anchors for p in phases)
    assert all(p.width_multipliers == expected.width_multipliers for p in phases)
    plain = train_config(parsers["train"].parse_args([*argv, "0.3,0.45,0.6"]), supernet)
    assert all(p.anchors == () for p in plain.phases)
