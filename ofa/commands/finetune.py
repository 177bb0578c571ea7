"""``ofa finetune``: fine-tune a pretrained encoder into the task teacher."""

from __future__ import annotations

import argparse
from typing import Any

from ofa.commands.train import add_data_arguments

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
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", help="pretrained checkpoint (default: the embedded MiniLM)")
    parser.add_argument("--out", required=True, help="run directory")
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--checkpoint-every", type=int, default=100, help="steps (0: at the end)")
    parser.add_argument("--resume", action="store_true", help="continue from --out/checkpoint")
    add_data_arguments(parser)
    parser.set_defaults(func=run)
    return "finetune", parser


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from ofa.commands.train import load_data
    from ofa.embedded import minilm_path
    from ofa.evaluate import accuracy
    from ofa.finetune import FinetuneConfig, finetune
    from ofa.train import parallel

    source = Path(args.model) if args.model else minilm_path()
    if not (source / "config.json").is_file():
        raise FileNotFoundError(f"{source} is not a transformers checkpoint (no config.json)")
    tokenizer = AutoTokenizer.from_pretrained(source)
    train_data, validation = load_data(args, tokenizer)
    num_labels = max(train_data["labels"]) + 1
    model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=num_labels)
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
        print(f"validation accuracy: {accuracy(trained, validation):.4f}")
    return 0
