"""Accuracy of subnets with the shared weights equals that of the extracted models."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import ofa
from ofa.evaluation import accuracy

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_train import tiny_bert, toy_data  # noqa: E402


def test_evaluate_matches_extracted_models_and_restores_the_subnet():
    torch.set_num_threads(1)
    supernet = ofa.convert(tiny_bert(dropout=0.0))
    data = toy_data(40)
    space = supernet.space
    active = space.uniform(depth=3, num_heads=2, ffn_dim=32, hidden_size=24)
    supernet.set_subnet(active)
    for subnet in (space.max_subnet(), space.min_subnet()):
        shared = ofa.evaluate(supernet, subnet, data, batch_size=7)
        with torch.no_grad():
            logits = (
                supernet.extract(subnet)
                .eval()(**{k: torch.tensor(v) for k, v in _padded(data).items() if k != "labels"})
                .logits
            )
        expected = (logits.argmax(-1) == torch.tensor(data["labels"])).float().mean().item()
        assert shared == pytest.approx(expected)
    assert supernet.active_subnet == active
    assert accuracy(tiny_bert(), data) == pytest.approx(
        ofa.evaluate(ofa.convert(tiny_bert()), space.max_subnet(), data)
    )


def _padded(data):
    length = max(len(r) for r in data["input_ids"])
    ids = [r + [0] * (length - len(r)) for r in data["input_ids"]]
    mask = [r + [0] * (length - len(r)) for r in data["attention_mask"]]
    return {"input_ids": ids, "attention_mask": mask}


def test_evaluate_errors():
    supernet = ofa.convert(tiny_bert())
    with pytest.raises(ValueError, match="tokenized"):
        ofa.evaluate(supernet, supernet.space.max_subnet(), toy_data(8).remove_columns("labels"))
    with pytest.raises(TypeError, match="ofa.Supernet"):
        ofa.evaluate(tiny_bert(), supernet.space.max_subnet(), toy_data(8))
    with pytest.raises(ValueError, match="outside the search space"):
        bad = ofa.Subnet(layers=(0,), num_heads=(4,), ffn_dims=(64,), hidden_size=32)
        ofa.evaluate(supernet, bad, toy_data(8))
