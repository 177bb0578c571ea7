"""Exported CNN subnets of a torchvision-sized model: measured speedup over FLOP reduction.

A ResNet-18 (torchvision's, random init; the same architecture defined here when torchvision
is not installed) at 3x224x224 is converted, and uniform-width subnets (every channel group at
x0.75, x0.5 and x0.25 of its width, full depth) are exported with ``export.save`` and loaded
back with ``export.load`` (plain modules, channels really removed). Each is timed beside the
original model and beside a *native* ResNet-18 built at the same widths, paired and interleaved
(``search.measure_paired``), at batch 8 and batch 1. Two figures per subnet:

- speedup / FLOP reduction (1.0: as much faster as it has fewer FLOPs; goal >= 0.9 at batch 8);
- exported / native time (1.0: the export runs exactly as fast as a model defined at its shape;
  what this package controls: the gap between the two figures is the CPU kernels' efficiency
  at narrow channels, which no exporter changes).

Run: python benchmarks/bench_cnn_export_speed.py [--threads 2] [--memory-format channels_last]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `python benchmarks/...`

import export  # noqa: E402
import ofa  # noqa: E402
import search  # noqa: E402
from benchmarks._report import markdown_table, write_record  # noqa: E402
from ofa.families.cnn import default_space  # noqa: E402


class BasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(out + identity)


class ResNet18(nn.Module):
    """torchvision's resnet18 architecture (11.7M params, 1.8 GFLOPs at 224), at any stage
    widths (``ratio`` x 64/128/256/512: the native model of a uniform-width subnet's shape)."""

    def __init__(self, num_classes: int = 1000, ratio: float = 1.0) -> None:
        super().__init__()
        widths = [round(ratio * w) for w in (64, 128, 256, 512)]
        self.conv1 = nn.Conv2d(3, widths[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        layers, cin = [], widths[0]
        for cout, stride in zip(widths, (1, 2, 2, 2)):
            layers.append(nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)))
            cin = cout
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def make_model() -> tuple[nn.Module, str]:
    torch.manual_seed(0)
    try:
        import torchvision

        return (
            torchvision.models.resnet18().eval(),
            f"torchvision {torchvision.__version__} resnet18",
        )
    except Exception:  # noqa: BLE001 - not installed, or not importable beside this torch
        return ResNet18().eval(), "resnet18 (torchvision's architecture, defined in the benchmark)"


RATIOS = (0.75, 0.5, 0.25)


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-sizes", default="8,1")
    parser.add_argument("--section", help="default: the series, cnn-export-speed[-channels-last]")
    parser.add_argument("--no-write", action="store_true", help="print only (smoke runs)")
    parser.add_argument(
        "--memory-format",
        choices=("contiguous", "channels_last"),
        default="contiguous",
        help="layout every model is timed in (search.LatencyTarget.memory_format)",
    )
    args = parser.parse_args()
    started = time.time()
    model, name = make_model()
    space = default_space(model, image_size=224)
    supernet = ofa.convert(model, space)
    full = supernet.flops(space.max_subnet())
    subnets = {f"x{r:.2f}": space.scaled(r) for r in RATIOS}
    exported: dict[str, nn.Module] = {}
    native: dict[str, nn.Module] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for ratio, (label, subnet) in zip(RATIOS, subnets.items()):
            out = Path(tmp) / label
            export.save(supernet, subnet, out)
            exported[label] = export.load(out).eval()
            native[f"native {label}"] = ResNet18(ratio=ratio).eval()
            if _params(exported[label]) != _params(native[f"native {label}"]):
                raise SystemExit(
                    f"the {label} export has {_params(exported[label])} parameters, the native "
                    f"model of its widths {_params(native[f'native {label}'])}: not the same shape"
                )
    rows = []
    for batch in (int(b) for b in args.batch_sizes.split(",")):
        target = search.LatencyTarget(
            batch_size=batch,
            num_threads=args.threads,
            image_size=(224, 224),
            memory_format=args.memory_format,
        )
        inputs = torch.randn(batch, 3, 224, 224)  # a CNN takes its images positionally
        try:
            with torch.inference_mode():
                paired = search.measure_paired(
                    {"original": model, **exported, **native},
                    inputs,
                    target=target,
                    reference="original",
                    policy=search.MeasurePolicy(max_seconds=300),
                    what=f"exported subnets at batch {batch}",
                )
        except search.TooNoisyError as error:
            # an honest row, not a figure: the other batch sizes' rows still stand
            rows.append({"batch": batch, "subnet": f"not measured: {error}"})
            print(rows[-1], flush=True)
            continue
        for label, subnet in subnets.items():
            speedup = paired.speedup(label)
            flops = supernet.flops(subnet)
            reduction = full / flops
            mine, theirs = paired.ratios[label], paired.ratios[f"native {label}"]
            vs_native = (mine.value / theirs.value, mine.low / theirs.high, mine.high / theirs.low)
            rows.append(
                {
                    "batch": batch,
                    "subnet": f"width {label}, {flops / full:.0%} of the FLOPs",
                    "GFLOPs/image": f"{flops / 1e9:.2f} of {full / 1e9:.2f}",
                    "params": f"{supernet.num_params(subnet) / 1e6:.2f}M",
                    "original ms": f"{paired.times['original'].value:.1f}",
                    "subnet ms": f"{paired.times[label].value:.1f}",
                    "native ms": f"{paired.times[f'native {label}'].value:.1f}",
                    "speedup (95% interval)": f"{speedup.value:.2f}x ({speedup.low:.2f}-{speedup.high:.2f})",
                    "FLOP reduction": f"{reduction:.2f}x",
                    "speedup / FLOP reduction": f"**{speedup.value / reduction:.2f}**",
                    "exported / native time": "{:.3f} ({:.3f}..{:.3f})".format(*vs_native),
                }
            )
            print(rows[-1], flush=True)
    layout = (
        "channels-last (weights and images: `model.to(memory_format=torch.channels_last)`, "
        "`search.LatencyTarget(memory_format='channels_last')`)"
        if args.memory_format == "channels_last"
        else "contiguous (NCHW) weights and images"
    )
    body = (
        f"{name}, random init, 3x224x224, CPU float32, {args.threads} threads, "
        f"{layout}. Uniform-width "
        "subnets (every channel group at x0.75, x0.5 and x0.25 of its width, full depth), "
        "exported with `export.save` and loaded back with `export.load` (plain modules, "
        "channels removed), each timed beside the original and beside a native ResNet-18 "
        "defined at the same widths, in the same run (`search.measure_paired`: interleaved "
        "rounds, fastest of 3 calls a round, median of per-round ratios). Goal: speedup / FLOP "
        "reduction >= 0.9 at batch 8. *exported / native time* is what the export controls "
        "(1.00: as fast as a model written at its shape); where it is 1.00 and speedup / FLOP "
        "reduction is below 1, the gap is the CPU convolution kernels' lower efficiency at "
        "narrow channels."
        "\n\n" + markdown_table(rows) + f"\n\nTotal run time {time.time() - started:.0f} s."
    )
    print(body)
    if not args.no_write:
        # its own series: it does not succeed bench_cnn's runs, nor one layout the other's
        series = "cnn-export-speed" + (
            "-channels-last" if args.memory_format == "channels_last" else ""
        )
        write_record(
            args.section or series,
            "Exported CNN subnets of a torchvision-sized model"
            + (", channels-last" if args.memory_format == "channels_last" else ""),
            body,
            goals=("speedup-flops", "extract-native"),
            series=series,
        )


if __name__ == "__main__":
    main()
