"""ofa.train_ and ofa.evaluate on CNN supernets: the kernel -> depth -> width schedule on real digits."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

import ofa
from ofa.data_images import load_digits
from ofa.distill import DistillConfig
from ofa.evaluation import accuracy
from ofa.families.cnn import default_space
from ofa.training import PhaseConfig, TrainConfig, default_cnn_phases, train_
from ofa.training.loop import _subnets
from tests.ofa._cnn_nets import HomeNet
from tests.ofa.test_train import tiny_bert

pytest.importorskip("sklearn")


def _teacher(data, steps: int = 60) -> HomeNet:
    """HomeNet trained on the digits for a few seconds (about 0.9 test accuracy)."""
    torch.manual_seed(0)
    model = HomeNet()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for step in range(steps):
        batch = next(data.batches(64, shuffle=True, seed=step))
        loss = F.cross_entropy(model(batch["pixel_values"]), batch["labels"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


@pytest.fixture(scope="module")
def digits():
    return load_digits(split="train"), load_digits(split="test")


@pytest.fixture(scope="module")
def teacher(digits):
    return _teacher(digits[0])


def _supernet(model) -> ofa.Supernet:
    return ofa.convert(model, default_space(model, image_size=8, width_ratios=(0.5, 1.0)))


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_default_cnn_schedule_and_phase_spaces(teacher):
    supernet = _supernet(teacher)
    space = supernet.space
    assert space.kernel_convs and any(len(c) > 1 for c in space.depth_choices)
    phases = default_cnn_phases(50, space=space)
    assert [p.name for p in phases] == [
        "kernel",
        "depth-large",
        "depth-all",
        "width-large",
        "width-all",
    ]
    assert sum(p.steps for p in phases) == 50
    kernel, depth_large, _, width_large, width_all = (p.space_for(space) for p in phases)
    # kernel phase: every kernel choice, full widths and depths
    assert kernel.kernel_choices == space.kernel_choices
    assert kernel.max_subnet() == space.max_subnet()
    assert all(len(c) == 1 for c in kernel.channel_choices + kernel.depth_choices)
    # "large": the larger half of each stage's choices, kernels stay elastic
    assert depth_large.depth_choices == tuple(c[len(c) // 2 :] for c in space.depth_choices)
    assert depth_large.kernel_choices == space.kernel_choices
    assert width_large.channel_choices == tuple(c[len(c) // 2 :] for c in space.channel_choices)
    assert width_all == space
    # a space without kernel-elastic convs gets no kernel phase
    flat = default_space(teacher, image_size=8, elastic_kernel=False)
    assert [p.name for p in default_cnn_phases(8, space=flat)][0] == "depth-large"


def test_sandwich_on_a_cnn_phase_and_dimension_errors(teacher):
    supernet = _supernet(teacher)
    phase = PhaseConfig(name="w", steps=1, widths="large", depths="all", num_random=2)
    space = phase.space_for(supernet.space)
    generator = torch.Generator().manual_seed(0)
    for _ in range(4):
        drawn = _subnets(phase, supernet, generator)
        assert drawn[0] == supernet.space.max_subnet() and drawn[1] == space.min_subnet()
        assert all(space.contains(s) and supernet.space.contains(s) for s in drawn)
    with pytest.raises(ValueError, match="num_heads.*CNN"):
        PhaseConfig(name="x", steps=1, num_heads="all").space_for(supernet.space)
    with pytest.raises(ValueError, match="differ per"):
        PhaseConfig(name="x", steps=1, widths=(8, 16)).space_for(supernet.space)
    bert_space = ofa.convert(tiny_bert()).space
    with pytest.raises(ValueError, match="kernel_sizes.*BERT"):
        PhaseConfig(name="x", steps=1, kernel_sizes="all").space_for(bert_space)
    # min_width bounds every channel group's choices
    bounded = PhaseConfig(name="b", steps=1, widths="all", min_width=0.75)  # ratios 0.5, 1
    part = bounded.space_for(supernet.space)
    for full, kept in zip(supernet.space.channel_choices, part.channel_choices):
        assert kept == tuple(c for c in full if c >= 0.75 * full[-1]) and kept[-1] == full[-1]
    assert _subnets(bounded, supernet, generator)[1] == part.min_subnet()
    assert any(
        len(k) < len(f) for f, k in zip(supernet.space.channel_choices, part.channel_choices)
    )
    # width multipliers: every step, each group at the smallest choice >= m of its full width,
    # full depth and kernels; in a phase whose widths are fixed the multiplier is the max subnet
    multiplied = PhaseConfig(
        name="m",
        steps=1,
        widths="all",
        depths="all",
        kernel_sizes="all",
        width_multipliers=(0.5,),
        num_random=0,
    )
    drawn = _subnets(multiplied, supernet, generator)
    space = supernet.space
    assert len(drawn) == 3
    half = drawn[2]
    assert half.widths == tuple(
        min(w for w in c if w >= 0.5 * c[-1]) for c in space.channel_choices
    )
    assert half.widths != space.max_subnet().widths
    assert half.depths == space.max_subnet().depths
    assert half.kernel_sizes == space.max_subnet().kernel_sizes
    assert space.contains(half)
    kernel_phase = PhaseConfig(
        name="k", steps=1, kernel_sizes="all", width_multipliers=(0.5,), num_random=0
    )
    assert len(_subnets(kernel_phase, supernet, generator)) == 2  # max, min: no duplicate
    phases = default_cnn_phases(
        10, space=space, width_multipliers=(0.5,), later_learning_rate=1e-4
    )
    assert all(p.width_multipliers == (0.5,) for p in phases)
    assert phases[0].learning_rate is None and {p.learning_rate for p in phases[1:]} == {1e-4}
    with pytest.raises(ValueError, match="later_learning_rate must be positive"):
        default_cnn_phases(10, later_learning_rate=0.0)
    # a fixed CNN subnet survives the JSON round trip of the config
    fixed = PhaseConfig(name="f", steps=1, subnet=supernet.space.min_subnet())
    config = TrainConfig(phases=(fixed, *default_cnn_phases(5)))
    assert TrainConfig.from_json(config.to_json()) == config


def _config(**overrides) -> TrainConfig:
    base = dict(
        phases=(
            PhaseConfig(name="kernel", steps=2, kernel_sizes="all"),
            PhaseConfig(name="depth", steps=2, kernel_sizes="all", depths="all"),
            PhaseConfig(name="width", steps=3, kernel_sizes="all", depths="all", widths="all"),
        ),
        batch_size=32,
        learning_rate=2e-3,
        distill=DistillConfig(temperature=2.0, alpha=0.5),
    )
    return TrainConfig(**{**base, **overrides})


def test_train_a_cnn_supernet_phases_eval_rows_and_exact_resume(tmp_path, digits, teacher):
    train_data, test_data = digits
    config = _config(checkpoint_every_steps=3)
    whole = _supernet(teacher)
    result = train_(
        whole,
        teacher=teacher,
        train_data=train_data,
        eval_data=test_data,
        config=config,
        output_dir=tmp_path / "whole",
        progress=False,
    )
    rows = _rows(result.metrics_path)
    steps = [r for r in rows if "eval" not in r]
    assert [r["phase"] for r in steps] == ["kernel"] * 2 + ["depth"] * 2 + ["width"] * 3
    assert all(r["subnets"] == 3 and {"ce", "logit", "loss"} <= set(r) for r in steps)
    evals = [r for r in rows if "eval" in r]
    assert [(r["step"], r["phase"]) for r in evals] == [(2, "kernel"), (4, "depth"), (7, "width")]
    assert all(0 <= r["eval"]["min"] <= 1 and 0 <= r["eval"]["max"] <= 1 for r in evals)
    assert whole.active_subnet == whole.space.max_subnet() and not whole.training

    part = _supernet(teacher)
    train_(
        part,
        teacher=teacher,
        train_data=train_data,
        config=config,
        output_dir=tmp_path / "part",
        max_steps=3,
        progress=False,
    )
    fresh = _supernet(HomeNet())  # other weights: the checkpoint must overwrite them all
    torch.manual_seed(99)
    train_(
        fresh,
        teacher=teacher,
        train_data=train_data,
        config=config,
        output_dir=tmp_path / "part",
        resume=True,
        progress=False,
    )
    got = _rows(tmp_path / "part" / "metrics.jsonl")
    assert [r["step"] for r in got] == list(range(1, 8))
    for a, b in zip(steps[3:], got[3:]):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5, abs=1e-6)
    for (name, a), b in zip(whole.state_dict().items(), fresh.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_trained_cnn_subnets_are_accurate_after_calibration(tmp_path, digits, teacher):
    train_data, test_data = digits
    teacher_acc = accuracy(teacher, test_data)
    supernet = _supernet(teacher)
    calibration = train_data.subset(512)
    space = supernet.space
    untrained_min = ofa.evaluate(
        supernet, space.min_subnet(), test_data, calibration_data=calibration
    )
    train_(
        supernet,
        teacher=teacher,
        train_data=train_data,
        config=TrainConfig(
            phases=default_cnn_phases(150, space=space),
            batch_size=64,
            learning_rate=2e-3,
            distill=DistillConfig(temperature=2.0, alpha=0.5),
        ),
        output_dir=tmp_path,
        progress=False,
    )
    before = {k: v.clone() for k, v in supernet.state_dict().items()}
    trained_min = ofa.evaluate(
        supernet, space.min_subnet(), test_data, calibration_data=calibration
    )
    trained_max = ofa.evaluate(
        supernet, space.max_subnet(), test_data, calibration_data=calibration
    )
    # evaluating with calibration leaves the supernet (weights and BN statistics) untouched
    for name, value in supernet.state_dict().items():
        assert torch.equal(value, before[name]), name
    # the same figure by hand: extract, calibrate, count
    small = supernet.extract(space.min_subnet())
    ofa.calibrate_bn_(small, calibration.batches(64))
    with torch.no_grad():
        logits = small.eval()(test_data.images)
    assert trained_min == pytest.approx(
        float((logits.argmax(-1) == test_data.labels).float().mean())
    )
    # the min subnet (half widths, one block per stage, 3 x 3 kernels) is near chance when cut
    # from the teacher, and learns from the supernet training; the max keeps the teacher's level
    assert teacher_acc > 0.8 and trained_max > teacher_acc - 0.05
    assert untrained_min < 0.3 and trained_min > untrained_min + 0.2


def test_cnn_train_and_evaluate_errors(tmp_path, digits, teacher):
    supernet = _supernet(teacher)
    train_data, test_data = digits
    with pytest.raises(ValueError, match="ImageData"):
        train_(
            supernet,
            teacher=teacher,
            train_data=[1, 2, 3],
            config=_config(),
            output_dir=tmp_path,
            progress=False,
        )
    with pytest.raises(ValueError, match="hidden_weight=0"):
        train_(
            supernet,
            teacher=teacher,
            train_data=train_data,
            config=_config(distill=DistillConfig(alpha=0.5, hidden_weight=1.0)),
            output_dir=tmp_path,
            progress=False,
        )
    with pytest.raises(ValueError, match="outside the search space"):
        ofa.evaluate(
            supernet,
            ofa.CnnSubnet(widths=(1,)),
            test_data,
            calibration_data=train_data,
        )


def _anchor(space) -> ofa.CnnSubnet:
    """Narrow first groups, full later ones, shallowest stages: neither max, min nor uniform."""
    widths = tuple(c[0] if i % 2 == 0 else c[-1] for i, c in enumerate(space.channel_choices))
    return ofa.CnnSubnet(
        widths=widths,
        depths=space.min_subnet().depths,
        kernel_sizes=space.max_subnet().kernel_sizes,
    )


def test_anchors_train_every_step_of_the_phases_that_hold_them(tmp_path, digits, teacher):
    """An anchor (a non-uniform shape to deploy) is trained each step of the phases whose part of
    the space holds it, beside the sandwich; anchors the space or no phase holds are refused."""
    train_data, _ = digits
    supernet = _supernet(teacher)
    space = supernet.space
    big, small = space.max_subnet(), space.min_subnet()
    anchor = _anchor(space)
    assert space.contains(anchor) and anchor not in (big, small)
    phases = default_cnn_phases(7, space=space, anchors=(anchor,))
    assert all(p.anchors == (anchor,) for p in phases)
    config = _config(phases=phases)
    assert TrainConfig.from_json(config.to_json()) == config  # anchors survive the JSON
    generator = torch.Generator().manual_seed(0)
    held = {p.name: anchor in _subnets(p, supernet, generator) for p in phases}
    assert held == {n: n == "width-all" for n in held}  # only there are its widths elastic
    result = train_(
        supernet,
        teacher=teacher,
        train_data=train_data,
        config=config,
        output_dir=tmp_path / "anchored",
        progress=False,
    )
    rows = [r for r in _rows(result.metrics_path) if "eval" not in r]
    assert {(r["phase"], r["subnets"]) for r in rows} == {
        *((p.name, 3) for p in phases[:-1]),
        ("width-all", 4),  # max + min + 1 random + the anchor
    }

    def train(phases, name):
        return train_(
            _supernet(teacher),
            teacher=teacher,
            train_data=train_data,
            config=_config(phases=phases),
            output_dir=tmp_path / name,
            progress=False,
        )

    with pytest.raises(ValueError, match="would never be trained"):
        train(phases[:-1], "never")
    outside = ofa.CnnSubnet(
        widths=tuple(c[-1] + 1 for c in space.channel_choices),
        depths=big.depths,
        kernel_sizes=big.kernel_sizes,
    )
    with pytest.raises(ValueError, match="not in the supernet's space"):
        train(default_cnn_phases(7, space=space, anchors=(outside,)), "outside")
    with pytest.raises(ValueError, match="fixed-subnet phase trains only its subnet"):
        PhaseConfig(name="f", steps=1, subnet=small, anchors=(anchor,))


def test_anchors_everywhere_train_in_every_phase_and_the_trained_shapes_are_saved(
    tmp_path, digits, teacher
):
    """With ``anchors_everywhere`` an anchor is trained each step of every phase, held or not
    (a schedule with no phase holding it is then accepted); after training the supernet names
    what its last phase trained every step, and a save and load keep it."""
    train_data, _ = digits
    supernet = _supernet(teacher)
    space = supernet.space
    anchor = _anchor(space)
    phases = default_cnn_phases(7, space=space, anchors=(anchor,), anchors_everywhere=True)
    assert all(p.anchors_everywhere for p in phases)
    config = _config(phases=phases[:-1])  # no phase left whose part of the space holds it
    assert TrainConfig.from_json(config.to_json()) == config
    generator = torch.Generator().manual_seed(0)
    assert all(anchor in _subnets(p, supernet, generator) for p in phases)
    with pytest.raises(ValueError, match="anchors_everywhere must be True or False"):
        PhaseConfig(name="p", steps=1, anchors_everywhere="yes")
    assert supernet.trained_subnets == ()
    result = train_(
        supernet,
        teacher=teacher,
        train_data=train_data,
        config=config,
        output_dir=tmp_path / "everywhere",
        progress=False,
    )
    rows = [r for r in _rows(result.metrics_path) if "eval" not in r]
    assert {(r["phase"], r["subnets"]) for r in rows} == {(p.name, 4) for p in phases[:-1]}
    last = phases[-2].space_for(space)
    assert supernet.trained_subnets == (last.max_subnet(), last.min_subnet(), anchor)
    loaded = ofa.load_supernet(supernet.save(tmp_path / "saved"))
    assert loaded.trained_subnets == supernet.trained_subnets
