"""search.run: constraints, seeds, resume, outputs, best under a measured budget, bad input."""

from __future__ import annotations

import dataclasses
import json
import statistics

import optuna
import pytest
import torch

import ofa
import search
from search import LatencyModel
from search._study import largest_within
from tests.search._tiny import neg_loss, tiny_supernet


def _budget(latency_model, supernet) -> float:
    """A budget that about half the random subnets miss."""
    generator = torch.Generator().manual_seed(3)
    return statistics.median(latency_model(supernet.space.sample(generator)) for _ in range(40))


def test_infeasible_trials_are_never_chosen_and_seeds_go_first(supernet, latency_model, tmp_path):
    budget = _budget(latency_model, supernet)
    result = search.run(
        supernet,
        evaluate=neg_loss,
        latency=latency_model,
        budget_ms=budget,
        trials=16,
        out_dir=tmp_path,
        remeasure=False,
    )
    study = optuna.load_study(
        study_name="ofa-search", storage=search.open_storage(tmp_path / "study.journal", None)
    )
    trials = study.trials
    assert len(trials) == result.num_trials == 16
    infeasible = [t for t in trials if t.constraints["latency_budget"] > 0]
    assert infeasible, "the budget should make some trials infeasible"
    assert all(t.user_attrs["predicted_ms"] > budget for t in infeasible)
    chosen = {p.trial_number for p in result.pareto}
    assert chosen and not chosen & {t.number for t in infeasible}
    assert all(p.predicted_ms <= budget for p in result.pareto)
    assert result.best is not None and result.best.predicted_ms <= budget
    assert result.best.accuracy == max(p.accuracy for p in result.pareto)
    # trial 1 is the min subnet; trial 0 the largest uniform subnet within the budget
    space = supernet.space
    assert trials[1].user_attrs["subnet"] == json.loads(space.min_subnet().to_json())
    largest = trials[0].user_attrs["subnet"]
    assert trials[0].user_attrs["predicted_ms"] <= budget
    assert len(set(largest["num_heads"])) == 1 and len(set(largest["ffn_dims"])) == 1
    # trials 2 and 3 (a quarter of 16, less the two above): the other uniform subnets on the
    # budget's edge, most FLOPs first: within budget, inside no other uniform one that is
    target = latency_model.target
    fitting = sorted(
        (u for u in space.uniform_subnets() if latency_model(u) <= budget),
        key=lambda u: supernet.flops(u, batch_size=target.batch_size, seq_len=target.seq_len),
        reverse=True,
    )
    edge = [u for u in fitting if not any(o != u and space_contains(o, u) for o in fitting)]
    first = {ofa.Subnet.from_dict(t.user_attrs["subnet"]) for t in trials[:2]}
    expected = [u for u in edge if u not in first][:2]
    seeded = [ofa.Subnet.from_dict(t.user_attrs["subnet"]) for t in trials[2 : 2 + len(expected)]]
    assert edge and seeded == expected, (seeded, edge)


def test_the_shapes_training_trained_every_step_go_first_where_they_fit(
    supernet, latency_model, tmp_path, monkeypatch
):
    """``supernet.trained_subnets`` (width multipliers, anchors) that fit the budget are the
    first trials, most FLOPs first, even inside a larger fitting uniform subnet (not on the
    budget's edge); those that miss the budget or lie inside another fitting one are not."""
    space = supernet.space
    target = latency_model.target
    budget = _budget(latency_model, supernet)

    def flops(subnet):
        return supernet.flops(subnet, batch_size=target.batch_size, seq_len=target.seq_len)

    fitting = sorted((u for u in space.uniform_subnets() if latency_model(u) <= budget), key=flops)
    edge = fitting[-1]
    inner = [u for u in fitting if u != edge and space_contains(edge, u)]
    assert len(inner) >= 2, "the budget should fit uniform subnets inside its largest one"
    shape, inside = inner[-1], next(u for u in inner if space_contains(inner[-1], u))
    missing = space.max_subnet()
    assert latency_model(missing) > budget
    monkeypatch.setattr(supernet, "trained_subnets", (inside, missing, shape), raising=False)
    search.run(
        supernet,
        evaluate=neg_loss,
        latency=latency_model,
        budget_ms=budget,
        trials=8,
        out_dir=tmp_path,
        remeasure=False,
    )
    study = optuna.load_study(
        study_name="ofa-search", storage=search.open_storage(tmp_path / "study.journal", None)
    )
    subnets = [ofa.Subnet.from_dict(t.user_attrs["subnet"]) for t in study.trials]
    assert subnets[0] == shape, (subnets[0], shape)
    # then the largest uniform subnet within the budget (by bisection over FLOPs)
    largest = largest_within(space.uniform_subnets(), latency_model, budget, flops)
    assert subnets[1] == largest
    assert missing not in subnets[:2] and (inside == largest or inside not in subnets[:2])


def space_contains(big, small) -> bool:
    """Uniform ``small`` fits inside uniform ``big`` in every dimension."""
    return (
        small.depth <= big.depth
        and small.hidden_size <= big.hidden_size
        and small.num_heads[0] <= big.num_heads[0]
        and small.ffn_dims[0] <= big.ffn_dims[0]
    )


def test_outputs_and_resume_add_trials_to_the_same_study(supernet, latency_model, tmp_path):
    budget = _budget(latency_model, supernet)
    kwargs = dict(
        evaluate=neg_loss,
        latency=latency_model,
        budget_ms=budget,
        out_dir=tmp_path,
        study_name="resume",
        sampler="nsga2",
        remeasure=False,
    )
    first = search.run(supernet, trials=5, **kwargs)
    second = search.run(supernet, trials=4, **kwargs)
    assert (first.num_trials, second.num_trials) == (5, 9)
    storage = search.open_storage(tmp_path / "study.journal", None)
    summaries = optuna.get_all_study_summaries(storage)
    assert [s.study_name for s in summaries] == ["resume"]
    numbers = [t.number for t in optuna.load_study(study_name="resume", storage=storage).trials]
    assert numbers == list(range(9))
    saved = json.loads((tmp_path / "pareto.json").read_text())
    assert saved["num_trials"] == 9 and len(saved["pareto"]) == len(second.pareto)
    lines = (tmp_path / "pareto.csv").read_text().splitlines()
    assert lines[0].startswith("trial_number,accuracy,predicted_ms,measured_ms")
    assert len(lines) == 1 + len(second.pareto)
    assert (tmp_path / "pareto.png").stat().st_size > 1000
    assert "plotly" in (tmp_path / "pareto.html").read_text()[:100000].lower()
    with pytest.raises(ValueError, match="another budget_ms"):
        search.run(supernet, trials=1, **{**kwargs, "budget_ms": budget * 2})


def test_best_is_chosen_by_measured_latency(supernet, latency_model):
    """A budget that the max subnet misses: the best subnet is one whose latency, re-measured
    on the device, fits it, and the most accurate subnet (the max) is not chosen. The budget is
    relative to the teacher measured in the same run (halfway between the min subnet's share and
    1), so that a machine faster or slower than at profiling time still constrains the search."""
    max_ms, min_ms = latency_model.anchors_ms()
    fraction = 0.5 * (1.0 + min_ms / max_ms)
    result = search.run(
        supernet,
        evaluate=neg_loss,
        latency=latency_model,
        budget_fraction=fraction,
        trials=8,
    )
    assert all(p.measured_ms is not None and p.measured_ms > 0 for p in result.pareto)
    assert result.num_feasible < result.num_trials  # the budget constrained something
    # the fit is by the paired share (a host's speed may swing between the rounds and ms)
    assert result.best is not None and result.best.share <= fraction
    assert result.best.subnet != supernet.space.max_subnet()
    assert "measured" in result.message


def test_a_model_that_predicts_100x_too_fast_is_caught_before_the_study(supernet, latency_model):
    """Its anchors (max and min subnet) are measured first: a budget under the smallest
    subnet's measured latency is refused, naming that latency."""
    data = latency_model.to_dict()
    data["method"] = "table"
    data["table"] = [[h, f, d, ms / 100] for h, f, d, ms in data["table"]]
    optimistic = LatencyModel.from_dict(data)
    budget = optimistic(supernet.space.max_subnet()) * 1.01
    with pytest.raises(ValueError, match=r"smallest subnet's latency .* \(measured now\)"):
        search.run(supernet, evaluate=neg_loss, latency=optimistic, budget_ms=budget, trials=3)


def test_a_profile_from_a_100x_faster_machine_is_refused_for_a_budget_in_ms(
    supernet, latency_model, caplog
):
    data = latency_model.to_dict()
    for record in data["measurements"]:
        record["measured_ms"] /= 100
    moved = LatencyModel.from_dict(data)
    with caplog.at_level("WARNING", logger="search.search"):
        with pytest.raises(search.StaleProfileError, match="--budget-fraction") as error:
            search.run(supernet, evaluate=neg_loss, latency=moved, budget_ms=1e6, trials=1)
    assert "profiled at" in str(error.value) and "profile again" in str(error.value)
    # refused only after the anchors were measured a second time
    assert any("measuring the anchors once more" in r.message for r in caplog.records)


def test_a_passing_slowdown_while_the_anchors_are_timed_is_measured_again_not_refused(
    supernet, latency_model, monkeypatch, tmp_path
):
    """The first measurement of the anchors reads 3x slow (as when another job or a clock
    drop hits those seconds); the second, real one matches the profile, so the search runs on
    the second and its budget check holds."""
    import search.search as search_module

    real = search_module._measure_anchors
    calls = []

    def slow_once(*args, **kwargs):
        paired = real(*args, **kwargs)
        calls.append(paired)
        if len(calls) > 1:
            return paired
        return dataclasses.replace(
            paired, times={n: e.scaled(3.0) for n, e in paired.times.items()}
        )

    monkeypatch.setattr(search_module, "_measure_anchors", slow_once)
    max_ms, _ = latency_model.anchors_ms()
    result = search.run(
        supernet,
        evaluate=neg_loss,
        latency=latency_model,
        budget_ms=max_ms * 1.5,
        trials=3,
        out_dir=tmp_path,
    )
    assert len(calls) == 2
    assert result.best is not None and result.best.measured_ms <= max_ms * 1.5


def test_no_fit_after_remeasuring_says_so():
    from search.pareto import ParetoPoint
    from search.search import _choose

    point = ParetoPoint(
        trial_number=3, subnet=tiny_space_max(), accuracy=0.8, predicted_ms=1.0, measured_ms=9.0
    )
    best, message = _choose([point], 2.0, True)
    assert best is None
    assert message.startswith("NO subnet fits") and "re-profile" in message and "9 ms" in message


def tiny_space_max():
    return tiny_supernet().space.max_subnet()


def test_budget_below_the_smallest_subnet_names_it(supernet, latency_model):
    smallest = latency_model(supernet.space.min_subnet())
    with pytest.raises(ValueError, match=r"smallest subnet's latency [0-9.]+ ms") as error:
        search.run(
            supernet, evaluate=neg_loss, latency=latency_model, budget_ms=smallest / 2, trials=1
        )
    assert "raise the budget to at least" in str(error.value)


def test_unknown_sampler(supernet, latency_model):
    with pytest.raises(ValueError, match="unknown sampler 'cmaes': use one of tpe, nsga2, random"):
        search.run(
            supernet,
            evaluate=neg_loss,
            latency=latency_model,
            budget_ms=1e6,
            trials=1,
            sampler="cmaes",
        )


@pytest.mark.parametrize("url", ["nosuchdb://user@host/db", "postgresql://u:secret@127.0.0.1:9/x"])
def test_bad_storage_url(supernet, latency_model, url):
    with pytest.raises(ValueError, match="could not be opened") as error:
        search.run(
            supernet,
            evaluate=neg_loss,
            latency=latency_model,
            budget_ms=1e6,
            trials=1,
            storage=url,
        )
    assert "secret" not in str(error.value)


def test_refuses_a_latency_model_of_another_target(supernet, latency_model):
    other = search.LatencyTarget(**{**latency_model.target.to_dict(), "seq_len": 128})
    with pytest.raises(ValueError, match="profiled for cpu float32 batch 2 seq 16"):
        search.run(
            supernet,
            evaluate=neg_loss,
            latency=latency_model,
            budget_ms=1e6,
            trials=1,
            target=other,
        )


def test_measured_latency_search(supernet):
    target = search.LatencyTarget(batch_size=1, seq_len=8, num_threads=1)
    latency = search.MeasuredLatency(supernet, target, warmup=0, rounds=2)
    result = search.run(
        supernet,
        evaluate=neg_loss,
        latency=latency,
        budget_ms=1e6,
        trials=3,
        sampler="random",
    )
    assert result.num_trials == 3 and result.best is not None


def test_hypervolume_and_front():
    points = [(0.9, 5.0), (0.8, 2.0), (0.7, 3.0), (0.95, 12.0)]
    assert search.pareto_front(points) == [(0.8, 2.0), (0.9, 5.0), (0.95, 12.0)]
    # (0.95, 12 ms) lies beyond the 10 ms reference: it adds nothing
    volume = search.hypervolume(points, reference_accuracy=0.5, reference_ms=10.0)
    assert volume == pytest.approx(8 * 0.3 + 5 * 0.1)
    assert search.hypervolume([], reference_accuracy=0.5, reference_ms=10.0) == 0.0


def test_a_study_refused_for_another_kind_of_budget_writes_nothing(
    supernet, latency_model, tmp_path
):
    search.run(
        supernet, evaluate=neg_loss, latency=latency_model, budget_ms=1e6, trials=1,
        out_dir=tmp_path, remeasure=False,
    )  # fmt: skip
    journal = tmp_path / "study.journal"
    before = journal.read_bytes()
    with pytest.raises(ValueError, match="budget of another kind"):
        search.run(
            supernet, evaluate=neg_loss, latency=latency_model, budget_fraction=0.9, trials=1,
            out_dir=tmp_path,
        )  # fmt: skip
    assert journal.read_bytes() == before
