"""Importance is pure; reordering is a pure permutation; taylor scores are not noise."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import ofa
from tests.tiny import main_output, make_inputs, make_model


def _batches(n=2, seed=0):
    out = []
    for i in range(n):
        batch = make_inputs(4, 10, seed=seed + i)
        batch["labels"] = torch.arange(4) % 3
        out.append(batch)
    return out


@pytest.mark.parametrize("metric", ["taylor", "l1", "l2"])
def test_score_changes_nothing(metric):
    supernet = ofa.convert(make_model("bert-cls"))
    supernet.train()
    supernet.set_subnet(supernet.space.min_subnet())
    frozen = supernet.model.bert.embeddings.word_embeddings.weight
    frozen.requires_grad_(False)
    before = {k: v.clone() for k, v in supernet.state_dict().items()}
    scores = ofa.importance.score(supernet, _batches(), metric=metric)
    assert supernet.training and supernet.active_subnet == supernet.space.min_subnet()
    assert not frozen.requires_grad
    assert all(p.grad is None for p in supernet.parameters())
    for key, value in supernet.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert scores["bert.encoder.layer.0.heads"].shape == (4,)
    assert scores["bert.encoder.layer.3.ffn"].shape == (64,)
    assert scores["hidden"].shape == (32,)
    assert all((s >= 0).all() and s.sum() > 0 for s in scores.values())


def test_l1_and_l2_are_weight_norms_of_each_unit():
    supernet = ofa.convert(make_model("bert-cls"))
    l1 = ofa.importance.score(supernet, metric="l1")
    l2 = ofa.importance.score(supernet, metric="l2")
    layer = supernet.model.bert.encoder.layer[1]
    neuron = 5
    parts = [
        layer.intermediate.dense.weight[neuron],
        layer.intermediate.dense.bias[neuron : neuron + 1],
        layer.output.dense.weight[:, neuron],
    ]
    expected_l1 = sum(p.abs().sum() for p in parts).item()
    expected_l2 = sum(p.pow(2).sum() for p in parts).sqrt().item()
    assert l1["bert.encoder.layer.1.ffn"][neuron].item() == pytest.approx(expected_l1, rel=1e-5)
    assert l2["bert.encoder.layer.1.ffn"][neuron].item() == pytest.approx(expected_l2, rel=1e-5)
    head = 2
    rows = slice(head * 8, head * 8 + 8)
    q = layer.attention.self.query
    head_parts = [getattr(layer.attention.self, n).weight[rows] for n in ("query", "key", "value")]
    head_parts += [getattr(layer.attention.self, n).bias[rows] for n in ("query", "key", "value")]
    head_parts.append(layer.attention.output.dense.weight[:, rows])
    assert q is layer.attention.self.query
    expected = sum(p.abs().sum() for p in head_parts).item()
    assert l1["bert.encoder.layer.1.heads"][head].item() == pytest.approx(expected, rel=1e-5)


def test_taylor_is_weight_times_gradient():
    supernet = ofa.convert(make_model("bert-cls"))
    batches = _batches(1)
    scores = ofa.importance.score(supernet, batches, metric="taylor")
    model = supernet.model
    loss = model(**batches[0]).loss
    inter = model.bert.encoder.layer[0].intermediate.dense
    out = model.bert.encoder.layer[0].output.dense
    grads = torch.autograd.grad(loss, [inter.weight, inter.bias, out.weight])
    expected = (
        (inter.weight * grads[0]).abs().sum(1)
        + (inter.bias * grads[1]).abs()
        + (out.weight * grads[2]).abs().sum(0)
    )
    torch.testing.assert_close(
        scores["bert.encoder.layer.0.ffn"].float(), expected.detach(), rtol=1e-4, atol=1e-9
    )


@pytest.mark.parametrize("kind", ["bert-cls", "roberta-cls", "electra-project", "bert"])
@pytest.mark.parametrize("metric", ["taylor", "l2"])
def test_reorder_keeps_the_full_model(kind, metric):
    model = make_model(kind, attn="sdpa")
    supernet = ofa.convert(model).eval()
    inputs = make_inputs()
    scores = ofa.importance.score(
        supernet, _batches() if kind != "bert" else [make_inputs(seed=5)], metric=metric
    )
    perms = ofa.reorder_(supernet, scores)
    assert any(not torch.equal(p, torch.arange(len(p))) for p in perms.values())
    assert ("hidden" in perms) == (kind != "bert")  # a bare encoder's outputs keep their order
    with torch.no_grad():
        diff = (main_output(supernet(**inputs)) - main_output(model(**inputs))).abs().max()
    assert diff.item() <= 1e-5


def test_reorder_puts_the_best_units_first():
    supernet = ofa.convert(make_model("bert-cls"))
    scores = ofa.importance.score(supernet, metric="l1")
    ofa.reorder_(supernet, scores)
    after = ofa.importance.score(supernet, metric="l1")
    for name, values in after.items():
        assert torch.all(values[:-1] >= values[1:] - 1e-6), name
        torch.testing.assert_close(
            values.sort(descending=True).values, scores[name].sort(descending=True).values
        )


def test_bad_scores_are_refused():
    supernet = ofa.convert(make_model("bert-cls"))
    with pytest.raises(ValueError, match="unknown unit groups"):
        ofa.reorder_(supernet, {"nope": torch.zeros(3)})
    with pytest.raises(ValueError, match="expected \\(4,\\)"):
        ofa.reorder_(supernet, {"bert.encoder.layer.0.heads": torch.zeros(5)})
    with pytest.raises(ValueError, match="unknown importance metric"):
        ofa.importance.score(supernet, metric="fisher")
    with pytest.raises(ValueError, match="needs batches"):
        ofa.importance.score(supernet, metric="taylor")
    with pytest.raises(ValueError, match="no batches"):
        ofa.importance.score(supernet, [], metric="taylor")


def _counting_task(n, generator):
    """Label = how many marker tokens (id 2) the sequence holds, 0..3: needs heads and FFN."""
    ids = torch.randint(10, 100, (n, 12), generator=generator)
    labels = torch.randint(0, 4, (n,), generator=generator)
    for row in range(n):
        positions = torch.randperm(11, generator=generator)[: int(labels[row])] + 1
        ids[row, positions] = 2
    return ids, labels


def test_taylor_top_half_beats_bottom_half():
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    model = make_model("bert-cls", num_hidden_layers=2, num_labels=4)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(150):
        ids, labels = _counting_task(32, generator)
        loss = model(input_ids=ids, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    ids, labels = _counting_task(256, generator)
    batches = [
        {"input_ids": ids[i : i + 64], "labels": labels[i : i + 64]} for i in range(0, 256, 64)
    ]
    test_ids, test_labels = _counting_task(512, torch.Generator().manual_seed(99))
    with torch.no_grad():
        full = F.cross_entropy(model(input_ids=test_ids).logits, test_labels).item()
    losses = {}
    for name, sign in (("top", 1.0), ("bottom", -1.0)):
        supernet = ofa.convert(model).eval()
        scores = ofa.importance.score(supernet, batches, metric="taylor")
        ofa.reorder_(supernet, {k: sign * v for k, v in scores.items() if k != "hidden"})
        half = ofa.Subnet(layers=(0, 1), num_heads=(2, 2), ffn_dims=(32, 32), hidden_size=32)
        supernet.set_subnet(half)
        with torch.no_grad():
            logits = supernet(input_ids=test_ids).logits
        losses[name] = F.cross_entropy(logits, test_labels).item()
    assert full < 0.2, "the tiny model did not learn the task"
    assert losses["top"] < losses["bottom"] / 2, losses
