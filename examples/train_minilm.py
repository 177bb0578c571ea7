"""The main job, in library calls: fine-tune MiniLM, convert, reorder, train once, evaluate.

    python examples/train_minilm.py --quick     # QUICK RUN: tiny sizes, ~10 min on 2 CPU cores
    python examples/train_minilm.py             # the real run (about an hour on 2 CPU cores)

The quick run only shows that the chain works; its accuracies mean little. The trained supernet
lands in --out/supernet (load it with ``ofa.load_supernet``) for ``ofa search``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import torch  # noqa: E402
from transformers import AutoTokenizer, BertForSequenceClassification  # noqa: E402

import ofa  # noqa: E402
from ofa.data import (  # noqa: E402
    load_movie_reviews,
    pad_collate,  # noqa: E402
    tokenize,
)
from ofa.embedded import minilm_path  # noqa: E402
from ofa.evaluation import accuracy  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, about 10 minutes")
    parser.add_argument("--out", default="runs/train_minilm")
    args = parser.parse_args()
    rows, length, teacher_epochs, steps = (
        (400, 32, 1.0, 12) if args.quick else (3000, 64, 2.0, 600)
    )
    if args.quick:
        print("QUICK RUN: few steps and short sequences; the accuracies below mean little.")
    torch.set_num_threads(1)  # fastest on a shared 2-core machine; raise it on your own
    out = Path(args.out)
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    task = load_movie_reviews(limit=rows)
    train_data = tokenize(task["train"], tokenizer, max_length=length)
    validation = tokenize(task["validation"], tokenizer, max_length=length)

    base = BertForSequenceClassification.from_pretrained(minilm_path(), num_labels=2)
    teacher = ofa.finetune(
        base,
        train_data=train_data,
        output_dir=out / "teacher",
        config=ofa.FinetuneConfig(epochs=teacher_epochs, learning_rate=1e-4),
    )
    print(f"teacher validation accuracy: {accuracy(teacher, validation):.4f}")

    supernet = ofa.convert(teacher)
    batches = [pad_collate(train_data[i : i + 16], 0) for i in range(0, 64, 16)]
    ofa.reorder_(supernet, ofa.importance.score(supernet, batches, metric="taylor"))
    config = ofa.TrainConfig(
        phases=ofa.default_phases(steps),
        batch_size=16,
        learning_rate=1e-4,
        distill=ofa.DistillConfig(temperature=2.0, alpha=0.5),
        checkpoint_every_steps=50,
    )
    ofa.train_(
        supernet, teacher=teacher, train_data=train_data, config=config, output_dir=out / "train"
    )
    supernet.save(out / "supernet")
    space = supernet.space
    for name, subnet in (("max", space.max_subnet()), ("min", space.min_subnet())):
        flops = supernet.flops(subnet, seq_len=length) / supernet.flops(
            space.max_subnet(), seq_len=length
        )
        shared = ofa.evaluate(supernet, subnet, validation)
        print(f"{name} subnet ({100 * flops:.0f}% FLOPs): validation accuracy {shared:.4f}")
    print(f"supernet saved to {out / 'supernet'}")


if __name__ == "__main__":
    main()
