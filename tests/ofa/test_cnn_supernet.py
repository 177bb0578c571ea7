"""Home-made CNN supernets: conversion, couplings, random subnets, save / load (no torchvision)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from torch import nn

import ofa
from ofa.families.cnn import default_space
from ofa.families.cnn_graph import CnnGraph
from tests.ofa._cnn_nets import HomeNet, check_random_subnets, home_net, one_thread  # noqa: F401

X = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def net() -> HomeNet:
    return home_net()


@pytest.fixture(scope="module")
def supernet(net: HomeNet) -> ofa.Supernet:
    return ofa.convert(net, default_space(net, image_size=16)).eval()


def test_max_subnet_equals_original(net: HomeNet, supernet: ofa.Supernet) -> None:
    with torch.no_grad():
        torch.testing.assert_close(supernet(X), net(X), atol=1e-5, rtol=1e-5)
    assert not any(isinstance(m, type(supernet.model)) for m in net.modules())  # net untouched


def test_state_dict_keys_are_the_models_plus_kernel_transforms(net, supernet) -> None:
    keys = set(supernet.model.state_dict())
    original = set(net.state_dict())
    assert original <= keys
    extra = keys - original
    assert extra and all("kernel_transform_" in k for k in extra)


def test_structure_found_by_tracing(supernet) -> None:
    space = supernet.space
    # residual stream of stage1 (projection conv + both conv2 of identity blocks) is one group
    groups = {g.name: g for g in supernet.model.structure.groups}
    residual = groups["stage1.0.shortcut.0"]
    assert set(residual.producers) >= {"stage1.0.conv2", "stage1.0.shortcut.0", "stage1.1.conv2"}
    # the depthwise conv's channels move with the expand conv and the SE scale
    expanded = groups["stage2.1.expand.0"]
    assert "stage2.1.depthwise.0" in expanded.depthwise
    assert "stage2.1.se.fc2" in expanded.producers and "stage2.1.se.fc1" in expanded.consumers
    assert space.stages == ("stage1.0", "stage2.0")
    assert space.depth_choices == ((1, 2, 3), (1, 2, 3))
    assert space.kernel_convs == ("stage1.1.conv2", "stage2.1.depthwise.0", "stage2.2.depthwise.0")
    assert space.kernel_choices == ((3, 5), (3, 5), (3, 5, 7))
    # image input and logits never shrink
    assert "stem.0" in space.channel_groups and "head.4" not in space.channel_groups
    assert all(w % 8 == 0 for c in space.channel_choices for w in c[:-1])


def test_twenty_random_subnets_extract_exactly(supernet) -> None:
    check_random_subnets(supernet, X, count=20)


def test_extracted_model_is_plain(supernet) -> None:
    small = supernet.extract(supernet.space.min_subnet())
    elastic = [m for m in small.modules() if type(m).__name__.startswith("Elastic")]
    assert type(small) is CnnGraph and not elastic
    assert len(small.nodes) < len(supernet.model.nodes)  # dropped blocks are gone


def test_extracted_architecture_json_rebuilds_it(supernet) -> None:
    subnet = supernet.space.sample(torch.Generator().manual_seed(3))
    small = supernet.extract(subnet).eval()
    rebuilt = CnnGraph.from_dict(json.loads(small.to_json())).eval()
    rebuilt.load_state_dict(small.state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(X), small(X), atol=0, rtol=0)


def test_save_and_load_round_trip(supernet, tmp_path) -> None:
    subnet = supernet.space.sample(torch.Generator().manual_seed(5))
    supernet.set_subnet(subnet)
    supernet.save(tmp_path / "cnn")
    loaded = ofa.load_supernet(tmp_path / "cnn")
    assert loaded.space == supernet.space and loaded.active_subnet == subnet
    with torch.no_grad():
        torch.testing.assert_close(loaded(X), supernet(X), atol=0, rtol=0)
    supernet.set_subnet(supernet.space.max_subnet())
    check_random_subnets(loaded, X, count=3, seed=9)


def test_training_mode_runs_and_backpropagates(supernet) -> None:
    supernet.train()
    space = supernet.space
    smallest_kernels = tuple(c[0] for c in space.kernel_choices)
    supernet.set_subnet(
        dataclasses.replace(
            space.min_subnet(), depths=space.max_subnet().depths, kernel_sizes=smallest_kernels
        )
    )
    try:
        loss = supernet(X).logsumexp(-1).mean()
        loss.backward()
        transforms = [p for n, p in supernet.named_parameters() if "kernel_transform_" in n]
        assert transforms and all(p.grad is not None for p in transforms)
    finally:
        supernet.zero_grad(set_to_none=True)
        supernet.set_subnet(supernet.space.max_subnet())
        supernet.eval()


def test_subnet_outside_space_is_refused(supernet) -> None:
    bad = ofa.CnnSubnet(widths=(3,) * len(supernet.space.channel_groups))
    with pytest.raises(ValueError, match="outside the search space"):
        supernet.set_subnet(bad)
    with pytest.raises(TypeError, match="CnnSubnet"):
        supernet.set_subnet(ofa.Subnet(layers=(0,), num_heads=(1,), ffn_dims=(8,), hidden_size=8))


def test_space_that_does_not_fit_is_refused(net) -> None:
    space = default_space(net, image_size=16)
    wrong = ofa.CnnSearchSpace(channel_groups=("stem.0",), channel_choices=((8, 32),))
    with pytest.raises(ValueError, match="does not fit the model"):
        ofa.convert(net, wrong)
    with pytest.raises(TypeError, match="CnnSearchSpace"):
        ofa.convert(
            net,
            ofa.SearchSpace.default(
                num_layers=2, max_num_heads=2, head_dim=4, max_ffn_dim=16, max_hidden_size=8
            ),
        )
    assert space.contains(space.max_subnet())


class _Upsampling(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.up = nn.Upsample(scale_factor=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.conv(x))


class _Stacks(nn.Module):
    """torch.stack makes a new axis, which no channel group maps (torch.cat converts)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(1, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.a(x), self.a(x)], dim=1)


class _Branching(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return y if y.sum() > 0 else -y


@pytest.mark.parametrize(
    "model, pattern",
    [
        (_Upsampling(), r"nn\.Upsample at 'up'"),
        (_Stacks(), r"torch\.stack .*top-level forward"),
        (_Branching(), "could not be traced"),
    ],
    ids=["layer", "function", "control-flow"],
)
def test_unsupported_ops_are_named(model: nn.Module, pattern: str) -> None:
    with pytest.raises(TypeError, match=pattern):
        ofa.convert(model)


def test_unsupported_op_inside_a_submodule_names_it() -> None:
    net = nn.Sequential(nn.Identity(), _Stacks())
    with pytest.raises(TypeError, match=r"torch\.stack.*in module '1'"):
        ofa.convert(net)


def test_extracted_subnet_exports_with_torch_export_and_onnx(supernet, tmp_path) -> None:
    """A plain CnnGraph deploys with no Python class: torch.export and ONNX run it the same."""
    subnet = supernet.space.sample(torch.Generator().manual_seed(8))
    small = supernet.extract(subnet).eval()
    with torch.no_grad():
        expected = small(X)
        program = torch.export.export(small, (X,))
        torch.testing.assert_close(program.module()(X), expected, atol=1e-6, rtol=1e-6)
    onnxruntime = pytest.importorskip("onnxruntime")
    path = tmp_path / "subnet.onnx"
    torch.onnx.export(small, (X,), str(path), input_names=["pixel_values"], dynamo=False)
    session = onnxruntime.InferenceSession(str(path))
    (logits,) = session.run(None, {"pixel_values": X.numpy()})
    torch.testing.assert_close(torch.from_numpy(logits), expected, atol=1e-5, rtol=1e-5)
