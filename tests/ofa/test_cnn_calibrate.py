"""ofa.calibrate_bn_: exact batch statistics for the active subnet; nothing else changes."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import ofa
from ofa.families.cnn import default_space
from tests.ofa._cnn_nets import home_net, one_thread  # noqa: F401

X = torch.randn(64, 1, 16, 16, generator=torch.Generator().manual_seed(3))


def _inputs_of_norms(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """What every batch norm sees when the batch norms normalise by batch statistics (on a copy,
    so no running statistic changes): the statistics a one-batch calibration must record."""
    model = copy.deepcopy(model).eval()
    seen: dict[str, torch.Tensor] = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.BatchNorm2d):
            module.train()
            module.register_forward_pre_hook(
                lambda m, args, name=name: seen.setdefault(name, args[0].clone())
            )
    with torch.no_grad():
        model(x)
    return seen


def _check_statistics(model: nn.Module, inputs: dict[str, torch.Tensor]) -> None:
    assert inputs
    for name, value in inputs.items():
        norm = model.get_submodule(name)
        channels = value.shape[1]
        mean = value.mean((0, 2, 3))
        var = value.var((0, 2, 3), unbiased=True)
        torch.testing.assert_close(norm.running_mean[:channels], mean, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(norm.running_var[:channels], var, atol=1e-5, rtol=1e-4)


def test_extracted_model_gets_exact_statistics() -> None:
    net = home_net()
    supernet = ofa.convert(net, default_space(net, image_size=16))
    small = supernet.extract(supernet.space.min_subnet()).train()
    weights = {k: v.clone() for k, v in small.named_parameters()}
    used = ofa.calibrate_bn_(small, [X[:32], (X[32:], None)])  # tensors and (images, labels)
    assert used == 2 and small.training  # training flag restored
    assert all(m.momentum == 0.1 for m in small.modules() if isinstance(m, nn.BatchNorm2d))
    for name, value in small.named_parameters():
        assert torch.equal(value, weights[name])
    # the first batch norm sees the images through one conv: its mean is the two-batch mean
    first = _inputs_of_norms(small, X)["stem.1"]
    torch.testing.assert_close(
        small.get_submodule("stem.1").running_mean, first.mean((0, 2, 3)), atol=1e-5, rtol=1e-4
    )
    # with one batch, every batch norm records exactly the statistics of what it sees
    ofa.calibrate_bn_(small, [X])
    _check_statistics(small, _inputs_of_norms(small, X))


def test_supernet_calibrates_its_active_subnet() -> None:
    net = home_net()
    supernet = ofa.convert(net, default_space(net, image_size=16)).eval()
    subnet = supernet.space.sample(torch.Generator().manual_seed(4))
    supernet.set_subnet(subnet)
    ofa.calibrate_bn_(supernet, [{"pixel_values": X, "labels": torch.zeros(64)}])
    assert not supernet.training and supernet.active_subnet == subnet
    _check_statistics(supernet.model, _inputs_of_norms(supernet.model, X))
    # and the extracted subnet now computes what the calibrated supernet computes
    small = supernet.extract(subnet).eval()
    with torch.no_grad():
        torch.testing.assert_close(small(X), supernet(X), atol=1e-5, rtol=1e-5)


def test_calibration_errors() -> None:
    with pytest.raises(ValueError, match="no batch norm"):
        ofa.calibrate_bn_(nn.Sequential(nn.Conv2d(1, 2, 3)), [X])
    with pytest.raises(ValueError, match="no batches"):
        ofa.calibrate_bn_(home_net(), [])
    with pytest.raises(TypeError, match="pixel_values"):
        ofa.calibrate_bn_(home_net(), ["not an image"])
