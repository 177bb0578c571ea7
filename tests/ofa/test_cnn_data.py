"""Image data (Fashion-MNIST IDX files, scikit-learn digits) and a small real-data CNN run."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ofa
from ofa.data_images import FASHION_MNIST_DIR, load_digits, load_fashion_mnist, read_idx
from ofa.families.cnn import default_space
from tests.ofa._cnn_nets import one_thread  # noqa: F401


def _write_idx(path, array: np.ndarray, code: int = 0x08) -> None:
    header = bytes([0, 0, code, array.ndim]) + b"".join(struct.pack(">I", n) for n in array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.tobytes())


def test_idx_round_trip_and_errors(tmp_path) -> None:
    images = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", images)
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.array([3, 9], dtype=np.uint8))
    np.testing.assert_array_equal(read_idx(tmp_path / "train-images-idx3-ubyte.gz"), images)
    data = load_fashion_mnist(tmp_path, split="train")
    assert data.images.shape == (2, 1, 28, 28) and data.labels.tolist() == [3, 9]
    assert data.label_names[9] == "Ankle boot"
    (tmp_path / "bad.gz").write_bytes(gzip.compress(b"\x01\x02\x03\x04"))
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "bad.gz")
    with gzip.open(tmp_path / "short.gz", "wb") as handle:
        handle.write(bytes([0, 0, 8, 1]) + struct.pack(">I", 10) + b"\x00" * 3)
    with pytest.raises(ValueError, match="truncated"):
        read_idx(tmp_path / "short.gz")
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path, split="test")


@pytest.mark.skipif(
    not (FASHION_MNIST_DIR / "t10k-labels-idx1-ubyte.gz").exists(),
    reason="Debian's dataset-fashion-mnist is not installed (apt-get install dataset-fashion-mnist)",
)
def test_real_fashion_mnist_files() -> None:
    test = load_fashion_mnist(split="test")
    assert test.images.shape == (10000, 1, 28, 28) and test.num_labels == 10
    assert torch.bincount(test.labels).tolist() == [1000] * 10  # balanced, as published
    assert abs(float(test.images.mean())) < 0.05  # normalised
    batch = next(test.batches(32, shuffle=True, seed=1))
    assert batch["pixel_values"].shape == (32, 1, 28, 28) and batch["labels"].dtype == torch.int64


def test_digits_split_is_fixed_and_disjoint() -> None:
    train, test = load_digits(split="train"), load_digits(split="test")
    assert len(train) + len(test) == 1797 and len(test) == 359
    again = load_digits(split="test")
    assert torch.equal(test.images, again.images)
    assert train.images.shape[1:] == (1, 8, 8)


class DigitsNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.blocks = nn.Sequential(*[Residual(16) for _ in range(3)])
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


class Residual(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 32, 5, padding=2, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        self.conv2 = nn.Conv2d(32, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))


def _accuracy(model: nn.Module, data) -> float:
    model.eval()
    with torch.no_grad():
        return float((model(data.images).argmax(-1) == data.labels).float().mean())


def test_digits_teacher_supernet_and_calibrated_subnet() -> None:
    torch.manual_seed(0)
    train, test = load_digits(split="train"), load_digits(split="test")
    net = DigitsNet()
    optimizer = torch.optim.Adam(net.parameters(), lr=5e-3)
    for epoch in range(3):
        net.train()
        for batch in train.batches(64, shuffle=True, seed=epoch):
            loss = F.cross_entropy(net(batch["pixel_values"]), batch["labels"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    teacher_accuracy = _accuracy(net, test)
    assert teacher_accuracy > 0.85
    supernet = ofa.convert(net, default_space(net, image_size=8))
    assert _accuracy(supernet, test) == teacher_accuracy
    ofa.reorder_(supernet, ofa.importance.score(supernet, metric="bn_scale"))
    assert abs(_accuracy(supernet, test) - teacher_accuracy) <= 1 / len(test)  # float rounding
    half = supernet.space.scaled(0.5)
    small = supernet.extract(half)
    ofa.calibrate_bn_(small, (b["pixel_values"] for b in train.batches(256)))
    assert supernet.flops(half) < 0.5 * supernet.flops(supernet.space.max_subnet())
    assert _accuracy(small, test) > 0.3  # untrained half-width subnet: well above chance (0.1)
