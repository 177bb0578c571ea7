"""ofa.budget_shapes with a latency model as the cost: the shapes trained every step are the
widest full-depth multipliers *predicted* under each latency budget on the profiled device."""

from __future__ import annotations

import pytest

import ofa
from ofa.training.budgets import _multiplier_subnet, _probe
from tests.search.conftest import _profile


@pytest.mark.host_speed
def test_latency_budgets_get_the_widest_shape_predicted_under_each(supernet):
    """A full-depth multiplier where one is predicted under the budget (and 0.1 wider is
    not); else the uniform subnet predicted slowest under it (on this tiny model the fixed
    cost of each layer and the full hidden width put 60% of the latency below every
    full-depth multiplier).

    The half- and three-quarter-width subnets of this tiny model differ by about the
    profile's error, so a noisy host can order them wrongly: each try (``host_speed``: up to
    three) profiles afresh rather than reuse the session's latency model."""
    latency_model = _profile(supernet)
    full = latency_model(supernet.space.max_subnet())
    uniform = {s: latency_model(s) for s in supernet.space.uniform_subnets()}
    probe = _probe(supernet.space)
    half, three_quarters = (
        latency_model(_multiplier_subnet(supernet, m, probe)) / full for m in (0.5, 0.75)
    )
    assert half < three_quarters
    fractions = ((half + three_quarters) / 2, 0.6)  # a multiplier fits the first, none the second
    shapes = ofa.budget_shapes(supernet, fractions, cost=latency_model, what="latency")
    assert set(shapes.per_budget) == set(fractions)
    assert isinstance(shapes.per_budget[fractions[0]], float)
    for fraction, shape in shapes.per_budget.items():
        if isinstance(shape, float):
            assert 0 < shape < 1 and shape in shapes.width_multipliers
            subnet = _multiplier_subnet(supernet, shape, probe)
            assert latency_model(subnet) <= fraction * full
            wider = _multiplier_subnet(supernet, min(1.0, shape + 0.1), probe)
            assert latency_model(wider) > fraction * full
        else:
            assert shape in shapes.anchors
            assert uniform[shape] <= fraction * full
            assert uniform[shape] == max(v for v in uniform.values() if v <= fraction * full)
    # the budgets are in latency, not FLOPs: at 60% of the FLOPs a full-depth width exists
    assert isinstance(ofa.budget_shapes(supernet, (0.6,)).per_budget[0.6], float)


def test_a_latency_budget_below_the_smallest_subnet_is_refused_naming_latency(
    supernet, latency_model
):
    smallest = latency_model(supernet.space.min_subnet()) / latency_model(
        supernet.space.max_subnet()
    )
    with pytest.raises(ValueError, match=r"max subnet's latency or less .* at least"):
        ofa.budget_shapes(supernet, (smallest / 2,), cost=latency_model, what="latency")
