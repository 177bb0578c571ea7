"""``ofa finetune``: fine-tune a pretrained encoder into the task teacher."""

from __future__ import annotations

import argparse
from typing import Any

from ofa_app._help import HelpFormatter
from ofa_app.commands.train import add_data_arguments

EXAMPLE = """example:
  ofa finetune --out runs/teacher                  # embedded MiniLM on Rotten Tomatoes
  ofa finetune --model path/to/bert --data reviews.csv --text-column review \\
      --label-column sentiment --epochs 3 --out runs/teacher"""


def add_parser(subparsers: Any) -> tuple[str, argparse.ArgumentParser]:
    parser = subparsers.add_parser(
        "finetune",
        help="fine-tune a pretrained encoder into the teacher",
        description="Fine-tune a BERT-family encoder for text classification on hard labels. "
        "Writes the model and tokenizer to --out/model, plus metrics.jsonl and checkpoint/.",
        epilog=EXAMPLE,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--model", help="pretrained checkpoint (default: the embedded MiniLM)")
    parser.add_argument("--out", required=True, help="run directory")
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--checkpoint-every", type=int, default=100, help="steps (0: at the end)")
    parser.add_argument("--resume", action="store_true", help="continue from --out/checkpoint")
    add_data_arguments(parser, default="rotten_tomatoes")
    parser.set_defaults(func=run)
    return "finetune", parser


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from ofa.data import record_data, set_label_names
    from ofa.embedded import minilm_path
    from ofa.evaluation import accuracy, accuracy_note, majority_rate
    from ofa.finetuning import FinetuneConfig, finetune
    from ofa.training import parallel
    from ofa_app.commands.train import check_max_length, check_run_args, load_data, load_task_data

    check_run_args(args)
    if not (isinstance(args.epochs, (int, float)) and 0 < args.epochs < float("inf")):
        raise ValueError(f"--epochs must be a positive number, got {args.epochs!r}")
    source = Path(args.model) if args.model else minilm_path()
    if not (source / "config.json").is_file():
        raise FileNotFoundError(f"{source} is not a transformers checkpoint (no config.json)")
    from transformers import AutoConfig

    check_max_length(args, AutoConfig.from_pretrained(source))
    args.data = args.data or "rotten_tomatoes"
    tokenizer = AutoTokenizer.from_pretrained(source)
    task = load_task_data(args)
    train_data, validation = load_data(args, tokenizer, task)
    num_labels = max(task.num_labels, max(train_data["labels"]) + 1)
    model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=num_labels)
    set_label_names(model.config, task.label_names, replace=True)  # string labels keep their names
    record_data(model.config, args.data)  # so train / search know which data this head learned
    config = FinetuneConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        seed=args.seed,
        checkpoint_every_steps=args.checkpoint_every,
    )
    out = Path(args.out)
    trained = finetune(
        model, train_data=train_data, config=config, output_dir=out, resume=args.resume
    )
    if parallel.rank_and_world()[0] != 0:
        return 0
    trained.save_pretrained(out / "model")
    tokenizer.save_pretrained(out / "model")
    print(f"teacher saved to {out / 'model'}")
    if validation is not None:
        score, majority = accuracy(trained, validation), majority_rate(validation)
        print(
            f"validation accuracy: {score:.4f} (majority-class rate {majority:.4f}, "
            f"{len(validation)} examples)"
        )
        note = accuracy_note(score, majority, len(validation))
        if note is not None:
            print(f"warning: {note}")
    return 0
