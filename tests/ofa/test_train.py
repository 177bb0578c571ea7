"""Supernet training on a tiny BERT: phases, sampling, losses, checkpoints and exact resume."""

from __future__ import annotations

import json

import datasets
import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

import ofa
from ofa.distill import DistillConfig
from ofa.evaluation import accuracy
from ofa.finetuning import FinetuneConfig, finetune
from ofa.space import Subnet
from ofa.training import (
    PhaseConfig,
    TheseusConfig,
    TrainConfig,
    default_phases,
    plan_phases,
    train_,
)
from ofa.training.loop import _subnets
from ofa.training.theseus import theseus_groups


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Two threads on a shared 2-core machine run these tiny models 10x slower than one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_bert(seed: int = 0, dropout: float = 0.1) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=50,
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=32,
        num_labels=2,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    return BertForSequenceClassification(config).eval()


def toy_data(rows: int = 48, seed: int = 0) -> datasets.Dataset:
    """Label 1 when token 7 occurs: learnable by a tiny model in a few steps."""
    generator = torch.Generator().manual_seed(seed)
    ids, masks, labels = [], [], []
    for i in range(rows):
        length = int(torch.randint(4, 12, (1,), generator=generator))
        tokens = torch.randint(10, 50, (length,), generator=generator).tolist()
        if i % 2:
            tokens[int(torch.randint(1, length, (1,), generator=generator))] = 7
        ids.append([2, *tokens])
        masks.append([1] * (length + 1))
        labels.append(i % 2)
    return datasets.Dataset.from_dict(
        {"input_ids": ids, "attention_mask": masks, "labels": labels}
    )


def test_configs_round_trip_through_json():
    subnet = Subnet(layers=(1, 3), num_heads=(2, 4), ffn_dims=(32, 64), hidden_size=32)
    config = TrainConfig(
        phases=(*default_phases(12), PhaseConfig(name="fixed", epochs=0.5, subnet=subnet)),
        distill=DistillConfig(logit_loss="mse", alpha=0.2),
        theseus=TheseusConfig(start=0.3),
        batch_size=4,
    )
    again = TrainConfig.from_json(config.to_json())
    assert again == config and again.phases[-1].subnet == subnet
    inplace = TrainConfig(
        phases=default_phases(6),
        teacher_mode="inplace",
        distill=DistillConfig(hidden_weight=1.0, layer_mapping="dynamic"),
    )
    assert TrainConfig.from_dict(json.loads(inplace.to_json())) == inplace
    assert json.loads(config.to_json())["version"] == 1
    assert FinetuneConfig.from_json(FinetuneConfig(epochs=3).to_json()) == FinetuneConfig(epochs=3)
    with pytest.raises(ValueError, match="unknown TrainConfig fields"):
        TrainConfig.from_dict({**config.to_dict(), "lr": 1})


def test_phase_spaces_and_schedule():
    space = ofa.convert(tiny_bert()).space
    phases = default_phases(12)
    assert [p.name for p in phases] == [
        "width-large",
        "width-all",
        "depth-large",
        "depth-all",
        "hidden-large",
        "hidden-all",
    ]
    first = phases[0].space_for(space)
    assert first.num_heads == space.num_heads[2:] and first.ffn_dims == space.ffn_dims[2:]
    assert first.depths == (4,) and first.hidden_sizes == (32,)
    assert phases[3].space_for(space).depths == space.depths
    assert phases[-1].space_for(space) == space
    assert len(default_phases(8, hidden=False)) == 4
    # OFA-style: the later dimensions at a lower peak rate, the width phases at the run's
    slower = default_phases(12, learning_rate=4e-5, later_learning_rate=1e-5)
    assert [p.learning_rate for p in slower] == [4e-5, 4e-5, 1e-5, 1e-5, 1e-5, 1e-5]
    epochs = TrainConfig(
        phases=(PhaseConfig(name="a", epochs=1.5), PhaseConfig(name="b", steps=2))
    )
    plans = plan_phases(epochs, steps_per_epoch=10)
    assert [(p.start, p.end) for p in plans] == [(0, 15), (15, 17)]
    skipped = TrainConfig(phases=epochs.phases, start_phase=1)
    assert [(p.phase.name, p.start) for p in plan_phases(skipped, steps_per_epoch=10)] == [
        ("b", 0)
    ]


def test_sandwich_includes_max_and_min_and_random_stays_inside_the_phase():
    supernet = ofa.convert(tiny_bert())
    generator = torch.Generator().manual_seed(0)
    phase = PhaseConfig(name="w", steps=1, num_heads="large", ffn_dims="all", num_random=3)
    space = phase.space_for(supernet.space)
    for _ in range(5):
        drawn = _subnets(phase, supernet, generator)
        assert drawn[0] == space.max_subnet() == supernet.space.max_subnet()
        assert drawn[1] == space.min_subnet() and len(drawn) == 5
        assert all(space.contains(s) and min(s.num_heads) >= 3 for s in drawn)
    random_phase = PhaseConfig(name="r", steps=1, sampling="random", num_random=2, depths="all")
    assert len(_subnets(random_phase, supernet, generator)) == 2


def test_min_width_bounds_the_phase_and_width_multipliers_train_uniform_widths(tmp_path):
    supernet = ofa.convert(tiny_bert())  # 4 heads of 8, FFN 64: choices 1-4 heads, 16-64 FFN
    space = supernet.space
    assert space.num_heads == (1, 2, 3, 4) and space.ffn_dims == (16, 32, 48, 64)
    bounded = PhaseConfig(name="w", steps=1, num_heads="all", ffn_dims="all", min_width=0.5)
    part = bounded.space_for(space)
    assert part.num_heads == (2, 3, 4) and part.ffn_dims == (32, 48, 64)
    generator = torch.Generator().manual_seed(0)
    for _ in range(5):
        drawn = _subnets(bounded, supernet, generator)
        assert drawn[1] == space.uniform(depth=4, num_heads=2, ffn_dim=32, hidden_size=32)
        assert all(min(s.num_heads) >= 2 and min(s.ffn_dims) >= 32 for s in drawn)
    # "large" is bounded too, and a bound above every choice keeps the largest
    large = PhaseConfig(name="l", steps=1, num_heads="large", min_width=0.8).space_for(space)
    assert large.num_heads == (4,)
    # the multipliers' uniform subnets come after max and min, once each, at full depth
    phase = PhaseConfig(
        name="d", steps=1, num_heads="all", ffn_dims="all", depths="all",
        width_multipliers=(0.5, 0.75, 0.5), num_random=2,
    )  # fmt: skip
    drawn = _subnets(phase, supernet, generator)
    assert drawn[:4] == [
        space.max_subnet(),
        phase.space_for(space).min_subnet(),  # 2 layers, full hidden width
        space.uniform(depth=4, num_heads=2, ffn_dim=32, hidden_size=32),
        space.uniform(depth=4, num_heads=3, ffn_dim=48, hidden_size=32),
    ]
    assert len(drawn) == 6
    # a multiplier equal to the min is not trained twice; random sampling gets them as well
    both = PhaseConfig(name="b", steps=1, num_heads="all", ffn_dims="all", min_width=0.5,
                       width_multipliers=(0.5,))  # fmt: skip
    assert len(_subnets(both, supernet, generator)) == 3
    alone = PhaseConfig(name="r", steps=1, sampling="random", width_multipliers=(0.25,))
    assert _subnets(alone, supernet, generator)[0] == space.max_subnet()  # widths not elastic
    assert all(p.min_width == 0.5 for p in default_phases(6, min_width=0.5))
    config = TrainConfig(phases=default_phases(4, hidden=False, width_multipliers=(0.5,)))
    assert TrainConfig.from_json(config.to_json()) == config
    assert config.phases[0].width_multipliers == (0.5,)
    # trained: one loss per subnet, the multiplier subnets included
    result = train_(
        supernet,
        teacher=tiny_bert(seed=1),
        train_data=toy_data(),
        config=_config(
            phases=(
                PhaseConfig(
                    name="width",
                    steps=2,
                    num_heads="all",
                    ffn_dims="all",
                    width_multipliers=(0.5,),
                ),
                PhaseConfig(
                    name="depth",
                    steps=2,
                    num_heads="all",
                    ffn_dims="all",
                    depths="all",
                    width_multipliers=(0.5,),
                ),
            )
        ),
        output_dir=tmp_path,
        progress=False,
    )
    assert [r["subnets"] for r in _rows(result.metrics_path)] == [4, 4, 4, 4]
    for bad in (dict(min_width=1.5), dict(width_multipliers=(0.0,)), dict(min_width=-0.1)):
        with pytest.raises(ValueError, match="fraction"):
            PhaseConfig(name="x", steps=1, **bad)


def _config(**overrides) -> TrainConfig:
    base = dict(
        phases=(
            PhaseConfig(name="width", steps=3, num_heads="all", ffn_dims="all"),
            PhaseConfig(name="depth", steps=3, num_heads="all", ffn_dims="all", depths="all"),
        ),
        batch_size=8,
        learning_rate=1e-3,
        warmup_fraction=0.5,
        distill=DistillConfig(temperature=2.0, alpha=0.5, hidden_weight=0.5),
    )
    return TrainConfig(**{**base, **overrides})


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _objective(supernet, teacher, data) -> float:
    """What training minimises (alpha 0.5: half CE, half KL to the teacher at T=2), over the
    max and the min subnet and every training row, in eval mode."""
    total = 0.0
    supernet.eval()
    with torch.no_grad():
        for subnet in (supernet.space.max_subnet(), supernet.space.min_subnet()):
            for row, label in zip(data["input_ids"], data["labels"]):
                ids = torch.tensor([row])
                mask = torch.ones_like(ids)
                with supernet.using(subnet):
                    student = supernet(input_ids=ids, attention_mask=mask).logits
                target = teacher(input_ids=ids, attention_mask=mask).logits
                ce = torch.nn.functional.cross_entropy(student, torch.tensor([label]))
                kl = 4 * torch.nn.functional.kl_div(
                    torch.log_softmax(student / 2, -1),
                    torch.softmax(target / 2, -1),
                    reduction="batchmean",
                )
                total += float(0.5 * ce + 0.5 * kl)
    return total / (2 * len(data))


def test_phases_switch_and_training_lowers_the_loss(tmp_path):
    teacher = tiny_bert(seed=1)
    supernet = ofa.convert(tiny_bert())
    before = _objective(supernet, teacher, toy_data())
    result = train_(
        supernet,
        teacher=teacher,
        train_data=toy_data(),
        config=_config(),
        output_dir=tmp_path,
        progress=False,
    )
    rows = _rows(result.metrics_path)
    assert [r["phase"] for r in rows] == ["width"] * 3 + ["depth"] * 3
    assert all(r["subnets"] == 3 and {"ce", "logit", "hidden", "loss"} <= set(r) for r in rows)
    assert [r["lr"] for r in rows[:3]] == pytest.approx([5e-4, 1e-3, 5e-4])
    assert (tmp_path / "checkpoint" / "model.safetensors").exists() and result.steps == 6
    assert supernet.active_subnet == supernet.space.max_subnet()
    # six small steps (peak rate 1e-3 after warmup): lower, if only a little, and deterministic
    assert _objective(supernet, teacher, toy_data()) < before


def test_resume_continues_exactly(tmp_path):
    data = toy_data()
    config = _config(checkpoint_every_steps=2)
    whole = ofa.convert(tiny_bert())
    train_(
        whole,
        teacher=tiny_bert(seed=1),
        train_data=data,
        config=config,
        output_dir=tmp_path / "whole",
        progress=False,
    )
    part = ofa.convert(tiny_bert())
    train_(
        part,
        teacher=tiny_bert(seed=1),
        train_data=data,
        config=config,
        output_dir=tmp_path / "part",
        max_steps=3,
        progress=False,
    )
    # a run that died after step 4 would have left a metrics row past the checkpoint
    with open(tmp_path / "part" / "metrics.jsonl", "a") as handle:
        handle.write(json.dumps({"step": 4, "loss": -1.0}) + "\n")
    fresh = ofa.convert(tiny_bert(seed=5))  # different weights: the checkpoint must overwrite them
    torch.manual_seed(123)  # and a different RNG state
    train_(
        fresh,
        teacher=tiny_bert(seed=1),
        train_data=data,
        config=config,
        output_dir=tmp_path / "part",
        resume=True,
        progress=False,
    )
    expected, got = (
        _rows(tmp_path / "whole" / "metrics.jsonl"),
        _rows(tmp_path / "part" / "metrics.jsonl"),
    )
    assert [r["step"] for r in got] == [1, 2, 3, 4, 5, 6]
    for a, b in zip(expected[3:], got[3:]):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5, abs=1e-6)
    for (name, a), b in zip(whole.state_dict().items(), fresh.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_fixed_subnet_trains_only_its_weights_and_inplace_needs_no_teacher(tmp_path):
    supernet = ofa.convert(tiny_bert())
    before = {k: v.clone() for k, v in supernet.state_dict().items()}
    subnet = supernet.space.uniform(depth=2, num_heads=2, ffn_dim=32, hidden_size=32)
    config = _config(phases=(PhaseConfig(name="fixed", steps=2, subnet=subnet),), weight_decay=0.0)
    train_(
        supernet,
        teacher=tiny_bert(seed=1),
        train_data=toy_data(),
        config=config,
        output_dir=tmp_path / "a",
        progress=False,
    )
    after = supernet.state_dict()
    dropped = "model.bert.encoder.layer.0.intermediate.dense.weight"  # layer 0 is not kept
    torch.testing.assert_close(after[dropped], before[dropped], rtol=0, atol=0)
    kept = "model.bert.encoder.layer.1.intermediate.dense.weight"
    assert not torch.equal(after[kept][:32], before[kept][:32])
    torch.testing.assert_close(after[kept][32:], before[kept][32:], rtol=0, atol=0)
    inplace = _config(teacher_mode="inplace", distill=DistillConfig(alpha=0.0))
    result = train_(
        ofa.convert(tiny_bert()),
        teacher=None,
        train_data=toy_data(),
        config=inplace,
        output_dir=tmp_path / "b",
        progress=False,
    )
    assert result.steps == 6 and result.final_loss == result.final_loss  # finite, not NaN


def test_theseus_groups_and_training(tmp_path):
    subnet = Subnet(layers=(1, 3), num_heads=(4, 4), ffn_dims=(64, 64), hidden_size=32)
    assert theseus_groups(subnet) == [(0, 1), (2, 3)]
    teacher = tiny_bert(seed=1)
    frozen = {k: v.clone() for k, v in teacher.state_dict().items()}
    config = _config(
        phases=(PhaseConfig(name="theseus", steps=3, subnet=subnet),),
        theseus=TheseusConfig(start=0.5),
        distill=DistillConfig(alpha=0.5),
    )
    result = train_(
        ofa.convert(tiny_bert()),
        teacher=teacher,
        train_data=toy_data(),
        config=config,
        output_dir=tmp_path,
        progress=False,
    )
    assert result.steps == 3 and result.final_loss == result.final_loss
    for name, value in teacher.state_dict().items():
        torch.testing.assert_close(value, frozen[name], rtol=0, atol=0)


def test_finetune_learns_the_toy_task(tmp_path):
    model = tiny_bert(dropout=0.0)
    data = toy_data(64)
    trained = finetune(
        model,
        train_data=data,
        output_dir=tmp_path,
        progress=False,
        config=FinetuneConfig(epochs=6, batch_size=16, learning_rate=3e-3),
    )
    assert type(trained) is BertForSequenceClassification
    assert accuracy(trained, data) >= 0.8
    assert accuracy(model, data) < 0.7


@pytest.mark.gpu
def test_cuda_bf16_autocast_trains(tmp_path):
    supernet = ofa.convert(tiny_bert())
    result = train_(
        supernet,
        teacher=tiny_bert(seed=1),
        train_data=toy_data(),
        config=_config(),
        output_dir=tmp_path,
        progress=False,
    )
    assert next(supernet.parameters()).is_cuda and result.final_loss == result.final_loss


def test_bad_input_errors(tmp_path):
    supernet = ofa.convert(tiny_bert())
    data, config = toy_data(), _config()
    with pytest.raises(ValueError, match="no teacher"):
        train_(supernet, teacher=None, train_data=data, config=config, output_dir=tmp_path)
    with pytest.raises(ValueError, match="tokenized"):
        train_(
            supernet,
            teacher=tiny_bert(),
            train_data=data.remove_columns("input_ids"),
            config=config,
            output_dir=tmp_path,
        )
    with pytest.raises(ValueError, match="no full batch"):
        train_(
            supernet,
            teacher=tiny_bert(),
            train_data=data.select(range(4)),
            config=config,
            output_dir=tmp_path,
        )
    with pytest.raises(TypeError, match="ofa.Supernet"):
        train_(
            tiny_bert(), teacher=tiny_bert(), train_data=data, config=config, output_dir=tmp_path
        )
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        train_(
            supernet,
            teacher=tiny_bert(),
            train_data=data,
            config=config,
            output_dir=tmp_path / "none",
            resume=True,
        )
    with pytest.raises(ValueError, match="not in the supernet's space"):
        bad = _config(phases=(PhaseConfig(name="x", steps=1, num_heads=(5,)),))
        train_(supernet, teacher=tiny_bert(), train_data=data, config=bad, output_dir=tmp_path)
    with pytest.raises(ValueError, match="later_learning_rate must be positive"):
        default_phases(6, later_learning_rate=0.0)
    with pytest.raises(ValueError, match="exactly one of steps or epochs"):
        PhaseConfig(name="x")
    with pytest.raises(ValueError, match="'max', 'large', 'all'"):
        PhaseConfig(name="x", steps=1, depths="some")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sandwich"):
        TrainConfig(phases=default_phases(6, sampling="random"), teacher_mode="inplace")
    with pytest.raises(ValueError, match="BERT-of-Theseus"):
        TrainConfig(
            phases=default_phases(6),
            theseus=TheseusConfig(),
            distill=DistillConfig(hidden_weight=1.0),
        )
    with pytest.raises(ValueError, match="start_phase"):
        TrainConfig(phases=default_phases(6), start_phase=6)
