"""Home-made CNNs of the architectures torchvision has (no torchvision needed): dense blocks,
inception and fire modules, channel shuffles, grouped bottlenecks, ConvNeXt blocks, stages with
non-numeric names; and a CNN without batch norms through train, evaluate, search and export."""

from __future__ import annotations

import copy
import logging

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import export
import ofa
import search
from ofa.data_images import ImageData
from ofa.families.cnn import default_space, elasticity
from tests.ofa._cnn_nets import check_random_subnets, one_thread, randomize_bn_  # noqa: F401

X = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))


def _cbr(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int) -> None:
        super().__init__()
        self.norm, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, 2 * growth, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(2 * growth)
        self.conv2 = nn.Conv2d(2 * growth, growth, 3, padding=1, bias=False)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = torch.cat(features, 1)
        return self.conv2(F.relu(self.norm2(self.conv1(F.relu(self.norm(x))))))


class DenseNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = _cbr(3, 32)
        self.layers = nn.ModuleList(DenseLayer(32 + 16 * i, 16) for i in range(3))
        self.transition = nn.Sequential(nn.BatchNorm2d(80), nn.ReLU(), nn.Conv2d(80, 48, 1))
        self.fc = nn.Linear(48, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [self.stem(x)]
        for layer in self.layers:
            features.append(layer(features))
        x = F.avg_pool2d(self.transition(torch.cat(features, 1)), 2)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class Inception(nn.Module):
    def __init__(self, cin: int) -> None:
        super().__init__()
        self.b1 = _cbr(cin, 16, 1)
        self.b2 = nn.Sequential(_cbr(cin, 16, 1), _cbr(16, 24, 3))
        self.b3 = nn.Sequential(_cbr(cin, 8, 1), _cbr(8, 16, 5))
        self.b4 = nn.Sequential(nn.MaxPool2d(3, 1, 1, ceil_mode=True), _cbr(cin, 16, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], 1)


class Fire(nn.Module):
    def __init__(self, cin: int, squeeze: int, expand: int) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(cin, squeeze, 1)
        self.e1, self.e3 = nn.Conv2d(squeeze, expand, 1), nn.Conv2d(squeeze, expand, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.squeeze(x))
        return torch.cat([F.relu(self.e1(x)), F.relu(self.e3(x))], 1)


class InceptionFire(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = _cbr(3, 32)
        self.inception = Inception(32)
        self.fire = Fire(72, 16, 32)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Conv2d(64, 10, 1), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fire(F.max_pool2d(self.inception(self.stem(x)), 2, ceil_mode=True))
        return torch.flatten(F.adaptive_avg_pool2d(self.classifier(x), 1), 1)


def _shuffle(x: torch.Tensor) -> torch.Tensor:
    b, c, h, w = x.size()
    return x.view(b, 2, c // 2, h, w).transpose(1, 2).contiguous().view(b, c, h, w)


class ShuffleUnit(nn.Module):
    def __init__(self, channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        half = channels // 2
        cin = channels if stride > 1 else half
        if stride > 1:
            self.branch1 = nn.Sequential(
                nn.Conv2d(cin, cin, 3, stride, 1, groups=cin),
                nn.BatchNorm2d(cin),
                _cbr(cin, half, 1),
            )
        self.branch2 = nn.Sequential(
            _cbr(cin, half, 1),
            nn.Conv2d(half, half, 3, stride, 1, groups=half),
            nn.BatchNorm2d(half),
            _cbr(half, half, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return _shuffle(out)


class ShuffleNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = _cbr(3, 64)
        self.stage = nn.Sequential(ShuffleUnit(64, 2), ShuffleUnit(64, 1), ShuffleUnit(64, 1))
        self.last = _cbr(64, 128, 1)
        self.fc = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.last(self.stage(self.stem(x))).mean([2, 3]))


class GroupedBottleneck(nn.Module):
    """ResNeXt / RegNet: 1x1, grouped 3x3, squeeze-excite, 1x1, residual."""

    def __init__(self, channels: int, width: int, groups: int) -> None:
        super().__init__()
        self.a = _cbr(channels, width, 1)
        self.b = _cbr(width, width, 3, groups=groups)
        self.se1, self.se2 = nn.Conv2d(width, 8, 1), nn.Conv2d(8, width, 1)
        self.c = nn.Sequential(nn.Conv2d(width, channels, 1, bias=False), nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.b(self.a(x))
        y = y * torch.sigmoid(self.se2(F.relu(self.se1(y.mean((2, 3), keepdim=True)))))
        return F.relu(x + self.c(y))


class RegNet(nn.Module):
    """Stages whose blocks are named ``block1-0``, ``block1-1``... (not numbers)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = _cbr(3, 32, stride=2)
        self.trunk = nn.Sequential()
        for stage in (1, 2):
            blocks = nn.Sequential()
            for index in range(3):
                blocks.add_module(f"block{stage}-{index}", GroupedBottleneck(32, 64, groups=4))
            self.trunk.add_module(f"block{stage}", blocks)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.trunk(self.stem(x)), 1), 1))


class LayerNorm2d(nn.LayerNorm):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class Permute(nn.Module):
    def __init__(self, dims: list[int]) -> None:
        super().__init__()
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.permute(x, self.dims)


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(dim, dim, 7, padding=3, groups=dim),
            Permute([0, 2, 3, 1]),
            nn.LayerNorm(dim, eps=1e-6),
            nn.Linear(dim, 4 * dim),
            nn.GELU(),
            nn.Linear(4 * dim, dim),
            Permute([0, 3, 1, 2]),
        )
        self.layer_scale = nn.Parameter(torch.rand(dim, 1, 1) + 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.layer_scale * self.block(x)
        result += x
        return result


class ConvNeXt(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 2, 2), LayerNorm2d(32, eps=1e-6))
        self.stage1 = nn.Sequential(*(ConvNeXtBlock(32) for _ in range(3)))
        self.down = nn.Sequential(LayerNorm2d(32, eps=1e-6), nn.Conv2d(32, 64, 2, 2))
        self.stage2 = nn.Sequential(*(ConvNeXtBlock(64) for _ in range(3)))
        self.head = nn.Sequential(LayerNorm2d(64, eps=1e-6), nn.Flatten(1), nn.Linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage2(self.down(self.stage1(self.stem(x))))
        return self.head(F.adaptive_avg_pool2d(x, 1))


def _randomize(model: nn.Module) -> nn.Module:
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.LayerNorm):
                module.weight.copy_(torch.rand(module.weight.shape, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * 0.1)
    return randomize_bn_(model).eval()


MODELS = {
    "densenet": DenseNet,
    "inception-fire": InceptionFire,
    "shufflenet": ShuffleNet,
    "regnet": RegNet,
    "convnext": ConvNeXt,
}
_CACHE: dict[str, tuple[nn.Module, ofa.Supernet]] = {}


def _pair(name: str) -> tuple[nn.Module, ofa.Supernet]:
    if name not in _CACHE:
        torch.manual_seed(0)
        model = _randomize(MODELS[name]())
        _CACHE[name] = model, ofa.convert(model, default_space(model, image_size=16)).eval()
    return _CACHE[name]


@pytest.mark.parametrize("name", MODELS)
def test_converts_exactly_and_shrinks(name: str) -> None:
    model, supernet = _pair(name)
    with torch.no_grad():
        torch.testing.assert_close(supernet(X), model(X), atol=1e-5, rtol=1e-5)
    space = supernet.space
    small = supernet.flops(space.min_subnet(), batch_size=1)
    assert small <= 0.4 * supernet.flops(space.max_subnet(), batch_size=1)
    assert elasticity(supernet.model, space).fraction >= 0.5
    check_random_subnets(supernet, X, count=8)


@pytest.mark.parametrize("name", MODELS)
def test_reordering_and_save_load_keep_the_function(name: str, tmp_path) -> None:
    _, supernet = _pair(name)
    supernet = copy.deepcopy(supernet)
    with torch.no_grad():
        before = supernet(X)
    ofa.reorder_(supernet, ofa.importance.score(supernet, metric="l1"))
    with torch.no_grad():
        torch.testing.assert_close(supernet(X), before, atol=1e-5, rtol=1e-5)
    subnet = supernet.space.sample(torch.Generator().manual_seed(2))
    supernet.set_subnet(subnet)
    supernet.save(tmp_path / "supernet")
    loaded = ofa.load_supernet(tmp_path / "supernet")
    with torch.no_grad():
        torch.testing.assert_close(loaded(X), supernet(X), atol=0, rtol=0)


def test_concatenated_channels_shrink_segment_by_segment() -> None:
    _, supernet = _pair("densenet")
    layouts = supernet.model.structure.layouts
    cat = next(n for n in supernet.model.nodes if n.op == "cat" and len(n.inputs) == 4)
    groups = {supernet.model.structure.piece_group[r.piece] for r in layouts[cat.name]}
    assert len(groups) == 4  # the stem's and every dense layer's channels, each its own width


def test_stages_are_found_without_numeric_names() -> None:
    _, supernet = _pair("regnet")
    assert supernet.space.stages == ("trunk.block1.block1-0", "trunk.block2.block2-0")
    assert supernet.space.depth_choices == ((1, 2, 3), (1, 2, 3))
    grouped = [g for g in supernet.model.structure.groups if g.block == 16]
    assert grouped and not any(g.fixed for g in grouped)  # whole groups of 64 / 4 channels


def test_channel_layer_norms_and_layer_scales_shrink() -> None:
    _, supernet = _pair("convnext")
    groups = {g.name: g for g in supernet.model.structure.groups}
    stream = groups["stem.0"]  # the residual stream of stage 1
    assert not stream.fixed and "stem.1" in stream.norms and "down.0" in stream.norms
    assert {"stage1.0.block.0", "stage1.2.block.0"} <= set(stream.depthwise)
    params = supernet.model.structure.param_follows
    assert len(params) == 6  # every layer scale follows its block's channels
    assert supernet.space.stages == ("stage1.0", "stage2.0")


# ---- a CNN without batch norms ------------------------------------------------------------------
class Plain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.conv3 = nn.Conv2d(32, 32, 3, padding=1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = x + F.relu(self.conv3(x))
        return self.fc(x.mean((2, 3)))


def _images(count: int, seed: int) -> ImageData:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(count, 1, 8, 8, generator=generator)
    labels = torch.randint(10, (count,), generator=generator)
    return ImageData(images, labels, tuple("0123456789"))


def test_a_cnn_without_batch_norm_trains_evaluates_searches_and_exports(tmp_path, caplog) -> None:
    torch.manual_seed(0)
    teacher = Plain().eval()
    supernet = ofa.convert(teacher, default_space(teacher, image_size=8))
    data = _images(48, 1)
    caplog.set_level(logging.WARNING)
    ofa.train_(
        supernet,
        teacher=teacher,
        train_data=data,
        eval_data=data,
        config=ofa.TrainConfig(
            phases=ofa.default_cnn_phases(4, space=supernet.space), batch_size=16
        ),
        output_dir=tmp_path / "train",
        progress=False,
    )
    supernet.eval()
    space = supernet.space
    accuracy = ofa.evaluate(supernet, space.min_subnet(), data, calibration_data=data)
    assert accuracy == ofa.evaluate(supernet, space.min_subnet(), data)
    latency = search.LatencyModel.profile(
        supernet, num_train=4, num_test=2, rounds=2, warmup=1, max_error=None
    )

    def evaluate(model: ofa.Supernet, subnet) -> float:
        return ofa.evaluate(model, subnet, data, calibration_data=data)

    result = search.run(
        supernet,
        evaluate=evaluate,
        latency=latency,
        config=search.SearchConfig(budget_fraction=0.9, trials=4),
        out_dir=tmp_path / "search",
    )
    subnet = result.best.subnet if result.best is not None else space.min_subnet()
    out = export.save(supernet, subnet, tmp_path / "export", calibration_data=data.batches(16))
    assert export.read_manifest(out)["calibration"] is None
    with torch.no_grad(), supernet.using(subnet):
        torch.testing.assert_close(export.load(out)(data.images), supernet(data.images))
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert not any("batch norm" in w or "batch-norm" in w for w in warnings), warnings
