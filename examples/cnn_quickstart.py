"""CNN quickstart: a home-made residual CNN on scikit-learn digits, the whole loop in about two minutes.

train a teacher -> ofa.convert -> reorder channels by BN scale -> ofa.train_ (kernel, depth, width
phases, distilled from the teacher) -> profile this CPU's latency -> search under half the
teacher's latency -> export the best subnet (batch norms recalibrated) -> reload it with torch
and safetensors alone and check it.

Run: python examples/cnn_quickstart.py [--out runs/cnn_quickstart]
(torchvision models work the same way: ofa.convert(torchvision.models.resnet18(), space).)
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import optuna
import torch
import torch.nn.functional as F
from torch import nn

import export
import ofa
import search
from ofa.data_images import ImageData, load_digits
from ofa.families.cnn import default_space


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
    parser.add_argument("--steps", type=int, default=150, help="supernet training steps")
    parser.add_argument("--trials", type=int, default=30, help="search trials")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out = Path(args.out)
    train, test = load_digits(split="train"), load_digits(split="test")
    val, calibration = train.subset(300, seed=1), train.subset(512, seed=2)

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

    ofa.train_(
        supernet,
        teacher=teacher,
        train_data=train,
        eval_data=val,
        config=ofa.TrainConfig(
            phases=ofa.default_cnn_phases(args.steps, space=space),
            batch_size=64,
            learning_rate=2e-3,
            distill=ofa.DistillConfig(temperature=2.0, alpha=0.5),
        ),
        output_dir=out / "train",
    )

    latency = search.LatencyModel.profile(supernet, batch_size=1, num_threads=1)
    budget = 0.5 * latency(space.max_subnet())
    print(f"latency model held-out error {latency.held_out_error:.1%}; budget {budget:.2f} ms")
    found = search.run(
        supernet,
        evaluate=lambda s, n: ofa.evaluate(s, n, val, calibration_data=calibration),
        latency=latency,
        config=search.SearchConfig(budget_ms=budget, trials=args.trials),
        out_dir=out / "search",
    )
    best = found.best
    print(
        f"best subnet: {supernet.flops(best.subnet) / supernet.flops(space.max_subnet()):.0%} "
        f"of the FLOPs, measured {best.measured_ms:.2f} ms (budget {budget:.2f} ms), "
        f"test accuracy {ofa.evaluate(supernet, best.subnet, test, calibration_data=calibration):.3f}"
    )

    target = export.save(
        supernet,
        best.subnet,
        out / "small",
        calibration_data=calibration.batches(256),
        overwrite=True,
    )
    # the exported directory needs only torch and safetensors: load it as a deployment would
    spec = importlib.util.spec_from_file_location("cnn_model", target / "cnn_model.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules["cnn_model"] = module
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    deployed = module.load_model(target)
    print(f"exported to {target}; reloaded without ofa: accuracy {accuracy(deployed, test):.3f}")


if __name__ == "__main__":
    main()
