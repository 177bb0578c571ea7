"""Distillation losses against values computed by hand."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from ofa.distill import (
    DistillConfig,
    HiddenAdaptor,
    distillation_loss,
    evenly_spaced_map,
    hidden_loss,
    kl_logit_loss,
    mse_logit_loss,
)


def _softmax(values: list[float]) -> list[float]:
    exps = [math.exp(v) for v in values]
    return [e / sum(exps) for e in exps]


def test_kl_matches_hand_computation_times_t_squared():
    student, teacher, temperature = [1.0, 2.0, 0.5], [0.0, 3.0, 1.0], 2.0
    p = _softmax([v / temperature for v in teacher])
    q = _softmax([v / temperature for v in student])
    expected = temperature**2 * sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
    got = kl_logit_loss(torch.tensor([student]), torch.tensor([teacher]), temperature=temperature)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_kl_averages_over_the_batch_and_is_zero_for_equal_logits():
    logits = torch.tensor([[1.0, -1.0], [0.3, 0.2]])
    assert kl_logit_loss(logits, logits, temperature=3.0).item() == pytest.approx(0.0, abs=1e-6)
    one = kl_logit_loss(logits[:1], torch.tensor([[0.0, 0.0]]))
    two = kl_logit_loss(logits, torch.tensor([[0.0, 0.0], [0.3, 0.2]]))
    assert two.item() == pytest.approx(one.item() / 2, rel=1e-5)


def test_mse_logits_by_hand():
    got = mse_logit_loss(torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 4.0]]))
    assert got.item() == pytest.approx((1 + 4) / 2)


def test_evenly_spaced_map():
    assert evenly_spaced_map(3, 6) == (1, 3, 5)
    assert evenly_spaced_map(2, 4) == (1, 3)
    assert evenly_spaced_map(4, 4) == (0, 1, 2, 3)
    with pytest.raises(ValueError, match="cannot map"):
        evenly_spaced_map(5, 4)


def _states(values: list[float], width: int = 2) -> list[torch.Tensor]:
    return [torch.full((1, 1, width), v) for v in values]


def test_hidden_loss_evenly_spaced_by_hand():
    student = _states([1.0, 2.0])
    teacher = _states([0.0, 0.0, 0.0, 5.0])
    # student 0 -> teacher 1 (0.0): error 1; student 1 -> teacher 3 (5.0): error 9
    assert hidden_loss(student, teacher).item() == pytest.approx((1 + 9) / 2)
    assert hidden_loss(student, teacher, mapping=(0, 0)).item() == pytest.approx((1 + 4) / 2)


def test_hidden_loss_dynamic_takes_the_least_loss_teacher_layer():
    student = _states([1.0, 4.0])
    teacher = _states([0.0, 1.5, 5.0])
    # student 0: min(1, 0.25, 16) = 0.25; student 1: min(16, 6.25, 1) = 1
    got = hidden_loss(student, teacher, mapping="dynamic")
    assert got.item() == pytest.approx((0.25 + 1) / 2)


def test_hidden_loss_masks_padding():
    student = [torch.tensor([[[1.0], [100.0]]])]
    teacher = [torch.zeros(1, 2, 1)]
    got = hidden_loss(student, teacher, attention_mask=torch.tensor([[1, 0]]))
    assert got.item() == pytest.approx(1.0)


def test_adaptor_starts_as_identity_and_serves_narrower_students():
    adaptor = HiddenAdaptor(4, 4)
    x = torch.randn(2, 3, 4)
    torch.testing.assert_close(adaptor(x), x)
    narrow = adaptor(x[..., :2])
    assert narrow.shape == (2, 3, 4)
    torch.testing.assert_close(narrow[..., :2], x[..., :2])
    assert narrow[..., 2:].abs().max().item() == 0
    with pytest.raises(ValueError, match="pass an adaptor"):
        hidden_loss([x[..., :2]], [x])


def test_combined_loss_is_the_weighted_sum():
    torch.manual_seed(0)
    s_logits, t_logits = torch.randn(4, 3), torch.randn(4, 3)
    s_hidden = [torch.randn(4, 5, 8) for _ in range(3)]
    t_hidden = [torch.randn(4, 5, 8) for _ in range(3)]
    labels = torch.tensor([0, 1, 2, 1])
    student = SimpleNamespace(logits=s_logits, hidden_states=s_hidden)
    teacher = SimpleNamespace(logits=t_logits, hidden_states=t_hidden)
    config = DistillConfig(temperature=3.0, alpha=0.3, hidden_weight=0.5)
    loss, parts = distillation_loss(student, teacher, labels, config)
    ce = torch.nn.functional.cross_entropy(s_logits, labels)
    kl = kl_logit_loss(s_logits, t_logits, temperature=3.0)
    hid = hidden_loss(s_hidden[1:], t_hidden[1:])
    expected = 0.3 * ce + 0.7 * kl + 0.5 * hid
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert parts["ce"] == pytest.approx(ce.item(), rel=1e-5)
    assert parts["loss"] == pytest.approx(expected.item(), rel=1e-5)
    mse_config = DistillConfig(logit_loss="mse", alpha=0.0)
    loss, _ = distillation_loss(student, teacher, labels, mse_config)
    assert loss.item() == pytest.approx(mse_logit_loss(s_logits, t_logits).item(), rel=1e-5)


def test_bad_configs_and_inputs():
    with pytest.raises(ValueError, match="alpha"):
        DistillConfig(alpha=1.5)
    with pytest.raises(ValueError, match="temperature"):
        DistillConfig(temperature=0)
    with pytest.raises(ValueError, match="logit_loss"):
        DistillConfig(logit_loss="l1")  # type: ignore[arg-type]
    student = SimpleNamespace(logits=torch.randn(2, 2), hidden_states=None)
    with pytest.raises(ValueError, match="alpha=1"):
        distillation_loss(student, None, torch.tensor([0, 1]), DistillConfig(alpha=0.5))
    with pytest.raises(ValueError, match="needs labels"):
        distillation_loss(student, student, None, DistillConfig(alpha=0.5))


def test_config_json_round_trip():
    config = DistillConfig(logit_loss="mse", temperature=2.0, alpha=0.1, layer_mapping="dynamic")
    assert DistillConfig.from_json(config.to_json()) == config
    with pytest.raises(ValueError, match="unknown"):
        DistillConfig.from_dict({"beta": 1})
