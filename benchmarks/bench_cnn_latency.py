"""CNN latency model accuracy on CPU: median absolute relative error on held-out subnets.

Profiles the bench CNN (``benchmarks/bench_cnn.py``'s ResNet-style ``Teacher``, converted with
the same ``default_space(teacher, image_size=28)``, untrained: latency does not depend on the
weights) at batch 1, 28 x 28, fp32, 1 thread by default: 30 random extracted subnets (plus max
and min) to fit, 30 others held out, the per-layer table (conv + BN + activation units timed
alone, summed over the subnet's live layers, times a calibration ratio) and the fitted predictor
(non-negative least squares on FLOP-like features), keeping the better one. The machine's noise
is stated beside it: the IQR/median of each measurement and how much two measurements of the
same subnet, measured again after profiling, disagree.

Example:
    python benchmarks/bench_cnn_latency.py --threads 1
    python benchmarks/bench_cnn_latency.py --quick --no-write
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ofa  # noqa: E402
from benchmarks._latency_report import profile_report  # noqa: E402
from benchmarks._report import write_record  # noqa: E402
from benchmarks.bench_cnn import Teacher  # noqa: E402
from ofa.families.cnn import default_space  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "runs" / "bench_cnn_latency"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--image-size", type=int, default=28)
    parser.add_argument("--width", type=int, default=16, help="the teacher's base width")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="8 + 4 subnets, 3 rounds")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    num_train, num_test, rounds = (8, 4, 3) if args.quick else (30, 30, args.rounds)
    torch.set_num_threads(args.threads)  # as measured, so the report's "torch threads" agrees
    teacher = Teacher(args.width).eval()
    space = default_space(teacher, image_size=args.image_size)
    supernet = ofa.convert(teacher, space).eval()
    body = profile_report(
        supernet,
        intro=lambda latency: (
            f"""Bench CNN (`benchmarks/bench_cnn.py` `Teacher`, width \
{args.width}, converted with `default_space(teacher, image_size={args.image_size})`: \
{len(space.channel_groups)} channel groups, {len(space.stages)} depth-elastic stages, \
{len(space.kernel_convs)} kernel-elastic convs), {latency.target.describe()}, {num_train} \
profiled + {num_test} held-out random extracted subnets, {rounds} timed rounds each (median). \
The table holds {len(latency.table)} entries: {len(latency.plan)} conv / linear units (each with \
its BN and activation), every width and kernel each can take, timed alone."""
        ),
        out_file=OUT / f"latency_cpu_b{args.batch_size}_i{args.image_size}.json",
        num_train=num_train,
        num_test=num_test,
        rounds=rounds,
        busy_load=1.5,
        batch_size=args.batch_size,
        image_size=args.image_size,
        num_threads=args.threads,
    )
    print(body)
    if not args.no_write:
        write_record(
            "cnn_latency_model",
            "CNN latency model: held-out error on CPU",
            body,
            goals=("latency-model",),
        )


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
