"""The smoke mode of benchmarks/bench_vs_torch_pruning.py runs, so that the benchmark cannot rot:
a tiny random BERT, a few steps, one seed, one budget, batch 1, a loose measuring policy."""

from __future__ import annotations

import pytest

pytest.importorskip(
    "torch_pruning",
    reason="Torch-Pruning is a benchmark-only extra: pip install -e '.[bench]'",
)

from benchmarks import bench_vs_torch_pruning as bench  # noqa: E402


def test_smoke_mode_gives_both_tools_a_model_within_the_budget(tmp_path):
    results = bench.main(["--smoke", "--out", str(tmp_path)])
    rows = results["rows"]
    assert rows and all(set(bench.ROW_FIELDS) <= set(row) for row in rows)
    assert (tmp_path / "results.json").is_file() and (tmp_path / "seed0.json").is_file()
    budget = results["args"]["budgets"]
    tools = {bench.OFA, *bench.TP_NAMES.values()}
    assert tools <= {row["model"] for row in rows}
    for tool in tools:
        mine = [row for row in rows if row["model"] == tool]
        assert mine, tool
        for row in mine:
            assert row["budget"] == float(budget)
            if row["reason"]:  # no model: a sentence saying why
                assert row["held-out acc"] is None and len(row["reason"]) > 20
                continue
            # the tool's own paired measurement chose it within the budget...
            assert row["selected share"] <= row["budget"], row
            # ...and the last side-by-side measurement of every deployed model timed it
            assert row["share"] is not None and row["latency ms"] > 0
            assert 0 <= row["held-out acc"] <= 1 and row["params (M)"] > 0
            assert row["FLOPs (M)"] > 0 and row["steps"] >= 1
            assert row["train cpu s"] is not None and row["select wall s"] is not None
    # ofa-nas and Torch-Pruning's per-layer ranking both reach 0.8 of the tiny teacher (its
    # pruned model times at about 0.67 at the largest ratio)
    for tool in (bench.OFA, bench.TP_NAMES["local"]):
        assert any(not row["reason"] for row in rows if row["model"] == tool), tool
    compute = {row["compute"] for row in rows if row["model"] in bench.TP_NAMES.values()}
    assert compute == {"a", "b"}
    # the report names both tools' versions and every row's model
    assert "torch-pruning 1." in results["report"] and "ofa-nas" in results["report"]
    assert results["versions"]["torch-pruning"] != "not installed"


def _tiny_bert(num_heads: int):
    """A 2-layer BERT classifier, hidden 96 in ``num_heads`` heads (eval, seeded), and a batch."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=64,
        hidden_size=96,
        num_hidden_layers=2,
        num_attention_heads=num_heads,
        intermediate_size=192,
        num_labels=2,
    )
    teacher = BertForSequenceClassification(config).eval()
    batch = {
        "input_ids": torch.randint(5, 64, (4, 10)),
        "attention_mask": torch.ones(4, 10, dtype=torch.long),
        "labels": torch.tensor([0, 1, 0, 1]),
    }
    return teacher, batch


def test_pruned_minilm_shaped_model_runs_with_consistent_attention():
    import torch

    teacher, batch = _tiny_bert(num_heads=3)
    grads = bench.taylor_gradients(teacher, [batch])
    for ranking in ("local", "global"):
        pruned = bench.tp_prune(teacher, 0.5, ranking, grads, bench.importance_example(teacher))
        for layer in pruned.bert.encoder.layer:
            attention = layer.attention.self
            assert attention.attention_head_size == 32
            assert attention.all_head_size == attention.num_attention_heads * 32
            assert attention.query.out_features == attention.all_head_size
            assert layer.attention.output.dense.in_features == attention.all_head_size
        assert sum(bench.shape_of(pruned)["heads"]) < 6
        assert bench.num_params(pruned) < bench.num_params(teacher)
        with torch.no_grad():
            logits = pruned(**{k: v for k, v in batch.items() if k != "labels"}).logits
        assert logits.shape == (4, 2) and torch.isfinite(logits).all()


def test_space_choices_given_on_the_command_line_shape_the_supernet():
    """--num-heads / --ffn-dims: a grid finer than the default quarters (the 0.3 budget's fix
    to try), the full model still the teacher, and older runs' signatures unchanged."""
    import types

    import torch

    teacher, batch = _tiny_bert(num_heads=6)
    args = bench.parse_args(["--num-heads", "6,1,2,3", "--ffn-dims", "64,32,192"])
    setup = types.SimpleNamespace(teacher=teacher)
    supernet = bench.reordered_supernet(setup, [batch], args)
    assert supernet.space.num_heads == (1, 2, 3, 6)
    assert supernet.space.ffn_dims == (32, 64, 192)
    assert supernet.space.hidden_sizes == (96,)  # no-hidden: the residual width stays
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    small = supernet.extract(supernet.space.min_subnet()).eval()
    for layer in small.bert.encoder.layer:  # a grid point below the quarters: 1 of 6 heads
        assert layer.attention.self.num_attention_heads == 1
        assert layer.intermediate.dense.out_features == 32
    full = supernet.extract(supernet.space.max_subnet()).eval()
    with torch.no_grad():  # reordering never changes the full model
        torch.testing.assert_close(
            full(**inputs).logits, teacher(**inputs).logits, rtol=0, atol=1e-5
        )
    assert "num_heads" in bench._signature(args)
    assert "num_heads" not in bench._signature(bench.parse_args([]))


def test_latency_multipliers_train_the_shapes_each_budget_gets_anchors_included():
    """--latency-multipliers takes budget_shapes' multipliers and anchors (a budget no
    full-depth multiplier fits, or --fill-budgets widening one); --anchors-everywhere trains
    the anchors in every phase, and the signature names them (older runs' stays unchanged)."""
    import json

    import ofa

    teacher, batch = _tiny_bert(num_heads=6)
    args = bench.parse_args(
        ["--latency-multipliers", "1", "--budgets", "0.6,0.3", "--fill-budgets",
         "--anchors-everywhere"]
    )  # fmt: skip
    supernet = ofa.convert(teacher)

    def cost(subnet):  # any cost that grows with width serves; FLOPs keep the test quick
        return float(supernet.flops(subnet))

    multipliers, anchors = bench.latency_multipliers(supernet, cost, args)
    expected = ofa.budget_shapes(supernet, (0.6, 0.3), cost=cost, what="latency", fill=True)
    assert multipliers == ",".join(f"{m:g}" for m in expected.width_multipliers)
    found = tuple(ofa.Subnet.from_dict(a) for a in json.loads(anchors))
    assert found == expected.anchors and found  # the quarters leave room: widened
    args.width_multipliers, args.budget_anchors = multipliers, anchors
    phases = bench.supernet_phases(args)
    assert all(p.anchors == found and p.anchors_everywhere for p in phases)
    assert bench._signature(args)["budget_anchors"] == anchors
    assert "budget_anchors" not in bench._signature(bench.parse_args([]))
    # a run whose budgets all get multipliers keeps an older run's signature
    plain = bench.parse_args(["--latency-multipliers", "1", "--budgets", "0.6"])
    plain.width_multipliers, plain.budget_anchors = bench.latency_multipliers(
        supernet, cost, plain
    )
    assert plain.width_multipliers and plain.budget_anchors == ""
    assert "budget_anchors" not in bench._signature(plain)
    plain.anchors_everywhere = True  # trains nothing more without anchors
    assert "anchors_everywhere" not in bench._signature(plain)
    with pytest.raises(SystemExit):  # the flags act on --latency-multipliers' shapes
        bench.parse_args(["--fill-budgets"])


def test_measured_shapes_price_the_shapes_near_a_budget_by_paired_measurement():
    """--measured-shapes: the full-depth uniform subnets predicted near a budget are timed
    beside the teacher, and those paired shares, not the profile's, pick the trained shapes:
    a shape the profile puts under the budget but measurement puts over it is not trained."""
    import ofa

    teacher, _ = _tiny_bert(num_heads=6)
    args = bench.parse_args(
        ["--smoke", "--latency-multipliers", "1", "--measured-shapes", "--fill-budgets"]
    )
    supernet = ofa.convert(teacher)
    space = supernet.space
    full_flops = float(supernet.flops(space.max_subnet()))

    def predicted(subnet):  # a profile stand-in: FLOPs in "ms"
        return float(supernet.flops(subnet))

    fractions = (0.8,)
    shares = bench.measured_shares(supernet, teacher, predicted, fractions, args)
    assert shares  # the quarters' full-depth grid has shapes near 0.8 of the FLOPs
    for subnet, share in shares.items():
        assert len(subnet.layers) == space.depths[-1]  # full depth, uniform
        assert abs(predicted(subnet) / full_flops - 0.8) <= 0.15 * 0.8
        assert 0 < share < 5  # a paired ratio to the teacher, measured
    # the rule: a measured share replaces the prediction, the rest stay predicted
    widest = max(shares, key=predicted)
    over = {**shares, widest: 0.99}  # measured over the budget, whatever it predicts
    cost = bench.priced_by(over, predicted, supernet)
    assert cost(widest) == 0.99 and cost(space.max_subnet()) == 1.0
    found = ofa.budget_shapes(supernet, fractions, cost=cost, what="latency", fill=True)
    chosen = found.per_budget[0.8]
    if isinstance(chosen, float):  # a multiplier: its full-depth subnet
        from ofa.training.budgets import _multiplier_subnet, _probe

        chosen = _multiplier_subnet(supernet, chosen, _probe(space))
    assert chosen != widest and cost(chosen) <= 0.8
    assert args.measured_shapes and "measured_shapes" in bench._signature(args)
    with pytest.raises(SystemExit):
        bench.parse_args(["--measured-shapes"])


def test_measured_shapes_are_reused_so_a_rerun_trains_the_same_shapes(tmp_path):
    """With --reuse the shares measured first are read back (not measured again, which could
    move a shape across a budget and so change the seeds' signature)."""
    import ofa

    teacher, _ = _tiny_bert(num_heads=6)
    args = bench.parse_args(
        ["--smoke", "--latency-multipliers", "1", "--measured-shapes", "--fill-budgets",
         "--reuse", "--out", str(tmp_path)]
    )  # fmt: skip
    supernet = ofa.convert(teacher)

    def predicted(subnet):
        return float(supernet.flops(subnet))

    first = bench.latency_multipliers(supernet, predicted, args, teacher=teacher)
    saved = tmp_path / "measured_shares.json"
    assert saved.is_file() and args.measured_share_count > 0
    stored = saved.read_text()
    assert bench.latency_multipliers(supernet, predicted, args, teacher=teacher) == first
    assert saved.read_text() == stored  # read, not measured and written again
    args.budgets, args.budget_list = "0.5", [0.5]  # other budgets: measured afresh
    bench.latency_multipliers(supernet, predicted, args, teacher=teacher)
    assert saved.read_text() != stored


def test_goal_lines_say_which_side_measured_over_its_budget():
    """A pair whose Torch-Pruning model measured over the budget at the final measurement is
    compared still, but the goal line says so (its accuracy was bought with latency)."""

    def row(model, compute, acc, fits):
        return {"seed": 0, "batch": 1, "budget": 0.6, "model": model, "compute": compute,
                "held-out acc": acc, "fits": fits}  # fmt: skip

    tp = bench.TP_NAMES["local"]
    rows = [row(bench.OFA, "one run", 0.80, True), row(tp, "a", 0.81, False)]
    (entry,) = bench.paired_rows(rows, "held-out")
    assert entry["diffs"] == pytest.approx([-1.0]) and entry["over"] == {bench.OFA: 0, tp: 1}
    (line,) = bench.goal_lines([entry], "held-out")
    assert f"{tp} measured over the budget at the end in 1/1" in line
    assert f"{bench.OFA} measured over" not in line
    rows[1]["fits"] = True
    (line,) = bench.goal_lines(bench.paired_rows(rows, "held-out"), "held-out")
    assert "measured over" not in line
