"""Latency model accuracy on CPU: median absolute relative error on 30 held-out subnets.

Profiles the real MiniLM-L6 supernet (converted, untrained: latency does not depend on the
weights) at batch 1, seq 128, fp32, 2 threads: 30 random extracted subnets (plus max and min) to
fit, 30 others held out, the per-layer table and the fitted predictor, keeping the better one
(goal: held-out median error <= 5%). The machine's own noise is stated beside it: the IQR/median
of each measurement and how much two measurements of the same subnet, minutes apart, disagree.

Example:
    nohup python benchmarks/bench_latency.py > /tmp/bench_latency.log 2>&1 &
    python benchmarks/bench_latency.py --quick --no-write
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ofa  # noqa: E402
from benchmarks._latency_report import profile_report  # noqa: E402
from benchmarks._report import write_record  # noqa: E402
from ofa.embedded import minilm_path  # noqa: E402
from ofa_app.pipeline import load_pretrained  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "runs" / "bench_latency"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="8 + 4 subnets, 3 rounds")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    num_train, num_test, rounds = (8, 4, 3) if args.quick else (30, 30, args.rounds)
    model, _ = load_pretrained(minilm_path())
    supernet = ofa.convert(model).eval()
    body = profile_report(
        supernet,
        intro=lambda latency: (
            f"Real MiniLM-L6 supernet (converted), "
            f"{latency.target.describe()}, {num_train} profiled + {num_test} held-out random "
            f"extracted subnets, {rounds} timed rounds each (median)."
        ),
        out_file=OUT / f"latency_cpu_b{args.batch_size}_s{args.seq_len}.json",
        num_train=num_train,
        num_test=num_test,
        rounds=rounds,
        busy_load=2.5,
        goal=0.05,
        batch_size=args.batch_size,
        seq_len=args.seq_len,
        num_threads=args.threads,
    )
    print(body)
    if not args.no_write:
        write_record(
            "latency_model", "Latency model: held-out error on CPU", body, goals=("latency-model",)
        )


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
