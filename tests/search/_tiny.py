"""A tiny real BERT supernet and a cheap real accuracy for the search tests (also run by workers)."""

from __future__ import annotations

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
