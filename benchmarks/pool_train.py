"""Pool several bench_train runs (seeds of one recipe) into mean gaps with their standard error.

One run cannot settle a one-point goal: the training seed alone moves a subnet by more than a
point. This reads the ``results.json`` of each run and, per evaluation split, reports each run's
gaps (OFA subnet minus teacher, OFA subnet minus the prune-then-fine-tune baseline) at 50 % and
25 % of the teacher's FLOPs, their mean over runs and the standard error of that mean.

Usage:
    python benchmarks/pool_train.py runs/seed0 runs/seed1 runs/seed2 --section train-pooled
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._report import markdown_table, write_record  # noqa: E402
from benchmarks.bench_train import GOALS, SPLITS  # noqa: E402


def load(run: Path) -> dict:
    path = run / "results.json"
    try:
        results = json.loads(path.read_text())
    except OSError:
        raise SystemExit(f"{path}: not found; give the --out directories of bench_train runs")
    except ValueError as error:
        raise SystemExit(f"{path}: not JSON ({error})")
    missing = [k for k in ("teacher", "supernet", "baseline") if k not in results]
    if missing:
        raise SystemExit(f"{path}: the run did not finish (no {', '.join(missing)})")
    return results


def gaps(results: dict, split: str) -> dict[str, float]:
    """Points, per target: OFA minus teacher and OFA minus baseline on ``split``."""
    out = {}
    teacher = results["teacher"][split]
    for target in GOALS:
        ofa_acc = results["supernet"][str(target)][split]
        name = f"{target:.0%}"
        out[f"{name} vs teacher"] = 100 * (ofa_acc - teacher)
        base = results["baseline"].get(str(target))
        if base is not None:
            out[f"{name} vs baseline"] = 100 * (ofa_acc - base[split])
    return out


def recipe(args: dict) -> str:
    """What sets a run apart: seed, steps, and any bound, width multipliers, anchors or later
    rate."""
    parts = [f"seed {args.get('seed', 0)}", f"{args['steps']} steps"]
    if args.get("min_width"):
        parts.append(f"min width {args['min_width']:.0%}")
    if args.get("width_multipliers"):
        parts.append(f"width multipliers {args['width_multipliers']}")
    if args.get("anchors"):
        parts.append(f"{len(args['anchors'])} anchor(s)")
    if args.get("later_lr_scale", 1.0) != 1.0:
        parts.append(f"later phases at {args['later_lr_scale']:g} of the learning rate")
    return ", ".join(parts)


def _versus(mean: float, se: float) -> str:
    """Ahead or behind only by more than one standard error; level otherwise."""
    if math.isnan(se):
        return "one run: no standard error, no verdict"
    if mean > se:
        return "ahead"
    if mean < -se:
        return "behind"
    return "level: within one standard error"


def mean_se(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else math.nan
    return mean, se


def pool(runs: list[Path], teacher_goals: bool = True) -> str:
    loaded = [(run, load(run)) for run in runs]
    splits = [s for s in SPLITS if all(s in r["teacher"] for _, r in loaded)]
    lines = []
    for split in splits:
        label = SPLITS[split]
        rows, columns = [], None
        per_run = []
        for run, results in loaded:
            g = gaps(results, split)
            per_run.append(g)
            columns = list(g)
            rows.append(
                {
                    "run": f"{run.name} ({recipe(results['args'])})",
                    "teacher": f"{results['teacher'][split]:.4f}",
                    **{c: f"{g[c]:+.1f}" for c in columns},
                }
            )
        summary = {c: mean_se([g[c] for g in per_run]) for c in columns}
        rows.append(
            {
                "run": f"**mean of {len(per_run)} (± standard error)**",
                "teacher": "-",
                **{c: f"**{m:+.1f} ± {se:.1f}**" for c, (m, se) in summary.items()},
            }
        )
        size = loaded[0][1].get("heldout rows") if split == "heldout" else None
        lines.append(f"### {label}" + (f" ({size} rows)" if size else "") + "\n")
        lines.append(markdown_table(rows) + "\n")
        for target, within in GOALS.items():
            name = f"{target:.0%}"
            m, se = summary[f"{name} vs teacher"]
            verdict = "met" if m >= -within else "NOT met"
            line = f"- {name} subnet vs teacher: {m:+.1f} ± {se:.1f} points"
            if teacher_goals:
                line += f" (goal >= -{within}): {verdict}"
            if f"{name} vs baseline" in summary:
                m, se = summary[f"{name} vs baseline"]
                line += f"; vs baseline {m:+.1f} ± {se:.1f} ({_versus(m, se)})"
            lines.append(line)
        lines.append("")
    made = "\n".join(
        f"- {run.name}: `" + "`, then `".join(results.get("commands", [])) + "`"
        for run, results in loaded
    )
    return (
        f"The runs pooled, each with the commands that made it:\n\n{made}\n\n"
        "Gaps in accuracy points (OFA subnet with the shared weights, no retraining, minus the "
        "teacher or minus the prune-then-fine-tune baseline of the same shape), per run and "
        "averaged over runs; ± is the standard error of the mean over runs.\n\n" + "\n".join(lines)
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="bench_train --out directories")
    parser.add_argument("--section", default="train-pooled")
    parser.add_argument(
        "--title", default="Supernet training, pooled over runs", help="the section's heading"
    )
    parser.add_argument("--no-write", action="store_true", help="print only; write no record")
    parser.add_argument(
        "--no-teacher-goals",
        action="store_true",
        help="quote the gaps to the teacher without the BERT runs' goals (CNN runs: bench_cnn)",
    )
    args = parser.parse_args(argv)
    body = pool(args.runs, teacher_goals=not args.no_teacher_goals)
    print(body)
    if not args.no_write:
        # one run has no standard error: no headline figure for the accuracy goal
        goals = ("accuracy",) if len(args.runs) > 1 else ()
        write_record(args.section, args.title, body, goals=goals)


if __name__ == "__main__":
    main()
