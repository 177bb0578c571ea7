"""CNN quickstart: a home-made residual CNN on scikit-learn digits, end to end in about a minute of CPU time.

train a teacher -> ofa.convert -> reorder channels by BN scale -> a few sandwich-rule steps ->
pick a half-width subnet -> calibrate its batch norms -> extract a plain model -> save it as
safetensors + architecture JSON -> rebuild it with no elastic code and check it.

Run: python examples/cnn_quickstart.py [--out runs/cnn_quickstart]
(torchvision models work the same way: ofa.convert(torchvision.models.resnet18(), space).)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import safetensors.torch
import torch
import torch.nn.functional as F
from torch import nn

import ofa
from ofa.convert.cnn import default_space
from ofa.convert.cnn_graph import CnnGraph
from ofa.data_images import ImageData, load_digits


class Residual(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 2 * channels, 5, padding=2, bias=False)
        self.bn1 = nn.BatchNorm2d(2 * channels)
        self.conv2 = nn.Conv2d(2 * channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))


class DigitsNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU())
        self.blocks = nn.Sequential(Residual(32), Residual(32), Residual(32))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


def accuracy(model: nn.Module, data: ImageData) -> float:
    model.eval()
    with torch.no_grad():
        return float((model(data.images).argmax(-1) == data.labels).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description="CNN supernet quickstart on digits")
    parser.add_argument("--out", default="runs/cnn_quickstart")
    args = parser.parse_args()
    torch.manual_seed(0)
    train, test = load_digits(split="train"), load_digits(split="test")

    teacher = DigitsNet()
    optimizer = torch.optim.Adam(teacher.parameters(), lr=3e-3)
    for epoch in range(4):
        teacher.train()
        for batch in train.batches(64, shuffle=True, seed=epoch):
            loss = F.cross_entropy(teacher(batch["pixel_values"]), batch["labels"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    print(f"teacher accuracy: {accuracy(teacher, test):.3f}")

    space = default_space(teacher, image_size=8)  # widths, depths and kernels found by tracing
    supernet = ofa.convert(teacher, space)
    ofa.reorder_(supernet, ofa.importance.score(supernet, metric="bn_scale"))
    print(
        f"space: {len(space.channel_groups)} channel groups, stages {space.stages}, "
        f"kernel-elastic convs {space.kernel_convs}"
    )

    # a few sandwich-rule steps (max, random, min subnet), distilled from the teacher
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.Adam(supernet.parameters(), lr=1e-3)
    teacher.eval()
    for batch in train.batches(64, shuffle=True, seed=10):
        with torch.no_grad():
            soft = F.softmax(teacher(batch["pixel_values"]), -1)
        optimizer.zero_grad()
        supernet.train()
        for subnet in (space.max_subnet(), space.sample(generator), space.min_subnet()):
            supernet.set_subnet(subnet)
            logits = supernet(batch["pixel_values"])
            F.kl_div(F.log_softmax(logits, -1), soft, reduction="batchmean").backward()
        optimizer.step()

    half = space.scaled(0.5)
    small = supernet.extract(half)
    ofa.calibrate_bn_(small, (b["pixel_values"] for b in train.batches(256)))
    ratio = supernet.flops(half) / supernet.flops(space.max_subnet())
    print(
        f"half-width subnet: {ratio:.0%} of the FLOPs, {supernet.num_params(half)} params, "
        f"accuracy {accuracy(small, test):.3f}"
    )

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "architecture.json").write_text(small.to_json())
    (out / "subnet.json").write_text(half.to_json())
    safetensors.torch.save_model(small, str(out / "model.safetensors"))

    rebuilt = CnnGraph.from_dict(json.loads((out / "architecture.json").read_text()))
    safetensors.torch.load_model(rebuilt, str(out / "model.safetensors"))
    with torch.no_grad():
        same = torch.equal(rebuilt.eval()(test.images), small.eval()(test.images))
    print(f"saved to {out}; rebuilt from JSON + safetensors, identical outputs: {same}")


if __name__ == "__main__":
    main()
