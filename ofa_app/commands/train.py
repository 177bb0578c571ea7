"""``ofa train``: train a converted supernet by progressive shrinking with distillation.

Launched by ``torchrun --nproc_per_node N``, the same command trains data-parallel.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from ofa_app._help import HelpFormatter

EXAMPLE = r"""example:
  ofa finetune --out runs/teacher                      # MiniLM on Rotten Tomatoes
  ofa convert --model runs/teacher/model --out runs/supernet
  ofa train --supernet runs/supernet --teacher runs/teacher/model --out runs/train --steps 600
  ofa train ... --resume                               # continue exactly after a crash
  ofa train ... --min-width 0.5                        # nothing under half width is deployed
  ofa train ... --width-multipliers 0.5,0.25           # train these uniform widths every step
  ofa train ... --anchors shapes.json                  # and these subnets (a JSON list)
  ofa train ... --flop-budgets 0.5,0.25                # the multipliers or anchors that fit
  torchrun --nproc_per_node 2 -m ofa_app.cli train ...     # data-parallel
  # a CNN supernet (saved by Supernet.save); its teacher exported as a plain CNN directory:
  ofa export --supernet runs/cnn-supernet --subnet max --out runs/cnn-teacher
  ofa train --supernet runs/cnn-supernet --teacher runs/cnn-teacher --data fashion-mnist \
      --out runs/cnn-train --steps 1000 --batch-size 128 --lr 2e-3
  # a decoder supernet (ofa convert of a Llama / Qwen2 / Mistral) on token blocks of a text file:
  ofa train --supernet runs/lm-supernet --teacher path/to/llama --data corpus.txt \
      --max-length 256 --out runs/lm-train --steps 2000 --batch-size 8 --lr 1e-4"""


def parse_fractions(text: str) -> tuple[float, ...]:
    """``"0.5,0.25"`` -> ``(0.5, 0.25)``, each a fraction in (0, 1]."""
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values or not all(0.0 < v <= 1.0 for v in values):
        raise argparse.ArgumentTypeError(
            f"{text!r}: give comma-separated fractions in (0, 1], e.g. 0.5,0.25"
        )
    return values


_DATA_HELP = (
    "'rotten_tomatoes' or 'imdb' (embedded movie reviews) or a .csv/.json/.parquet file; "
    "for a CNN supernet: 'digits', 'fashion-mnist' or a .npz file (images, labels); for a "
    "decoder: a .txt (one document a line) or a .csv/.json/.jsonl/.parquet --text-column, "
    "packed into blocks of --max-length tokens (10%% of the documents held out)"
)


def add_data_arguments(parser: argparse.ArgumentParser, *, default: str | None = None) -> None:
    """Flags naming a text-classification task (shared with ``ofa finetune``).

    ``default`` says in ``--help`` what a missing ``--data`` means for the command.
    """
    group = parser.add_argument_group("data")
    group.add_argument(
        "--data",
        help=_DATA_HELP + (f" (default: {default})" if default else ""),
    )
    group.add_argument("--text-column", default="text", help="column holding the text")
    group.add_argument("--text-pair-column", help="second sentence of a pair task")
    group.add_argument("--label-column", default="label", help="column holding the labels")
    group.add_argument(
        "--max-length",
        type=int,
        default=DEFAULT_MAX_LENGTH,
        help="tokens per example (a decoder: per token block)",
    )
    group.add_argument("--limit", type=int, help="use at most this many rows of each split")
    group.add_argument("--seed", type=int, default=0, help="split, shuffling and sampling seed")
    group.add_argument("--threads", type=int, help="torch CPU threads (1 is best on busy CPUs)")


def _number(value: Any, flag: str, *, kind: type = float) -> Any:
    ok = isinstance(value, (int, float) if kind is float else int) and not isinstance(value, bool)
    if not ok:
        word = "a number" if kind is float else "a whole number"
        raise ValueError(f"{flag} must be {word}, got {value!r}: give one value, not a list")
    return value


def check_out(out: str | Path, flag: str = "--out") -> None:
    """Refuse an output path that is a file or lies where nothing can be written."""
    import os

    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{flag} {path} is a file, not a directory: pick a directory path")
    parent = path
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise ValueError(f"{flag} {path}: {parent} is a file: pick a path under a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {path}: {parent} is not writable: pick a writable place")


def check_run_args(args: argparse.Namespace) -> None:
    """Flags shared by train and finetune, checked before anything is read or written."""
    import math

    lr = _number(args.lr, "--lr")
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"--lr must be a positive finite number, got {lr!r}: give e.g. 5e-5")
    _number(args.batch_size, "--batch-size", kind=int)
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
    if _number(args.checkpoint_every, "--checkpoint-every", kind=int) < 0:
        raise ValueError(
            f"--checkpoint-every must be >= 0 (0: at the end), got {args.checkpoint_every}"
        )
    if args.threads is not None and _number(args.threads, "--threads", kind=int) < 1:
        raise ValueError(f"--threads must be at least 1, got {args.threads}: give e.g. 1 or 4")
    if _number(args.max_length, "--max-length", kind=int) < 2:
        raise ValueError(f"--max-length must be at least 2 tokens, got {args.max_length}")
    if args.limit is not None and _number(args.limit, "--limit", kind=int) < 1:
        raise ValueError(f"--limit must be at least 1 row, got {args.limit}")
    check_out(args.out)


DEFAULT_MAX_LENGTH = 128


def check_max_length(args: argparse.Namespace, config: Any) -> None:
    """``--max-length`` must fit the model's position embeddings; the default is capped to it."""
    positions = getattr(config, "max_position_embeddings", None)
    max_length = args.max_length
    if isinstance(positions, int) and max_length > positions:
        if max_length == DEFAULT_MAX_LENGTH:  # not asked for: a small model reads fewer tokens
            args.max_length = positions
            return
        raise ValueError(
            f"--max-length {max_length} is beyond the model's {positions} positions "
            f"(max_position_embeddings): give --max-length {positions} or less"
        )


def default_data(data: str | None, model_dir: str | Path, what: str) -> str:
    """``--data`` as given, else the embedded data set the model in ``model_dir`` records.

    A model that was not trained on the embedded demo's data (or records nothing) gets no
    silent default: the error names ``--data`` and, where known, the data it was trained on.
    """
    from ofa._io import read_json
    from ofa.data import EMBEDDED_DATA, recorded_data

    if data is not None:
        return data
    config_file = Path(model_dir) / "config.json"
    recorded = (
        recorded_data(read_json(config_file, what="config")) if config_file.is_file() else None
    )
    if recorded in EMBEDDED_DATA:
        return recorded
    seen = (
        f"was trained on {recorded!r}"
        if recorded
        else "records no training data (it was not made from the embedded demo)"
    )
    raise ValueError(
        f"give --data: {what} {model_dir} {seen}, so the embedded reviews would be the wrong "
        "data; pass --data FILE.csv|.json|.parquet (with --text-column / --label-column) or "
        "--data rotten_tomatoes | imdb"
    )


def load_task_data(args: argparse.Namespace) -> Any:
    """The :class:`ofa.data.TaskData` (splits, label names) the data flags describe."""
    import torch

    from ofa.data import EMBEDDED_DATA, load_movie_reviews, load_task

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.data in EMBEDDED_DATA:
        return load_movie_reviews(args.data, seed=args.seed, limit=args.limit)
    return load_task(
        args.data,
        text_column=args.text_column,
        text_pair_column=args.text_pair_column,
        label_column=args.label_column,
        seed=args.seed,
        limit=args.limit,
    )


def load_data(args: argparse.Namespace, tokenizer: Any, task: Any = None) -> tuple[Any, Any]:
    """Tokenized (train, validation-or-None) splits the data flags (or ``task``) describe."""
    from ofa.data import tokenize

    task = load_task_data(args) if task is None else task
    train = tokenize(task["train"], tokenizer, max_length=args.max_length)
    validation = task.splits.get("validation")
    if validation is not None:
        validation = tokenize(validation, tokenizer, max_length=args.max_length)
    return train, validation


def add_parser(subparsers: Any) -> tuple[str, argparse.ArgumentParser]:
    parser = subparsers.add_parser(
        "train",
        help="train a supernet once (progressive shrinking + distillation)",
        description="Train every subnet of a converted supernet at once: progressive shrinking "
        "(width, depth, hidden; larger choices first) with distillation from a fine-tuned "
        "teacher. Writes metrics.jsonl, checkpoint/ and the trained supernet/ to --out.",
        epilog=EXAMPLE,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--supernet", required=True, help="supernet directory (ofa convert)")
    parser.add_argument(
        "--teacher",
        help="fine-tuned teacher checkpoint (ofa finetune); for a CNN an exported CNN directory",
    )
    parser.add_argument(
        "--tokenizer", help="tokenizer directory (default: the teacher's, else the supernet's)"
    )
    parser.add_argument("--out", required=True, help="run directory")
    parser.add_argument("--train-config", help="TrainConfig JSON file (overrides the flags below)")
    parser.add_argument("--steps", type=int, default=600, help="optimizer steps of the schedule")
    parser.add_argument("--no-hidden-phases", action="store_true", help="keep hidden width full")
    parser.add_argument("--sampling", choices=("sandwich", "random"), default="sandwich")
    parser.add_argument("--num-random", type=int, default=1, help="random subnets per step")
    parser.add_argument(
        "--min-width",
        type=float,
        default=0.0,
        help="train only head counts / FFN widths (CNN: channels) of at least this fraction of "
        "the largest, e.g. 0.5 when no subnet under half width will be deployed",
    )
    parser.add_argument(
        "--width-multipliers",
        type=parse_fractions,
        default=(),
        help="comma-separated width fractions (e.g. 0.5,0.25) whose uniform full-depth "
        "subnets are trained every step besides the sandwich, as DynaBERT does",
    )
    parser.add_argument(
        "--later-lr",
        type=float,
        help="peak learning rate of the phases after the first (default: --lr), e.g. a "
        "quarter of it as OFA trains its later stages",
    )
    parser.add_argument(
        "--flop-budgets",
        type=parse_fractions,
        default=(),
        help="comma-separated fractions of the full model's FLOPs you will deploy at (e.g. "
        "0.5,0.25): each gets the width multiplier whose full-depth subnet fits it, or where "
        "none does an anchor (the uniform subnet with the most FLOPs under it), trained every "
        "step besides the sandwich",
    )
    parser.add_argument(
        "--latency-budgets",
        type=parse_fractions,
        default=(),
        help="comma-separated fractions of the full model's latency you will deploy at (e.g. "
        "0.6,0.3), predicted by --latency-model: as --flop-budgets, with the shapes chosen by "
        "predicted latency on the profiled device (latency depends on shapes only, so the "
        "profile of the untrained supernet serves)",
    )
    parser.add_argument(
        "--fill-budgets",
        action="store_true",
        help="with --flop-budgets/--latency-budgets: widen each budget's multiplier subnet to "
        "the uniform full-depth subnet around it with the most FLOPs (latency) that still fits "
        "(heads and FFN each on their own, where the steps between the choices leave room under "
        "the budget), trained as an anchor instead; BERT and decoder supernets (a CNN's uniform "
        "subnets share one width fraction)",
    )
    parser.add_argument(
        "--latency-model",
        help="the latency profile (`ofa profile --out FILE`) that --latency-budgets are of",
    )
    parser.add_argument(
        "--anchors",
        help="JSON file of a subnet or a list of subnets (shapes you will deploy, e.g. under a "
        "budget no width multiplier fits) trained every step of the phases whose part of the "
        "space holds them, besides the sandwich",
    )
    parser.add_argument(
        "--anchors-everywhere",
        action="store_true",
        help="train the anchors (--anchors and those --flop-budgets/--latency-budgets find) "
        "every step of every phase, not only of the phases whose part of the space holds them: "
        "an anchor of reduced depth or hidden width otherwise trains only in the last phases",
    )
    parser.add_argument("--fixed-subnet", help="Subnet JSON file: train only this subnet")
    parser.add_argument("--start-phase", type=int, default=0, help="skip earlier phases")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--grad-accum", type=int, default=1)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--logit-loss", choices=("kl", "mse"), default="kl")
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--alpha", type=float, default=0.5, help="hard-label loss weight")
    parser.add_argument("--hidden-weight", type=float, default=0.0)
    parser.add_argument(
        "--layer-mapping", choices=("evenly_spaced", "dynamic"), default="evenly_spaced"
    )
    parser.add_argument("--teacher-mode", choices=("frozen", "inplace"), default="frozen")
    parser.add_argument("--theseus", action="store_true", help="BERT-of-Theseus for depth")
    parser.add_argument("--checkpoint-every", type=int, default=100, help="steps (0: at the end)")
    parser.add_argument("--resume", action="store_true", help="continue from --out/checkpoint")
    add_data_arguments(
        parser,
        default="the data the supernet records, when that is the embedded demo's; otherwise "
        "--data is required",
    )
    parser.set_defaults(func=run)
    return "train", parser


def train_config(args: argparse.Namespace, supernet: Any) -> Any:
    from ofa.distill import DistillConfig
    from ofa.families import family_named
    from ofa.training import PhaseConfig, TheseusConfig, TrainConfig, budget_shapes
    from ofa_app.commands._families import app_family

    if args.train_config:
        return TrainConfig.from_json(Path(args.train_config).read_text())
    if args.fixed_subnet:
        subnet_type = family_named(supernet.family_name).subnet_type
        subnet = subnet_type.from_json(Path(args.fixed_subnet).read_text())
        phases: tuple[PhaseConfig, ...] = (
            PhaseConfig(name="fixed", steps=args.steps, subnet=subnet),
        )
    else:
        found = []
        if args.flop_budgets:
            found.append(budget_shapes(supernet, args.flop_budgets, fill=args.fill_budgets))
        if args.latency_budgets:
            from search import LatencyModel

            latency = LatencyModel.load(args.latency_model, space=supernet.space)
            found.append(
                budget_shapes(
                    supernet,
                    args.latency_budgets,
                    cost=latency,
                    what="latency",
                    fill=args.fill_budgets,
                )
            )
        phases = app_family(supernet).default_phases(args, supernet)
        phases = _with_shapes(
            phases,
            multipliers=tuple(m for b in found for m in b.width_multipliers),
            anchors=tuple(a for b in found for a in b.anchors),
        )
    if args.anchors:
        anchors = _anchors(args.anchors, family_named(supernet.family_name).subnet_type)
        phases = _with_shapes(phases, anchors=anchors)
    if args.anchors_everywhere:
        phases = tuple(dataclasses.replace(p, anchors_everywhere=True) for p in phases)
    return TrainConfig(
        phases=phases,
        batch_size=args.batch_size,
        grad_accum_steps=args.grad_accum,
        learning_rate=args.lr,
        seed=args.seed,
        start_phase=args.start_phase,
        teacher_mode=args.teacher_mode,
        checkpoint_every_steps=args.checkpoint_every,
        theseus=TheseusConfig() if args.theseus else None,
        distill=DistillConfig(
            logit_loss=args.logit_loss,
            temperature=args.temperature,
            alpha=args.alpha,
            hidden_weight=args.hidden_weight,
            layer_mapping=args.layer_mapping,
        ),
    )


def _with_shapes(
    phases: tuple[Any, ...], *, multipliers: tuple[float, ...] = (), anchors: tuple[Any, ...] = ()
) -> tuple[Any, ...]:
    """``phases`` with ``multipliers`` and ``anchors`` added to each phase's own (each once)."""
    if not multipliers and not anchors:
        return phases
    return tuple(
        dataclasses.replace(
            p,
            width_multipliers=tuple(dict.fromkeys(p.width_multipliers + multipliers)),
            anchors=tuple(dict.fromkeys(p.anchors + anchors)),
        )
        for p in phases
    )


def _anchors(path: str, subnet_type: Any) -> tuple[Any, ...]:
    """The subnets of an ``--anchors`` file: one JSON subnet object or a list of them."""
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"--anchors file {path} is not JSON: {error}") from None
    items = data if isinstance(data, list) else [data]
    if not items or not all(isinstance(item, dict) for item in items):
        raise ValueError(f"--anchors file {path} must hold a subnet object or a list of them")
    return tuple(subnet_type.from_dict(item) for item in items)


def run(args: argparse.Namespace) -> int:
    from ofa.evaluation import evaluate, perplexity
    from ofa.families import family_named
    from ofa.supernet import load_supernet
    from ofa.training import parallel, train_
    from ofa_app.commands._families import app_family

    check_run_args(args)
    if args.steps < 1:
        raise ValueError(f"--steps must be at least 1, got {args.steps}")
    if args.num_random < 0:
        raise ValueError(f"--num-random must be >= 0, got {args.num_random}")
    if not 0.0 <= args.min_width <= 1.0:
        raise ValueError(f"--min-width must be a fraction in [0, 1], got {args.min_width}")
    if args.grad_accum < 1:
        raise ValueError(f"--grad-accum must be at least 1, got {args.grad_accum}")
    for flag, given in (
        ("--flop-budgets", args.flop_budgets),
        ("--latency-budgets", args.latency_budgets),
    ):
        if given and (args.train_config or args.fixed_subnet):
            raise ValueError(
                f"{flag} sets the default schedule's multipliers and anchors; drop it, or "
                "drop --train-config / --fixed-subnet"
            )
    if args.anchors_everywhere and (
        args.train_config or not (args.anchors or args.flop_budgets or args.latency_budgets)
    ):
        raise ValueError(
            "--anchors-everywhere trains the anchors of the default schedule: give --anchors, "
            "--flop-budgets or --latency-budgets (and no --train-config)"
        )
    if args.fill_budgets and not (args.flop_budgets or args.latency_budgets):
        raise ValueError(
            "--fill-budgets widens the shapes that --flop-budgets or --latency-budgets find: "
            "give one of them, or drop --fill-budgets"
        )
    if bool(args.latency_budgets) != bool(args.latency_model):
        raise ValueError(
            "--latency-budgets and --latency-model go together: profile the supernet with "
            "`ofa profile --supernet DIR --out latency.json` and give both"
        )
    for flag, path in (
        ("--train-config", args.train_config),
        ("--fixed-subnet", args.fixed_subnet),
        ("--anchors", args.anchors),
        ("--latency-model", args.latency_model),
    ):
        if path and not Path(path).is_file():
            raise FileNotFoundError(f"{flag} file {path} does not exist")
    supernet = load_supernet(args.supernet)
    family = app_family(supernet)
    teacher, train_data, validation, calibration, label, tokenizer = family.train_inputs(
        args, supernet
    )
    config = train_config(args, supernet)
    out = Path(args.out)
    result = train_(
        supernet,
        teacher=teacher,
        train_data=train_data,
        eval_data=validation,
        config=config,
        output_dir=out,
        resume=args.resume,
    )
    if parallel.rank_and_world()[0] != 0:
        return 0
    # replaces only an earlier run's; the supernet's own tokenizer in the same atomic step
    # (search and export find it there)
    supernet.save(out / "supernet", overwrite=True, tokenizer=tokenizer)
    print(
        f"trained {result.steps} steps, final loss {result.final_loss:.4f}; "
        f"supernet saved to {out / 'supernet'}"
    )
    if validation is not None:
        space = supernet.space
        language_model = family_named(supernet.family_name).language_model
        for name, subnet in (("max", space.max_subnet()), ("min", space.min_subnet())):
            if language_model:  # next-token accuracy and perplexity from one pass
                scores = perplexity(supernet, subnet, validation)
                print(
                    f"{label} accuracy, {name} subnet: {scores.accuracy:.4f} "
                    f"(perplexity {scores.perplexity:.2f} over {scores.tokens} tokens)"
                )
                continue
            acc = evaluate(supernet, subnet, validation, calibration_data=calibration)
            print(f"{label} accuracy, {name} subnet: {acc:.4f}")
            if name == "max":
                _print_majority(acc, validation)
    return 0


def _print_majority(accuracy: float, data: Any) -> None:
    """The majority-class rate of ``data``; a warning when ``accuracy`` is not clearly above it."""
    from ofa.evaluation import accuracy_note, majority_rate

    majority = majority_rate(data)
    print(f"  majority-class rate of that split: {majority:.4f} ({len(data)} examples)")
    note = accuracy_note(accuracy, majority, len(data))
    if note is not None:
        print(f"  warning: {note}")
