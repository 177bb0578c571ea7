"""Home-made CNNs for tests (random weights, random batch-norm statistics) and checks."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import ofa


class ResidualBlock(nn.Module):
    """Post-activation residual block with an optional 1x1 projection shortcut."""

    def __init__(
        self, in_channels: int, channels: int, stride: int = 1, kernel_size: int = 3
    ) -> None:
        super().__init__()
        pad = kernel_size // 2
        self.conv1 = nn.Conv2d(in_channels, 2 * channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(2 * channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(2 * channels, channels, kernel_size, 1, pad, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut = None
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride, bias=False), nn.BatchNorm2d(channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.shortcut is None else self.shortcut(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, 8, 1)
        self.fc2 = nn.Conv2d(8, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = torch.sigmoid(self.fc2(torch.relu(self.fc1(x.mean((2, 3), keepdim=True)))))
        return x * scale


class InvertedBlock(nn.Module):
    """MobileNet-style block: expand, depthwise k x k, squeeze-excite, project, residual."""

    def __init__(self, channels: int, kernel_size: int = 5) -> None:
        super().__init__()
        wide = 3 * channels
        self.expand = nn.Sequential(
            nn.Conv2d(channels, wide, 1, bias=False), nn.BatchNorm2d(wide), nn.Hardswish()
        )
        self.depthwise = nn.Sequential(
            nn.Conv2d(wide, wide, kernel_size, padding=kernel_size // 2, groups=wide, bias=False),
            nn.BatchNorm2d(wide),
            nn.ReLU6(),
        )
        self.se = SqueezeExcite(wide)
        self.project = nn.Sequential(
            nn.Conv2d(wide, channels, 1, bias=False), nn.BatchNorm2d(channels)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.project(self.se(self.depthwise(self.expand(x))))


class HomeNet(nn.Module):
    """Stem, a residual stage (projection head + 2 identity blocks), an inverted stage, head."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU()
        )
        self.stage1 = nn.Sequential(
            ResidualBlock(16, 24, stride=2),
            ResidualBlock(24, 24, kernel_size=5),
            ResidualBlock(24, 24),
        )
        self.stage2 = nn.Sequential(
            nn.Conv2d(24, 16, 1), InvertedBlock(16), InvertedBlock(16, kernel_size=7)
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.stage2(self.stage1(self.stem(x)))))


def randomize_bn_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial batch-norm statistics and affine weights, so eval mode is a real test."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                size = module.num_features
                module.running_mean.copy_(torch.randn(size, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(size, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(size, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(size, generator=generator) * 0.1)
    return model


def home_net(seed: int = 0) -> HomeNet:
    torch.manual_seed(seed)
    return randomize_bn_(HomeNet(), seed).eval()


def counted_flops(model: nn.Module, x: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter:
        model(x)
    return int(counter.get_total_flops())


def check_random_subnets(
    supernet: ofa.Supernet, x: torch.Tensor, *, count: int, seed: int = 0, atol: float = 1e-5
) -> None:
    """For ``count`` random subnets (plus min and max): extracted == supernet, counts exact."""
    generator = torch.Generator().manual_seed(seed)
    space = supernet.space
    subnets = [space.max_subnet(), space.min_subnet()]
    subnets += [space.sample(generator) for _ in range(count)]
    supernet.eval()
    previous = supernet.active_subnet
    try:
        for subnet in subnets:
            supernet.set_subnet(subnet)
            small = supernet.extract(subnet).eval()
            with torch.no_grad():
                torch.testing.assert_close(small(x), supernet(x), atol=atol, rtol=atol)
            assert sum(p.numel() for p in small.parameters()) == supernet.num_params(subnet)
            assert counted_flops(small, x) == supernet.flops(subnet, batch_size=x.shape[0])
    finally:
        supernet.set_subnet(previous)


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """Tiny convs run far faster on one thread when the shared CPU is busy (import to use)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
