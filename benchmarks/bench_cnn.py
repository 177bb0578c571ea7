"""CNN supernet on Fashion-MNIST: teacher, once-for-all subnets vs prune-then-fine-tune, speed.

1. Train a small ResNet-style teacher on a Fashion-MNIST subset.
2. Convert it, reorder channels by BN scale, and train the supernet with ``ofa.train_`` and the
   default CNN schedule (kernel, then depth, then width; sandwich rule: max + min + random
   subnet per step, distilled from the teacher).
3. Pick subnets at <= 100%, 50% and 25% of the teacher's FLOPs (best of a few candidates on a
   held-out part of the training data, BN calibrated), report test accuracy with no
   per-subnet training, beside the prune-then-fine-tune baseline: the same subnet cut from the
   reordered, untrained supernet and trained alone with the same distillation for
   ``--finetune-steps`` steps (default: as many as the supernet's).
4. CPU latency of the exported subnets (interleaved rounds, medians) against FLOP reduction,
   and the training step time of the supernet at its max subnet over the teacher's.

Run: python -m benchmarks.bench_cnn [--train-size 12000 --teacher-epochs 3 ...]
Needs Debian's dataset-fashion-mnist.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `python benchmarks/...`

import ofa  # noqa: E402
from benchmarks._candidates import best_of, candidates_under  # noqa: E402
from benchmarks._report import markdown_table, write_record  # noqa: E402
from ofa._io import write_text_atomic  # noqa: E402
from ofa.data_images import ImageData, load_fashion_mnist  # noqa: E402
from ofa.families.cnn import default_space  # noqa: E402
from ofa.training.budgets import anchor_for, width_multiplier_for  # noqa: E402


class Block(nn.Module):
    def __init__(self, channels_in: int, channels: int, stride: int, kernel_size: int) -> None:
        super().__init__()
        inner = 2 * channels
        self.conv1 = nn.Conv2d(
            channels_in, inner, kernel_size, stride, kernel_size // 2, bias=False
        )
        self.bn1 = nn.BatchNorm2d(inner)
        self.conv2 = nn.Conv2d(inner, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = None
        if stride != 1 or channels_in != channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(channels_in, channels, 1, stride, bias=False), nn.BatchNorm2d(channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.shortcut is None else self.shortcut(x)
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(out + identity)


class Teacher(nn.Module):
    """ResNet-style: stem (stride 2), two stages of 3 residual blocks, 5 x 5 inner convs."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(1, width, 3, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)
        )
        self.stage1 = nn.Sequential(*[Block(width, width, 1, 5) for _ in range(3)])
        self.stage2 = nn.Sequential(
            Block(width, 2 * width, 2, 5), *[Block(2 * width, 2 * width, 1, 5) for _ in range(2)]
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.stage2(self.stage1(self.stem(x)))), 1))


def accuracy(model: nn.Module, data: ImageData, batch_size: int = 500) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for batch in data.batches(batch_size):
            correct += int((model(batch["pixel_values"]).argmax(-1) == batch["labels"]).sum())
    return correct / len(data)


def train_plain(model: nn.Module, data: ImageData, *, steps: int, lr: float, seed: int) -> None:
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps)
    model.train()
    step, epoch = 0, 0
    while step < steps:
        for batch in data.batches(128, shuffle=True, seed=seed + epoch, drop_last=True):
            loss = F.cross_entropy(model(batch["pixel_values"]), batch["labels"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
            if step == steps:
                break
        epoch += 1


def distill_config(args: argparse.Namespace) -> ofa.DistillConfig:
    return ofa.DistillConfig(temperature=args.temperature, alpha=args.alpha)


def multiplier_subnets(supernet: ofa.Supernet, multipliers: tuple[float, ...]) -> list:
    """The uniform subnets that a width-all phase trains for ``multipliers``."""
    phase = ofa.PhaseConfig(
        name="all",
        steps=1,
        widths="all",
        depths="all",
        kernel_sizes="all",
        width_multipliers=multipliers,
    )
    return phase.multiplier_subnets(supernet.space)


def train_supernet(
    supernet: ofa.Supernet,
    teacher: nn.Module,
    data: ImageData,
    args: argparse.Namespace,
    out: str,
    multipliers: tuple[float, ...] = (),
    anchors: tuple[ofa.CnnSubnet, ...] = (),
) -> None:
    """``ofa.train_`` with the default CNN schedule: kernel, then depth, then width."""
    later = args.lr * args.later_lr_scale if args.later_lr_scale else None
    config = ofa.TrainConfig(
        phases=ofa.default_cnn_phases(
            args.supernet_steps,
            space=supernet.space,
            width_multipliers=multipliers,
            later_learning_rate=later,
            anchors=anchors,
        ),
        batch_size=128,
        learning_rate=args.lr,
        weight_decay=1e-4,
        distill=distill_config(args),
        seed=args.seed,
    )
    ofa.train_(supernet, teacher=teacher, train_data=data, config=config, output_dir=out)


def prune_then_finetune(
    ordered: ofa.Supernet,
    subnet: ofa.CnnSubnet,
    teacher: nn.Module,
    data: ImageData,
    args: argparse.Namespace,
    out: str,
) -> ofa.Supernet:
    """The baseline: the same subnet cut from the reordered, untrained supernet, trained alone
    with the same distillation for ``--finetune-steps`` steps."""
    model = copy.deepcopy(ordered)
    phase = ofa.PhaseConfig(name="baseline", steps=args.finetune_steps, subnet=subnet)
    config = ofa.TrainConfig(
        phases=(phase,),
        batch_size=128,
        learning_rate=args.lr,
        weight_decay=1e-4,
        distill=distill_config(args),
        seed=args.seed,
    )
    ofa.train_(model, teacher=teacher, train_data=data, config=config, output_dir=out)
    return model


def pick_subnet(
    supernet: ofa.Supernet,
    target_flops: float,
    calib: ImageData,
    val: ImageData,
    count: int,
    extra: list = (),
) -> ofa.CnnSubnet:
    """Best of ``count`` random subnets just under ``target_flops`` (and of the ``extra`` ones
    that fit, the trained width multipliers) on ``val``, batch norms calibrated."""

    def score(subnet: ofa.CnnSubnet) -> float:
        small = supernet.extract(subnet)
        ofa.calibrate_bn_(small, calib.batches(256))
        return accuracy(small, val)

    fitting = candidates_under(supernet.space, supernet.flops, target_flops, count)
    fitting += [s for s in extra if supernet.flops(s) <= target_flops and s not in fitting]
    return best_of(fitting, score)[0]


def median_ms(model: nn.Module, x: torch.Tensor, rounds: int) -> list[float]:
    times = []
    with torch.no_grad():
        for _ in range(rounds):
            start = time.perf_counter()
            model(x)
            times.append((time.perf_counter() - start) * 1000)
    return times


def latency_table(models: dict[str, nn.Module], flops: dict[str, int], batch: int) -> list[dict]:
    x = torch.randn(batch, 1, 28, 28)
    samples: dict[str, list[float]] = {name: [] for name in models}
    for model in models.values():
        median_ms(model.eval(), x, 3)  # warmup
    for _ in range(15):  # interleaved rounds
        for name, model in models.items():
            samples[name] += median_ms(model, x, 2)
    base = statistics.median(samples["100%"])
    rows = []
    for name in models:
        ms = statistics.median(samples[name])
        flop_ratio = flops["100%"] / flops[name]
        rows.append(
            {
                "subnet": name,
                "MFLOPs/image": f"{flops[name] / 1e6:.2f}",
                f"ms (batch {batch})": f"{ms:.2f}",
                "speedup": f"{base / ms:.2f}x",
                "FLOP reduction": f"{flop_ratio:.2f}x",
                "speedup / FLOP reduction": f"{base / ms / flop_ratio:.2f}",
            }
        )
    return rows


def step_time_ratio(
    teacher: nn.Module, supernet: ofa.Supernet, rounds: int
) -> tuple[float, float, float]:
    """Median training-step time (forward, backward, SGD step) of each, interleaved."""
    x, y = torch.randn(128, 1, 28, 28), torch.randint(10, (128,))
    models = {
        "teacher": copy.deepcopy(teacher).train(),
        "supernet": copy.deepcopy(supernet).train(),
    }
    models["supernet"].set_subnet(supernet.space.max_subnet())
    optimizers = {k: torch.optim.SGD(m.parameters(), lr=1e-3) for k, m in models.items()}
    times: dict[str, list[float]] = {k: [] for k in models}
    for index in range(rounds + 2):
        for name, model in models.items():
            start = time.perf_counter()
            F.cross_entropy(model(x), y).backward()
            optimizers[name].step()
            optimizers[name].zero_grad()
            if index >= 2:
                times[name].append(time.perf_counter() - start)
    teacher_ms = statistics.median(times["teacher"]) * 1000
    supernet_ms = statistics.median(times["supernet"]) * 1000
    return teacher_ms, supernet_ms, supernet_ms / teacher_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-size", type=int, default=12000)
    parser.add_argument("--val-size", type=int, default=1000)
    parser.add_argument("--test-size", type=int, default=5000)
    parser.add_argument("--teacher-steps", type=int, default=350)
    parser.add_argument("--supernet-steps", type=int, default=450)
    parser.add_argument(
        "--finetune-steps", type=int, help="baseline steps (default: as many as the supernet's)"
    )
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--alpha", type=float, default=0.5, help="weight of the hard-label loss")
    parser.add_argument("--out", default="runs/bench_cnn")
    parser.add_argument("--section", default="cnn", help="the run's name on docs/BENCHMARKS.md")
    parser.add_argument("--candidates", type=int, default=6)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="1 is fastest on a busy CPU")
    parser.add_argument("--no-write", action="store_true", help="print only (smoke runs)")
    parser.add_argument(
        "--seed", type=int, default=0, help="supernet, baseline and candidates (teacher: 0)"
    )
    parser.add_argument(
        "--width-multipliers",
        action="store_true",
        help="train, every step, the uniform widths whose FLOPs are the 50%% and 25%% budgets",
    )
    parser.add_argument(
        "--later-lr-scale",
        type=float,
        default=0.0,
        help="peak rate of the phases after the first, as a fraction of --lr (0: the same)",
    )
    parser.add_argument(
        "--anchors",
        action="store_true",
        help="with --width-multipliers: for a budget no full-depth multiplier fits, train every "
        "step the widest uniform subnet under it at a smaller depth or kernel (PhaseConfig.anchors)",
    )
    args = parser.parse_args()
    args.finetune_steps = args.finetune_steps or args.supernet_steps
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    started = time.time()
    pool = load_fashion_mnist(split="train", limit=args.train_size + args.val_size)
    train = ImageData(
        pool.images[: args.train_size], pool.labels[: args.train_size], pool.label_names
    )
    val = ImageData(
        pool.images[args.train_size :], pool.labels[args.train_size :], pool.label_names
    )
    test = load_fashion_mnist(split="test").subset(args.test_size, seed=0)
    calib = train.subset(1024, seed=1)

    teacher = Teacher(args.width)
    train_plain(teacher, train, steps=args.teacher_steps, lr=3e-3, seed=0)
    teacher_accuracy = accuracy(teacher, test)
    print(f"teacher accuracy {teacher_accuracy:.4f} ({time.time() - started:.0f} s)", flush=True)

    space = default_space(teacher, image_size=28)
    ordered = ofa.convert(teacher, space)
    ofa.reorder_(ordered, ofa.importance.score(ordered, metric="bn_scale"))
    supernet = copy.deepcopy(ordered)
    full_flops = supernet.flops(space.max_subnet())
    multipliers: tuple[float, ...] = ()
    if args.width_multipliers:
        found = {f: width_multiplier_for(supernet, f * full_flops) for f in (0.5, 0.25)}
        multipliers = tuple(m for m in found.values() if m is not None)
        print(f"width multipliers per FLOP budget {found}", flush=True)
    anchors: tuple[ofa.CnnSubnet, ...] = ()
    if args.anchors:
        if not args.width_multipliers:
            parser.error("--anchors goes with --width-multipliers")
        anchors = tuple(
            a
            for f, m in found.items()
            if m is None and (a := anchor_for(supernet, f * full_flops)) is not None
        )
        print(f"anchors {[a.to_dict() for a in anchors]}", flush=True)
    torch.manual_seed(args.seed)
    train_supernet(
        supernet, teacher, train, args, f"{args.out}/supernet_run", multipliers, anchors
    )
    print(f"supernet trained ({time.time() - started:.0f} s)", flush=True)

    uniform = multiplier_subnets(supernet, multipliers) if multipliers else []
    uniform += list(anchors)
    rows, exported, flops = [], {}, {}
    results: dict = {
        "args": {
            "seed": args.seed,
            "steps": args.supernet_steps,
            "width_multipliers": list(multipliers),
            "anchors": [a.to_dict() for a in anchors],
            "later_lr_scale": args.later_lr_scale or 1.0,
        },
        "commands": ["python benchmarks/bench_cnn.py " + " ".join(sys.argv[1:])],
        "teacher": {"test": teacher_accuracy},
        "supernet": {},
        "baseline": {},
        "subnets": {},
    }
    for label, fraction in (("100%", 1.0), ("50%", 0.5), ("25%", 0.25)):
        torch.manual_seed(args.seed)
        subnet = pick_subnet(
            supernet, fraction * full_flops, calib, val, args.candidates, extra=uniform
        )
        small = supernet.extract(subnet)
        ofa.calibrate_bn_(small, calib.batches(256))
        tuned = prune_then_finetune(
            ordered, subnet, teacher, train, args, f"{args.out}/baseline_{label[:-1]}_run"
        )
        baseline = tuned.extract(subnet)
        ofa.calibrate_bn_(baseline, calib.batches(256))
        rows.append(
            {
                "FLOP budget": label,
                "subnet FLOPs": f"{supernet.flops(subnet) / full_flops:.0%}",
                "params": supernet.num_params(subnet),
                "OFA subnet (no per-subnet training)": f"{accuracy(small, test):.4f}",
                f"prune + fine-tune ({args.finetune_steps} steps)": f"{accuracy(baseline, test):.4f}",
            }
        )
        exported[label], flops[label] = small, supernet.flops(subnet)
        if fraction < 1.0:
            results["supernet"][str(fraction)] = {"test": accuracy(small, test)}
            results["baseline"][str(fraction)] = {"test": accuracy(baseline, test)}
            results["subnets"][str(fraction)] = subnet.to_dict()
        print(rows[-1], f"({time.time() - started:.0f} s)", flush=True)
    # the schema of bench_train's results.json, so that pool_train.py pools seeds of either
    Path(args.out).mkdir(parents=True, exist_ok=True)
    write_text_atomic(Path(args.out) / "results.json", json.dumps(results, indent=1))

    latency = latency_table(exported, flops, batch=64) + latency_table(exported, flops, batch=1)
    teacher_ms, supernet_ms, ratio = step_time_ratio(teacher, supernet, rounds=15)
    recipe = ""
    if multipliers:
        recipe += (
            f" Width multipliers {', '.join(str(m) for m in multipliers)} (the widest uniform "
            "subnets at full depth and kernels under the 50% and 25% budgets, where one fits) "
            "trained every step beside the sandwich, and added to the candidates."
        )
    if anchors:
        recipe += (
            f" Anchors (PhaseConfig.anchors), trained every step of the width-all phase and "
            f"added to the candidates, for the budgets no multiplier fits: "
            f"{'; '.join(a.to_json() for a in anchors)}."
        )
    if args.later_lr_scale:
        recipe += f" Phases after the first at {args.later_lr_scale} of the peak rate."
    body = (
        f"Seed {args.seed}.{recipe} "
        f"Fashion-MNIST, {args.train_size} training images ({args.val_size} held out to pick "
        f"subnets), {args.test_size} test images. Teacher: ResNet-style CNN "
        f"({supernet.num_params(space.max_subnet())} params, "
        f"{full_flops / 1e6:.1f} MFLOPs/image), {args.teacher_steps} steps of batch 128: "
        f"test accuracy **{teacher_accuracy:.4f}**. Supernet: BN-scale reordering, then "
        f"{args.supernet_steps} steps of `ofa.train_` with `ofa.default_cnn_phases` (kernel, "
        "depth-large, depth-all, width-large, width-all; sandwich: max + min + 1 random subnet "
        f"per step; KL at T={args.temperature} with hard-label weight {args.alpha}). Baseline: "
        "the same subnet cut from the reordered, untrained supernet and trained alone with the "
        f"same losses for {args.finetune_steps} steps (a fixed-subnet phase of `ofa.train_`), "
        "batch norms recalibrated alike. Subnets: best of "
        f"{args.candidates} random subnets under each budget on the held-out images, batch "
        "norms recalibrated on 1,024 training images.\n\n"
        + markdown_table(rows)
        + "\n\nExported subnets (plain `CnnGraph`), CPU latency, 15 interleaved rounds x 2, "
        "medians:\n\n"
        + markdown_table(latency[:3])
        + "\n\n"
        + markdown_table(latency[3:])
        + f"\n\nTraining step (batch 128, forward + backward + SGD step), 15 interleaved rounds, "
        f"medians: teacher {teacher_ms:.1f} ms, supernet at its max subnet {supernet_ms:.1f} ms: "
        f"ratio **{ratio:.2f}** (goal <= 1.10).\n\nThe machine is shared (2 cores, other jobs "
        "running): single figures vary by 15-30%; ratios of interleaved runs are steadier. "
        f"Total run time {time.time() - started:.0f} s."
    )
    print(body)
    if not args.no_write:
        title = "CNN supernet on Fashion-MNIST"
        if args.section != "cnn":
            title += f" ({args.section})"
        write_record(
            args.section,
            title,
            body,
            goals=("train-step", "speedup-flops", "accuracy"),
            series="cnn",
        )


if __name__ == "__main__":
    main()
