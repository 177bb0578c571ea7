"""CNN channel importance (L1, L2, BN scale, Taylor, FPGM) and reordering by channel group."""

from __future__ import annotations

import copy

import pytest
import torch

import ofa
from ofa.families.cnn import default_space
from tests.ofa._cnn_nets import home_net, one_thread  # noqa: F401

GEN = torch.Generator().manual_seed(2)
X = torch.randn(4, 1, 16, 16, generator=GEN)
BATCHES = [{"pixel_values": X, "labels": torch.randint(10, (4,), generator=GEN)}]


@pytest.fixture(scope="module")
def supernet() -> ofa.Supernet:
    net = home_net(seed=4)
    return ofa.convert(net, default_space(net, image_size=16)).eval()


@pytest.mark.parametrize("metric", ofa.importance.METRICS)
def test_reordering_preserves_the_function(supernet: ofa.Supernet, metric: str) -> None:
    supernet = copy.deepcopy(supernet)
    with torch.no_grad():
        before = supernet(X)
    scores = ofa.importance.score(supernet, BATCHES, metric=metric)
    names = {g.name for g in supernet.unit_groups()}
    assert set(scores) == names and set(supernet.space.channel_groups) <= names
    applied = ofa.reorder_(supernet, scores)
    assert any(not torch.equal(p, torch.arange(len(p))) for p in applied.values())
    with torch.no_grad():
        torch.testing.assert_close(supernet(X), before, atol=1e-5, rtol=1e-5)
    # after reordering, every group's scores are non-increasing along the channels
    rescored = ofa.importance.score(supernet, BATCHES, metric=metric)
    for name, values in rescored.items():
        if metric != "taylor":  # weight metrics are exact permutations of the old scores
            assert torch.all(values[:-1] >= values[1:] - 1e-9), name


def test_scoring_is_pure(supernet: ofa.Supernet) -> None:
    state = {k: v.clone() for k, v in supernet.state_dict().items()}
    for metric in ofa.importance.METRICS:
        ofa.importance.score(supernet, BATCHES, metric=metric)
    for key, value in supernet.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_bn_scale_is_the_batch_norm_weight(supernet: ofa.Supernet) -> None:
    scores = ofa.importance.score(supernet, metric="bn_scale")
    gamma = supernet.model.get_submodule("stage1.0.bn1").weight.detach().abs().double()
    torch.testing.assert_close(scores["stage1.0.conv1"], gamma)
    # the squeeze-excite hidden channels have no batch norm: L1 of their weights instead
    fc1 = supernet.model.get_submodule("stage2.1.se.fc1")
    fc2 = supernet.model.get_submodule("stage2.1.se.fc2")
    l1 = fc1.weight.abs().sum((1, 2, 3)) + fc1.bias.abs() + fc2.weight.abs().sum((0, 2, 3))
    torch.testing.assert_close(scores["stage2.1.se.fc1"], l1.detach().double())


def test_fpgm_ranks_the_geometric_median_last(supernet: ofa.Supernet) -> None:
    """Channel 7 is zero in every coupled weight and the others come in +/- pairs, so channel
    7 is the group's geometric median: FPGM must score it lowest and reordering put it last."""
    supernet = copy.deepcopy(supernet)
    group = next(g for g in supernet.unit_groups() if g.name == "stage1.0.conv1")
    params = dict(supernet.model.named_parameters())
    others = [i for i in range(group.size) if i != 7]
    with torch.no_grad():
        for name, dim in group.members:
            units = params[name].transpose(0, dim)  # a view: (channels, ...)
            units[7] = 0
            for first, second in zip(others[0:-1:2], others[1:-1:2]):
                units[second] = -units[first]
    scores = ofa.importance.score(supernet, metric="fpgm")["stage1.0.conv1"]
    assert int(scores.argmin()) == 7
    applied = ofa.reorder_(supernet, {"stage1.0.conv1": scores})
    assert int(applied["stage1.0.conv1"][-1]) == 7


def test_reorder_moves_batch_norm_statistics(supernet: ofa.Supernet) -> None:
    supernet = copy.deepcopy(supernet)
    norm = supernet.model.get_submodule("stage1.0.bn1")
    mean, var = norm.running_mean.clone(), norm.running_var.clone()
    scores = {"stage1.0.conv1": torch.arange(48, dtype=torch.float64)}  # reverse the channels
    ofa.reorder_(supernet, scores)
    torch.testing.assert_close(norm.running_mean, mean.flip(0))
    torch.testing.assert_close(norm.running_var, var.flip(0))
