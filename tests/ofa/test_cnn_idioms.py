"""Everyday forward code in home-made CNNs: reshapes read from the tensor, functional pools,
activations and dropout, squeeze-excite, padding='same', shape checks, in-place ops, grouped
convs; refusals that name the file and line with a rewrite; the report of a degenerate space."""

from __future__ import annotations

import logging
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ofa
from ofa.families.cnn import UnsupportedOpError, default_space, elasticity
from tests.ofa._cnn_nets import check_random_subnets, one_thread, randomize_bn_  # noqa: F401

X = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))


class LinearSqueezeExcite(nn.Module):
    """Squeeze-excite with Linear layers: sizes read from the tensor, view, expand_as."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(channels, 16), nn.Linear(16, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, _, _ = x.size()
        y = F.adaptive_avg_pool2d(x, 1).view(b, c)
        y = torch.sigmoid(self.fc2(F.relu(self.fc1(y)))).view(b, c, 1, 1)
        return x * y.expand_as(x)


class ConvSqueezeExcite(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(channels, 16, 1), nn.Conv2d(16, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * F.hardsigmoid(self.fc2(F.silu(self.fc1(x.mean((2, 3), keepdim=True)))))


class Everyday(nn.Module):
    """Forward code as people write it."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 5, padding="same", bias=False)
        self.bn = nn.BatchNorm2d(32)
        self.grouped = nn.Conv2d(32, 32, 3, padding=1, groups=4, bias=False)
        self.bn2 = nn.BatchNorm2d(32)
        self.a = nn.Conv2d(32, 24, 1)
        self.b = nn.Conv2d(32, 24, 3, padding=1)
        self.se = LinearSqueezeExcite(48)
        self.se2 = ConvSqueezeExcite(48)
        self.head = nn.Conv2d(48, 64, 1)
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.dim() == 4, "images please"
        if x.shape[1] != 3:
            raise ValueError("RGB images please")
        torch._assert(x.shape[2] >= 8, "too small")
        x = F.hardswish(self.bn(self.stem(x)))
        x = F.max_pool2d(x, 2)
        y = F.relu6(self.bn2(self.grouped(x)))
        x = x + y
        x = torch.cat([F.gelu(self.a(x)), F.leaky_relu(self.b(x), 0.1)], 1)
        x = self.se2(self.se(x))
        x = F.avg_pool2d(x, kernel_size=2, stride=2)
        x = F.dropout(x, 0.2, self.training)
        x = self.head(x).relu_()
        x = F.adaptive_avg_pool2d(x, 1)
        x = x.reshape(-1, 64)
        return self.fc(x)


class Views(nn.Module):
    """More reshapes and ops: view(x.size(0), -1), flatten, mean(-1).mean(-1), clamp, in-place
    ops."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 32, 3, padding=1)
        self.conv3 = nn.Conv2d(32, 48, 3, stride=2, padding=1)
        self.fc1 = nn.Linear(48 * 2 * 2, 32)
        self.fc2 = nn.Linear(32 + 48, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.clamp(self.conv1(x), 0, 6)
        identity = x
        out = F.elu(self.conv2(x))
        out += identity
        F.relu(out, True)  # in place: out is changed though the result is not used
        out = self.conv3(F.relu_(out) / 2 + 1)
        pooled = F.adaptive_max_pool2d(out, (2, 2))
        flat = pooled.view(pooled.size(0), -1)
        summary = out.mean(-1).mean(-1)
        hidden = torch.tanh(self.fc1(flat))
        return self.fc2(torch.flatten(torch.cat([hidden, summary], dim=1), start_dim=1))


class Shuffled(nn.Module):
    """Chunk, concatenate, channel shuffle and a channel slice, written by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 64, 3, padding=1)
        self.left = nn.Conv2d(32, 32, 1)
        self.right = nn.Sequential(
            nn.Conv2d(32, 32, 1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1, groups=32), nn.BatchNorm2d(32),
        )  # fmt: skip
        self.head = nn.Conv2d(48, 32, 1)
        self.fc = nn.Linear(32, 10)

    @staticmethod
    def shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
        b, c, h, w = x.size()
        x = x.view(b, groups, c // groups, h, w)
        return torch.transpose(x, 1, 2).contiguous().view(b, -1, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        x1, x2 = x.chunk(2, dim=1)
        x = self.shuffle(torch.cat((self.left(x1), self.right(x2)), dim=1), 2)
        x = self.head(x[:, :48])
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class Shared(nn.Module):
    """One conv and one batch norm called twice (shared weights)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, padding=1)
        self.conv = nn.Conv2d(32, 32, 3, padding=1)
        self.norm = nn.BatchNorm2d(32)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        y = F.relu(self.norm(self.conv(x)))
        z = F.relu(self.norm(self.conv(F.max_pool2d(y, 2))))
        return self.fc(z.mean((2, 3)))


def _model(cls: type[nn.Module]) -> nn.Module:
    torch.manual_seed(0)
    return randomize_bn_(cls()).eval()


@pytest.mark.parametrize("cls", [Everyday, Views, Shuffled, Shared])
def test_everyday_forward_code_converts_exactly(cls: type[nn.Module]) -> None:
    model = _model(cls)
    supernet = ofa.convert(model, default_space(model, image_size=16)).eval()
    with torch.no_grad():
        torch.testing.assert_close(supernet(X), model(X), atol=1e-5, rtol=1e-5)
    check_random_subnets(supernet, X, count=8)
    space = supernet.space
    assert supernet.flops(space.min_subnet(), batch_size=1) < 0.4 * supernet.flops(
        space.max_subnet(), batch_size=1
    )


def test_padding_same_and_grouped_convs_stay_elastic() -> None:
    model = _model(Everyday)
    space = default_space(model, image_size=16)
    assert "stem" in space.kernel_convs  # padding="same" is the numbers it stands for
    supernet = ofa.convert(model, space)
    group = next(g for g in supernet.model.structure.groups if "grouped" in g.producers)
    assert not group.fixed and group.block == 8  # whole groups of 32 / 4 channels
    choices = dict(zip(space.channel_groups, space.channel_choices))[group.name]
    assert len(choices) > 1 and all(c % 8 == 0 for c in choices)
    assert elasticity(supernet.model, space).fraction == 1.0


def test_dropout_follows_the_training_flag() -> None:
    model = _model(Everyday)
    supernet = ofa.convert(model, default_space(model, image_size=16))
    supernet.train()
    torch.manual_seed(1)
    with torch.no_grad():
        noisy = supernet(X)
    supernet.eval()
    with torch.no_grad():
        assert not torch.allclose(noisy, supernet(X))


class _Interpolates(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(self.conv(x), scale_factor=2)


class _Branches(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        if y.mean() > 0:
            return y
        return -y


class _FoldsTheBatch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).view(-1, 8)


class _EvenSame(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 4, padding="same")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


@pytest.mark.parametrize(
    "cls, what, rewrite",
    [
        (_Interpolates, r"torch\.nn\.functional\.interpolate", "rewrite it with supported"),
        (_Branches, "data-dependent control flow", "torch.where"),
        (_FoldsTheBatch, r"Tensor\.view from shape", "keep the batch first"),
        (_EvenSame, "padding='same' and an even kernel", "use an odd kernel"),
    ],
    ids=["function", "control-flow", "reshape", "padding"],
)
def test_refusals_name_the_line_what_and_the_rewrite(cls, what, rewrite) -> None:
    with pytest.raises(UnsupportedOpError) as caught:
        ofa.convert(cls())
    message = str(caught.value)
    assert "\n" not in message
    assert re.match(r".*test_cnn_idioms\.py:\d+: ", message), message
    assert re.search(what, message) and rewrite in message, message


class _Narrow(nn.Module):
    """Depthwise multiplier convs (groups=C, 2C outputs): their channels keep their widths."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.expand = nn.Conv2d(8, 16, 3, padding=1, groups=8)
        self.mix = nn.Conv2d(16, 8, 1)
        self.expand2 = nn.Conv2d(8, 16, 3, padding=1, groups=8)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.expand2(self.mix(self.expand(self.stem(x))))
        return self.fc(x.mean((2, 3)))


def test_a_degenerate_space_is_reported(caplog) -> None:
    model = _Narrow().eval()
    with caplog.at_level(logging.WARNING, logger="ofa.families.cnn"):
        space = default_space(model, image_size=16)
    assert "degenerate search space" in caplog.text and "grouped conv" in caplog.text
    supernet = ofa.convert(model, space)
    report = elasticity(supernet.model, space)
    assert report.degenerate and report.fraction < 0.5
    assert any("1 input but 2 output channels per group" in r for r in report.fixed.values())
    assert f"of {report.groups} channel groups" in report.summary()
