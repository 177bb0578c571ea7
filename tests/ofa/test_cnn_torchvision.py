"""torchvision ResNet-18/50, MobileNetV2/V3 as supernets (random init, 32 x 32 inputs).

Skipped with the reason where torchvision does not import (PyPI's torchvision needs the torch it
was built for; see DESIGN.md). Run them in a venv with torch 2.14.1 + torchvision 0.29.1.
"""

from __future__ import annotations

import copy

import pytest
import torch

try:
    import torchvision
except Exception as error:  # ImportError, or RuntimeError when built for another torch
    pytest.skip(f"torchvision is not importable here: {error}", allow_module_level=True)

import ofa
from ofa.elastic.conv import ElasticConv2d
from ofa.families.cnn import default_space
from tests.ofa._cnn_nets import check_random_subnets, one_thread, randomize_bn_  # noqa: F401

X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
MODELS = ["resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_large"]
_CACHE: dict[str, tuple[torch.nn.Module, ofa.Supernet]] = {}


def _pair(name: str) -> tuple[torch.nn.Module, ofa.Supernet]:
    if name not in _CACHE:
        torch.manual_seed(0)
        model = randomize_bn_(getattr(torchvision.models, name)(num_classes=10)).eval()
        _CACHE[name] = model, ofa.convert(model, default_space(model, image_size=32)).eval()
    return _CACHE[name]


@pytest.mark.parametrize("name", MODELS)
def test_max_subnet_equals_original(name: str) -> None:
    model, supernet = _pair(name)
    with torch.no_grad():
        torch.testing.assert_close(supernet(X), model(X), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_twenty_random_subnets_extract_exactly(name: str) -> None:
    _, supernet = _pair(name)
    check_random_subnets(supernet, X, count=20, seed=1)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_large"])
def test_reordering_preserves_the_function(name: str) -> None:
    _, supernet = _pair(name)
    supernet = copy.deepcopy(supernet)
    with torch.no_grad():
        before = supernet(X)
    ofa.reorder_(supernet, ofa.importance.score(supernet, metric="l1"))
    with torch.no_grad():
        torch.testing.assert_close(supernet(X), before, atol=1e-5, rtol=1e-5)


def test_structure_of_resnet50() -> None:
    _, supernet = _pair("resnet50")
    space = supernet.space
    assert space.stages == ("layer1.0", "layer2.0", "layer3.0", "layer4.0")
    assert space.depth_choices == ((1, 2, 3), (2, 3, 4), (4, 5, 6), (1, 2, 3))
    groups = {g.name: g for g in supernet.model.structure.groups}
    # the residual stream of layer3: the projection and every block's last conv
    stream = groups["layer3.0.conv3"]
    assert set(stream.producers) == {"layer3.0.downsample.0"} | {
        f"layer3.{i}.conv3" for i in range(6)
    }
    assert groups["layer3.2.conv1"].size == 256 and not groups["layer3.2.conv1"].fixed


def test_mobilenet_v3_kernels_and_squeeze_excitation() -> None:
    _, supernet = _pair("mobilenet_v3_large")
    space = supernet.space
    assert space.kernel_convs and all(c == (3, 5) for c in space.kernel_choices)
    conv = supernet.model.get_submodule(space.kernel_convs[0])
    assert isinstance(conv, ElasticConv2d) and conv.is_depthwise
    assert tuple(conv.kernel_transform_5to3.shape) == (9, 9)
    conv.active_kernel_size = 3
    try:
        assert conv.active_weight(conv.in_channels).shape == (conv.out_channels, 1, 3, 3)
    finally:
        conv.active_kernel_size = 5
    groups = {g.name: g for g in supernet.model.structure.groups}
    expanded = groups["features.4.block.0.0"]  # expand conv of the first SE block
    assert "features.4.block.1.0" in expanded.depthwise
    assert "features.4.block.2.fc2" in expanded.producers


def test_resnet18_trains_profiles_and_exports(tmp_path) -> None:
    """The whole loop on a torchvision model: ofa.train_ (CNN schedule), a latency model, export."""
    import export
    import search
    from ofa.data_images import ImageData

    model, supernet = _pair("resnet18")
    supernet = copy.deepcopy(supernet)
    generator = torch.Generator().manual_seed(3)
    images = torch.randn(64, 3, 32, 32, generator=generator)
    data = ImageData(images, torch.randint(10, (64,), generator=generator), tuple("0123456789"))
    ofa.train_(
        supernet,
        teacher=model,
        train_data=data,
        eval_data=data,
        config=ofa.TrainConfig(
            phases=ofa.default_cnn_phases(5, space=supernet.space), batch_size=16
        ),
        output_dir=tmp_path / "train",
        progress=False,
    )
    latency = search.LatencyModel.profile(  # the loop, not the precision: any error will do
        supernet, num_train=4, num_test=2, rounds=2, warmup=1, max_error=None
    )
    subnet = supernet.space.sample(torch.Generator().manual_seed(5))
    assert 0 < latency(subnet) and latency.target.image_size == supernet.space.image_size
    out = export.save(supernet, subnet, tmp_path / "small", calibration_data=data.batches(32))
    small = supernet.extract(subnet)
    ofa.calibrate_bn_(small, data.batches(32))
    with torch.no_grad():
        torch.testing.assert_close(export.load(out)(X), small.eval()(X), atol=1e-5, rtol=1e-5)
