"""``ofa profile``: measure a device and save the latency model of a supernet's subnets."""

from __future__ import annotations

import argparse
from typing import Any

EXAMPLE = """example:
  ofa profile --supernet runs/supernet --out runs/latency_cpu.json --device cpu \\
      --batch-size 1 --seq-len 128 --threads 2
  ofa profile --supernet runs/supernet --out runs/latency_h100.json --device cuda --dtype bfloat16
  ofa profile --supernet runs/llama_supernet --out runs/decode_cpu.json --phase decode --seq-len 256"""


def add_parser(subparsers: Any) -> tuple[str, argparse.ArgumentParser]:
    parser = subparsers.add_parser(
        "profile",
        help="build the latency model of a device (table or fitted, with its held-out error)",
        description="Measure random extracted subnets end to end and every layer shape on one "
        "device, dtype and input shape; keep the per-layer table or the fitted predictor, "
        "whichever predicts the held-out subnets better; save it as JSON.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--supernet", required=True, help="directory written by Supernet.save")
    parser.add_argument("--out", required=True, help="latency-model JSON file to write")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default="float32")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument(
        "--threads",
        type=int,
        help="CPU threads (default: the cores idle right now; a busy machine gets fewer)",
    )
    parser.add_argument(
        "--runtime",
        choices=("eager", "compile", "onnxruntime"),
        default="eager",
        help="what runs the model where it is deployed (a profile is refused for another)",
    )
    parser.add_argument(
        "--phase",
        choices=("prefill", "decode"),
        default="prefill",
        help="a causal LM's latency: the prompt of --seq-len tokens (prefill), or ms per "
        "generated token with --seq-len tokens in the KV cache (decode)",
    )
    parser.add_argument(
        "--memory-format",
        choices=("contiguous", "channels_last"),
        default="contiguous",
        help="a CNN's layout while timed: deploy in the one you profile (channels_last is "
        "faster on CPU, most at narrow widths: model.to(memory_format=torch.channels_last))",
    )
    parser.add_argument(
        "--max-error",
        type=float,
        default=0.15,
        help="refuse a latency model whose held-out median error is above this",
    )
    parser.add_argument("--subnets", type=int, default=30, help="random subnets measured to fit")
    parser.add_argument("--held-out", type=int, default=30, help="subnets measured to score")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.set_defaults(func=run)
    return "profile", parser


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ofa.supernet import load_supernet
    from search import LatencyModel, UnusableProfileError

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"{out} already exists: pass --overwrite or pick another --out")
    if not 0 < args.max_error:
        raise ValueError(f"--max-error must be positive, got {args.max_error}")
    supernet = load_supernet(args.supernet)
    try:
        model = LatencyModel.profile(
            supernet,
            device=args.device,
            dtype=args.dtype,
            batch_size=args.batch_size,
            seq_len=args.seq_len,
            num_threads=args.threads,
            num_train=args.subnets,
            num_test=args.held_out,
            warmup=args.warmup,
            rounds=args.rounds,
            seed=args.seed,
            progress=True,
            max_error=args.max_error,
            runtime=args.runtime,
            phase=args.phase,
            memory_format=args.memory_format,
        )
    except UnusableProfileError as error:
        rejected = out.with_name(out.name + ".rejected.json")
        error.model.save(rejected)  # for diagnosis; never read as a latency model
        raise UnusableProfileError(f"{error} (its figures: {rejected})", error.model) from None
    model.save(out)
    held = model.held_out
    print(f"latency model for {model.device_name}, {model.target.describe()}: {model.method}")
    for method in ("table", "predictor"):
        print(
            f"  {method:9s} held-out median error {100 * held[f'{method}_median_error']:.1f}% "
            f"(max {100 * held[f'{method}_max_error']:.1f}%) on {held['num_subnets']} subnets"
        )
    print(
        f"  measurement noise (median 95% interval) {100 * held['median_measurement_spread']:.1f}%"
    )
    max_ms, min_ms = model.anchors_ms()
    print(
        f"  max subnet (the teacher's shape) {max_ms:.3g} ms, min subnet {min_ms:.3g} ms "
        f"({min_ms / max_ms:.2f} of the max): a budget between them, e.g. "
        "`ofa search --budget-fraction 0.5`"
    )
    print(f"saved to {out}")
    return 0
