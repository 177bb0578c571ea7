"""``ofa convert``: a transformers checkpoint directory into a saved supernet."""

from __future__ import annotations

import argparse
from typing import Any

from ofa_app._help import HelpFormatter

EXAMPLE = """example:
  ofa convert --model path/to/bert --out runs/supernet --importance taylor --text-csv data.csv
  ofa convert --model runs/teacher/model --out runs/supernet --importance taylor \\
      --text-csv reviews.csv --text-column review --label-column sentiment
  ofa convert --model path/to/bert --out runs/supernet --importance l1
  ofa convert --model path/to/llama --out runs/lm-supernet --importance activation \\
      --text-csv corpus.txt --max-length 256                  # a decoder: token blocks"""


def add_parser(subparsers: Any) -> tuple[str, argparse.ArgumentParser]:
    parser = subparsers.add_parser(
        "convert",
        help="convert a BERT-family or decoder (Llama / Qwen2 / Mistral) checkpoint into a "
        "supernet (reordered by importance)",
        description="Convert a transformers BERT / RoBERTa / ELECTRA checkpoint, or a Llama / "
        "Qwen2 / Mistral causal LM, into a supernet, score its heads, neurons and channels, "
        "reorder them and save it.",
        epilog=EXAMPLE,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--model", required=True, help="transformers checkpoint directory")
    parser.add_argument("--out", required=True, help="directory to write the supernet to")
    parser.add_argument(
        "--space",
        help="search-space JSON file of the model's family (default: derived from the model)",
    )
    parser.add_argument(
        "--importance", choices=("taylor", "activation", "l1", "l2", "none"), default="l1"
    )
    parser.add_argument(
        "--text-csv",
        help="CSV of texts for taylor / activation scores (see --text-column); for a decoder "
        "also .txt (one document a line), .json, .jsonl or .parquet, packed into token blocks",
    )
    parser.add_argument("--text-column", default="text", help="--text-csv column of the texts")
    parser.add_argument(
        "--label-column",
        help="--text-csv column of the labels: taylor scores then measure the task loss "
        "(default: the model's own predictions stand in for labels)",
    )
    parser.add_argument(
        "--batches", type=int, default=8, help="batches for taylor / activation scores"
    )
    parser.add_argument(
        "--max-length",
        type=int,
        default=128,
        help="tokens per --text-csv text (a decoder: per token block, at most its positions)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.set_defaults(func=run)
    return "convert", parser


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ofa_app.commands.train import check_out
    from ofa_app.pipeline import convert_checkpoint

    out = Path(args.out)
    model = Path(args.model)
    if (model / "supernet.json").is_file():
        raise ValueError(
            f"{model} is already a supernet (it holds supernet.json): train, search or export "
            "it as it is, or give --model the transformers checkpoint it was converted from"
        )
    if args.batches < 1:
        raise ValueError(
            f"--batches must be at least 1, got {args.batches}: taylor scores need batches of text"
        )
    if args.max_length < 2:
        raise ValueError(f"--max-length must be at least 2 tokens, got {args.max_length}")
    if args.space and not Path(args.space).is_file():
        raise FileNotFoundError(f"--space file {args.space} does not exist")
    check_out(out)
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"{out} already exists: pass --overwrite or pick another --out")
    if args.label_column and args.importance != "taylor":
        raise ValueError("--label-column is read for --importance taylor only")
    supernet = convert_checkpoint(
        args.model,
        space_file=args.space,
        importance_metric=args.importance,
        text_csv=args.text_csv,
        num_batches=args.batches,
        text_column=args.text_column,
        label_column=args.label_column,
        max_length=args.max_length,
    )
    tokenizer = _tokenizer(args.model)
    # the supernet's own tokenizer, in the same atomic step: train, search and export find it
    supernet.save(out, overwrite=args.overwrite, tokenizer=tokenizer)
    print(f"supernet saved to {out}" + ("" if tokenizer else " (the checkpoint has no tokenizer)"))
    return 0


def _tokenizer(model_dir: str) -> Any:
    """The checkpoint's tokenizer, or None when it has none."""
    from transformers import AutoTokenizer

    from ofa_app.pipeline import find_tokenizer

    if find_tokenizer(model_dir) is None:
        return None
    try:
        return AutoTokenizer.from_pretrained(model_dir)
    except (OSError, ValueError):
        return None
