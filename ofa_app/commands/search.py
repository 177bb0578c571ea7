"""``ofa search``: the most accurate subnets within a latency budget on a device (Optuna)."""

from __future__ import annotations

import argparse
from typing import Any

from ofa_app._help import busy_flags

EXAMPLE = """example:
  ofa search --supernet runs/supernet --latency-model runs/latency_cpu.json \\
      --budget-fraction 0.5 --trials 200 --out runs/search    # twice as fast as the teacher
  ofa search --supernet runs/supernet --latency-model runs/latency_cpu.json --budget-ms 25 \\
      --trials 200 --out runs/search
  ofa search --supernet runs/llm --latency-model runs/llm-prefill.json --budget-fraction 0.6 \
      --also-latency-model runs/llm-decode.json --also-budget-fraction 0.6 ...  # both phases
  ofa search ... --storage postgresql://user:pw@db/ofa --study-name minilm-cpu   # one worker
  optuna-dashboard runs/search/study.journal                                    # watch it"""


def add_parser(subparsers: Any) -> tuple[str, argparse.ArgumentParser]:
    parser = subparsers.add_parser(
        "search",
        help="search subnets under a latency budget (Optuna; Pareto front, best subnet)",
        description="Run an Optuna study over the supernet's subnets: accuracy up, latency down, "
        "the budget as a constraint. The Pareto subnets are extracted and re-measured on the "
        "device at the end; the best one is the most accurate whose MEASURED latency fits. "
        "Writes pareto.json, pareto.csv, pareto.png, pareto.html and study.journal to --out.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--supernet", required=True, help="directory written by Supernet.save")
    parser.add_argument("--latency-model", help="JSON written by `ofa profile`")
    parser.add_argument(
        "--measure",
        action="store_true",
        help="measure every trial's extracted subnet instead of a latency model",
    )
    budget = parser.add_mutually_exclusive_group(required=True)
    budget.add_argument("--budget-ms", type=float, help="latency budget in ms on the target")
    budget.add_argument(
        "--budget-fraction",
        type=float,
        help="latency budget as a share of the teacher's (the max subnet's), measured side by "
        "side in this run: 0.5 is twice as fast",
    )
    parser.add_argument(
        "--also-latency-model",
        help="a second profile (e.g. `ofa profile --phase decode` beside a prefill one): every "
        "subnet must also fit --also-budget-ms / --also-budget-fraction on its target",
    )
    also = parser.add_mutually_exclusive_group()
    also.add_argument("--also-budget-ms", type=float, help="the second budget, in ms")
    also.add_argument(
        "--also-budget-fraction",
        type=float,
        help="the second budget, as a share of the teacher's latency on that target",
    )
    parser.add_argument("--trials", type=int, default=100, help="trials this run adds")
    parser.add_argument("--sampler", default="tpe", help="tpe, nsga2 or random")
    parser.add_argument("--storage", help="RDB URL or journal file (default: OUT/study.journal)")
    parser.add_argument("--study-name", default="ofa-search")
    parser.add_argument("--out", default="runs/search", help="output directory")
    parser.add_argument(
        "--data",
        help="CSV/JSON/parquet with text and label columns, or rotten_tomatoes / imdb "
        "(default: the embedded data the supernet records it was trained on; an error if it "
        "records none); for a CNN supernet: digits, fashion-mnist or FILE.npz (images, labels); "
        "for a decoder: the text file it was trained on (scored on ofa train's held-out "
        "documents, next-token accuracy)",
    )
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--label-column", default="label")
    parser.add_argument(
        "--split",
        default="validation",
        help="split to score accuracy on (CNN images: train, or test for validation/test)",
    )
    parser.add_argument(
        "--examples",
        type=int,
        default=300,
        help="examples (a decoder: token blocks) per evaluation",
    )
    parser.add_argument(
        "--max-length", type=int, default=64, help="tokens per example (a decoder: per block)"
    )
    parser.add_argument(
        "--tokenizer",
        help="tokenizer directory (default: the supernet's, or the embedded MiniLM's)",
    )
    parser.add_argument("--device", help="with --measure (and to check a latency model): cpu/cuda")
    parser.add_argument("--dtype", choices=("float32", "float16", "bfloat16"))
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--seq-len", type=int)
    parser.add_argument("--threads", type=int)
    parser.add_argument(
        "--runtime",
        choices=("eager", "compile", "onnxruntime"),
        help="with --measure (and to check a latency model): what runs the model",
    )
    parser.add_argument(
        "--phase",
        choices=("prefill", "decode"),
        help="with --measure (and to check a latency model): a causal LM's prefill of "
        "--seq-len tokens, or its decode step at that context (a latency model keeps its own)",
    )
    parser.add_argument(
        "--memory-format",
        choices=("contiguous", "channels_last"),
        help="with --measure (and to check a latency model): a CNN's layout while timed",
    )
    parser.add_argument("--seed", type=int, default=0, help="sampler seed (one per worker)")
    parser.add_argument(
        "--no-remeasure",
        action="store_true",
        help="skip re-measuring the Pareto subnets (e.g. on extra workers)",
    )
    busy_flags(parser, settle=60.0)
    parser.set_defaults(func=run)
    return "search", parser


def _target(args: argparse.Namespace, base: dict[str, Any] | None) -> Any:
    from search import LatencyTarget

    flags = {
        "device": args.device,
        "dtype": args.dtype,
        "batch_size": args.batch_size,
        "seq_len": args.seq_len,
        "num_threads": args.threads,
        "runtime": args.runtime,
        "phase": args.phase,
        "memory_format": args.memory_format,
    }
    given = {k: v for k, v in flags.items() if v is not None}
    if base is None:
        return LatencyTarget(**given)
    return LatencyTarget(**{**base, **given}) if given else None


def _latency(args: argparse.Namespace, supernet: Any) -> tuple[Any, Any]:
    from search import LatencyModel, MeasuredLatency

    if args.measure == bool(args.latency_model):
        raise ValueError("give either --latency-model FILE (from `ofa profile`) or --measure")
    if args.measure:
        target = _target(args, None)
        return MeasuredLatency(supernet, target), target
    model = LatencyModel.load(args.latency_model, space=supernet.space)
    target = _target(args, model.target.to_dict())
    model.check(target)
    return model, target


def _also(args: argparse.Namespace, supernet: Any) -> list[Any]:
    from search import Budget, LatencyModel

    given = args.also_budget_ms is not None or args.also_budget_fraction is not None
    if not args.also_latency_model:
        if given:
            raise ValueError(
                "--also-budget-ms / --also-budget-fraction need --also-latency-model FILE (a "
                "second `ofa profile`, e.g. with --phase decode)"
            )
        return []
    if not given:
        raise ValueError(
            "--also-latency-model needs its budget: --also-budget-ms MS or "
            "--also-budget-fraction F"
        )
    model = LatencyModel.load(args.also_latency_model, space=supernet.space)
    return [
        Budget(model, budget_ms=args.also_budget_ms, budget_fraction=args.also_budget_fraction)
    ]


def _report(result: Any) -> None:
    budget = (
        f"{result.budget_ms:.3g} ms"
        if result.budget_fraction is None
        else f"{result.budget_fraction:g} x the teacher's {result.teacher_ms:.3g} ms"
    )
    print(
        f"{result.num_trials} trials ({result.num_feasible} within budget) in study "
        f"{result.study_name!r}; budget {budget}; Pareto front, latency predicted vs measured "
        "(measured side by side with the teacher):"
    )
    print(
        f"  {'trial':>5} {'accuracy':>8} {'predicted':>10} {'measured':>10} "
        f"{'speedup (95% interval)':>24}  fits"
    )
    rows = [*result.pareto]
    if result.also_measured:
        rows += [None, *result.also_measured]
    for point in rows:
        if point is None:
            print("  re-measured after correcting the predictions by the front's ratio:")
            continue
        measured = "-" if point.measured_ms is None else f"{point.measured_ms:.2f} ms"
        print(
            f"  {point.trial_number:>5} {point.accuracy:8.4f} {point.predicted_ms:7.2f} ms "
            f"{measured:>10} {point.describe_speedup():>24}  "
            f"{'yes' if result.fits(point) else 'NO'}"
        )
        for other in point.also:
            print(f"        {other.describe()}")
    for note in result.notes:
        print(note)
    print(result.message)
    if result.out_dir is not None:
        print(f"results in {result.out_dir} (pareto.json, pareto.csv, plots)")


def run(args: argparse.Namespace) -> int:
    import sys

    import optuna

    import search
    from ofa.supernet import load_supernet
    from ofa_app.commands._families import app_family

    try:
        from ofa.evaluation import evaluate
    except ImportError as error:
        raise ValueError(f"ofa.evaluate is unavailable ({error}); update ofa") from None

    if not args.verbose:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    supernet = load_supernet(args.supernet)
    data, calibration = app_family(supernet).search_data(args, supernet)  # before any timing
    latency, target = _latency(args, supernet)
    also = _also(args, supernet)
    result = search.run(
        supernet,
        evaluate=lambda net, subnet: evaluate(net, subnet, data, calibration_data=calibration),
        latency=latency,
        config=search.SearchConfig(
            budget_ms=args.budget_ms,
            budget_fraction=args.budget_fraction,
            trials=args.trials,
            sampler=args.sampler,
            study_name=args.study_name,
            target=target,
            seed=args.seed,
            remeasure=not args.no_remeasure,
            split=args.split,
            settle_s=args.settle_s,
            allow_busy=args.allow_busy,
        ),
        storage=args.storage,
        out_dir=args.out,
        also=also,
    )
    _report(result)
    if result.best is None and args.trials == 0:  # creates the study for workers to share
        print(f"study {result.study_name!r} is ready in {result.storage}: start the workers")
        return 0
    if result.best is None:
        print(f"ofa search: {result.message}", file=sys.stderr)
        return 1
    return 0
