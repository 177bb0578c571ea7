"""The CLI's BERT-family adapter: tokenized text for training and search, the default schedule
(hidden-state phases, width multipliers), the tokenizer and 2:4 options of an export."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from ofa_app.commands._families import refuse_foreign_flags, register_family
from ofa_app.commands.train import check_max_length, default_data, load_data, load_task_data

__all__ = ["BertApp"]

logger = logging.getLogger(__name__)


class BertApp:
    name = "bert"
    title = "BERT-family"
    flags = {
        "train": (
            ("tokenizer", "--tokenizer"),
            ("text_pair_column", "--text-pair-column"),
            ("no_hidden_phases", "--no-hidden-phases"),
            ("theseus", "--theseus"),
            ("hidden_weight", "--hidden-weight"),
            ("width_multipliers", "--width-multipliers"),
            ("later_lr", "--later-lr"),
        ),
        "export": (
            ("tokenizer", "--tokenizer"),
            ("sparsity", "--sparsity 2:4"),
            ("sparse_layers", "--sparse-layers"),
            ("finetune_steps", "--finetune-steps"),
            ("text_csv", "--text-csv"),
            ("seq_len", "--seq-len"),
        ),
    }
    hints: dict[str, str] = {}

    def train_inputs(self, args: argparse.Namespace, supernet: Any) -> tuple[Any, ...]:
        refuse_foreign_flags(args, "train", self)
        return _bert_inputs(args, supernet)

    def default_phases(self, args: argparse.Namespace, supernet: Any) -> tuple[Any, ...]:
        return transformer_phases(args)

    def search_data(self, args: argparse.Namespace, supernet: Any) -> tuple[Any, None]:
        if not hasattr(supernet.model, "classifier"):
            raise ValueError(
                f"{args.supernet} is a bare encoder: accuracy needs a sequence-classification "
                "head; convert a fine-tuned *ForSequenceClassification model (see `ofa finetune`)"
            )
        return _evaluation_data(args), None

    def export_options(
        self, args: argparse.Namespace, supernet: Any
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        import export

        refuse_foreign_flags(args, "export", self)
        tokenizer = _export_tokenizer(args)
        sparsity = None
        if args.sparsity == "2:4":
            sparsity = export.SparsityConfig(
                layers=tuple(args.sparse_layers) if args.sparse_layers else None,
                finetune_steps=args.finetune_steps,
                learning_rate=args.learning_rate,
            )
        settings = {"sparsity": sparsity, "seq_len": args.seq_len}
        objects = {
            "tokenizer": tokenizer,
            "finetune_data": _finetune_batches(args, tokenizer) if sparsity else None,
        }
        return settings, objects


def transformer_phases(args: argparse.Namespace) -> tuple[Any, ...]:
    """``ofa.default_phases`` from the train flags: the schedule of BERT-family and decoder
    supernets alike (width, depth, hidden width; multipliers and a later rate)."""
    from ofa.training import default_phases

    return default_phases(
        args.steps,
        hidden=not args.no_hidden_phases,
        sampling=args.sampling,
        num_random=args.num_random,
        min_width=args.min_width,
        width_multipliers=args.width_multipliers,
        later_learning_rate=args.later_lr,
    )


def _search_tokenizer(args: argparse.Namespace) -> Any:

    from transformers import AutoTokenizer

    from ofa.embedded import minilm_path

    for path in (args.tokenizer, args.supernet):
        if path and (Path(path) / "tokenizer_config.json").is_file():
            return AutoTokenizer.from_pretrained(path)
    if args.tokenizer:
        raise FileNotFoundError(f"{args.tokenizer} holds no tokenizer (no tokenizer_config.json)")
    return AutoTokenizer.from_pretrained(minilm_path())


def _evaluation_data(args: argparse.Namespace) -> Any:
    """A few hundred tokenized examples, tokenized once and reused by every trial.

    Without ``--data`` only a supernet that records the embedded demo's data (``ofa finetune``
    / ``ofa train`` write it into the model config) is scored on it; any other gets an error
    naming ``--data`` instead of a silent run on the embedded reviews.
    """
    from ofa.data import EMBEDDED_DATA, load_movie_reviews, load_task, tokenize
    from ofa_app.commands.train import default_data

    if args.examples < 1:
        raise ValueError(f"--examples must be positive, got {args.examples}")
    data = default_data(args.data, args.supernet, "the supernet")
    if data in EMBEDDED_DATA:
        task = load_movie_reviews(data)
    else:
        task = load_task(data, text_column=args.text_column, label_column=args.label_column)
    rows = task[args.split]
    rows = rows.select(range(min(args.examples, len(rows))))
    return tokenize(rows, _search_tokenizer(args), max_length=args.max_length)


def _export_tokenizer(args: argparse.Namespace) -> Any:
    """``--tokenizer``, else the supernet's own; None (with a warning) when there is neither."""
    from transformers import AutoTokenizer

    from ofa_app.pipeline import find_tokenizer

    if args.tokenizer:
        if find_tokenizer(args.tokenizer) is None:
            raise FileNotFoundError(
                f"--tokenizer {args.tokenizer} holds no tokenizer (no tokenizer_config.json)"
            )
        return AutoTokenizer.from_pretrained(args.tokenizer)
    own = find_tokenizer(args.supernet)
    if own is not None:
        logger.info("shipping the supernet's own tokenizer from %s", own)
        return AutoTokenizer.from_pretrained(own)
    message = (
        f"{args.supernet} holds no tokenizer, so the checkpoint {args.out} will have none: "
        "pass --tokenizer DIR (e.g. the teacher's) to ship one"
    )
    logger.warning(message)  # the CLI shows it as one line on stderr
    return None


def _finetune_batches(args: argparse.Namespace, tokenizer: Any) -> list[dict[str, Any]] | None:
    if not args.finetune_steps:
        return None
    if args.text_csv is None or tokenizer is None:
        raise ValueError("--finetune-steps needs --text-csv and --tokenizer")
    from ofa_app.pipeline import read_texts, text_batches

    texts = read_texts(
        args.text_csv, limit=args.finetune_steps * args.batch_size, text_column=args.text_column
    )
    return list(
        text_batches(texts, tokenizer, batch_size=args.batch_size, max_length=args.max_length)
    )


def _bert_inputs(args: argparse.Namespace, supernet: Any) -> tuple[Any, Any, Any, None, str, Any]:
    """Teacher, tokenized train / validation splits, no calibration, the report's label and the
    tokenizer; the data's name and label names go into the supernet's config."""
    from transformers import AutoTokenizer

    from ofa.data import record_data, set_label_names
    from ofa_app.pipeline import find_tokenizer, load_pretrained

    args.data = default_data(args.data, args.supernet, "the supernet")
    check_max_length(args, supernet.model.config)
    tokenizer_dir = args.tokenizer or find_tokenizer(args.teacher, args.supernet)
    if tokenizer_dir is None:
        raise ValueError(
            "give --tokenizer (or --teacher, whose tokenizer is used): neither the teacher nor "
            "the supernet directory holds one"
        )
    teacher = load_pretrained(args.teacher)[0] if args.teacher else None
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    task = load_task_data(args)
    head = getattr(supernet.model.config, "num_labels", None)
    if isinstance(head, int) and head != task.num_labels:
        raise ValueError(
            f"the data has {task.num_labels} labels {list(task.label_names)}, the supernet's "
            f"head {head}: give the data its teacher was fine-tuned on (or its label column)"
        )
    set_label_names(supernet.model.config, task.label_names)
    record_data(supernet.model.config, args.data)
    train_data, validation = load_data(args, tokenizer, task)
    return teacher, train_data, validation, None, "validation", tokenizer


register_family(BertApp())
