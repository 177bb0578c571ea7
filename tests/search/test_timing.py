"""Paired measurement (search.timing), profile refusal and reuse checks, budgets relative to the
teacher, and the runtime of a latency target."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time

import pytest
import torch
from torch import nn

import search
from ofa.cnn_space import CnnSubnet
from ofa.space import Subnet
from search._families import latency_family
from search.latency import _timer
from search.pareto import ParetoPoint
from search.search import _may_be_chosen
from search.timing import Estimate, MeasurePolicy, measure_paired
from tests.search._tiny import cpu_burners, neg_loss

# for the tests of logic (not of noise) on the tiny supernet, whose ~1 ms calls a noisy host
# spreads by more than the default 10% bound
LOGIC = MeasurePolicy(
    warmup=1, repeats=5, min_rounds=4, max_rounds=24, precision=0.04, refuse_above=0.3
)


def _mlp(width: int, depth: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(*[nn.Linear(width, width) for _ in range(depth)]).eval()


def test_estimate_is_the_median_with_a_notch_interval_and_inverts():
    samples = [10.0, 11.0, 12.0, 13.0, 30.0]  # one burst: the median ignores it
    estimate = Estimate.of(samples)
    assert estimate.value == 12.0 and estimate.rounds == 5
    half = 1.57 * (13.0 - 11.0) / math.sqrt(5)
    assert estimate.low == pytest.approx(12.0 - half) and estimate.high == pytest.approx(
        12.0 + half
    )
    assert estimate.interval == pytest.approx(half / 12.0)
    inverse = Estimate.of([0.5, 0.5, 0.5]).inverse()
    assert inverse.value == 2.0 and inverse.low <= 2.0 <= inverse.high


def test_paired_ratio_of_a_model_four_times_the_work_is_near_four():
    inputs = torch.randn(16, 256)
    target = search.LatencyTarget(num_threads=1)
    paired = measure_paired(
        {"big": _mlp(256, 8), "small": _mlp(256, 2)}, inputs, target=target, reference="big"
    )
    speedup = paired.speedup("small")
    assert 2.0 < speedup.value < 6.5, speedup  # 4x the matmuls, plus per-call overhead
    assert speedup.low <= speedup.value <= speedup.high
    assert MeasurePolicy().min_rounds <= paired.rounds <= MeasurePolicy().max_rounds
    assert paired.times["big"].value > paired.times["small"].value


def test_a_candidate_whose_time_jumps_is_refused_as_too_noisy():
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(256, 256)

    def jumpy() -> None:  # real work, 1 or 12 matmuls at random: no stable figure exists
        for _ in range(1 if torch.rand(1, generator=generator).item() < 0.5 else 12):
            weight @ weight

    policy = MeasurePolicy(
        repeats=1, min_rounds=4, max_rounds=8, precision=0.01, refuse_above=0.02
    )
    with pytest.raises(
        search.TooNoisyError, match="too noisy to measure the test's call"
    ) as error:
        measure_paired(
            {"steady": lambda: weight @ weight, "jumpy": jumpy},
            target=search.LatencyTarget(num_threads=2),
            reference="steady",
            policy=policy,
            what="the test's call",
        )
    assert "fewer threads (--threads 1)" in str(error.value)
    assert len(str(error.value).splitlines()) == 1


def test_only_the_candidates_that_matter_are_held_to_the_bound():
    """A search's answer depends on the subnets near its budget, not on the tiny ones far
    below it: a jumpy candidate outside ``matters`` is timed and reported, not refused."""
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(256, 256)

    def jumpy() -> None:
        for _ in range(1 if torch.rand(1, generator=generator).item() < 0.5 else 12):
            weight @ weight

    policy = MeasurePolicy(
        repeats=1, min_rounds=4, max_rounds=12, precision=0.01, refuse_above=0.25
    )
    models = {"teacher": lambda: [weight @ weight for _ in range(4)], "steady": lambda: weight @ weight, "jumpy": jumpy}  # fmt: skip
    target = search.LatencyTarget(num_threads=1)
    paired = measure_paired(
        models, target=target, reference="teacher", policy=policy, matters={"steady"}
    )
    assert paired.ratios["jumpy"].interval > policy.refuse_above  # reported, wide
    assert paired.worst_interval({"steady"}) <= policy.refuse_above
    assert paired.worst_interval() == paired.ratios["jumpy"].interval
    with pytest.raises(search.TooNoisyError, match="too noisy"):
        measure_paired(models, target=target, reference="teacher", policy=policy)


def test_the_subnets_that_may_be_chosen_are_those_near_the_budget_and_the_most_accurate():

    def point(number: int, accuracy: float, ms: float) -> ParetoPoint:
        return ParetoPoint(
            trial_number=number, subnet=Subnet(layers=(0,), num_heads=(1,), ffn_dims=(number + 1,), hidden_size=8), accuracy=accuracy,
            predicted_ms=ms,
        )  # fmt: skip

    front = [point(0, 0.5, 1.0), point(1, 0.7, 7.0), point(2, 0.8, 11.0), point(3, 0.9, 30.0)]
    assert _may_be_chosen(front, budget_ms=10.0) == {"1", "2", "3"}
    assert _may_be_chosen(front, budget_ms=100.0) == {"3"}  # a loose budget: the most accurate


def test_one_thread_is_timed_by_cpu_time_so_a_sleep_costs_nothing():
    one, two = _timer(torch.device("cpu"), 1), _timer(torch.device("cpu"), 2)
    assert one(lambda: time.sleep(0.05)) < 5.0  # ms: the thread was not running
    assert two(lambda: time.sleep(0.05)) >= 45.0  # the wall clock


def test_choose_threads_takes_what_is_asked_and_fewer_when_cores_are_busy():
    assert search.choose_threads(3) == 3
    with pytest.raises(ValueError, match="threads must be positive"):
        search.choose_threads(0)
    cores = len(os.sched_getaffinity(0))
    assert 0.0 <= search.free_cores(0.1) <= cores
    with cpu_burners(cores, seconds=30):
        assert search.choose_threads(window_s=0.5) < max(2, cores)


def _paired(others: float | None, cores: int, threads: int) -> search.Paired:
    one = Estimate.of([1.0, 1.0])
    return search.Paired(
        times={"teacher": one, "subnet": one},
        ratios={"subnet": one},
        reference="teacher",
        threads=threads,
        rounds=2,
        seconds=1.0,
        others=others,
        cores=cores,
    )


def test_a_measurement_is_contended_only_when_other_jobs_needed_the_timing_cores():
    assert not _paired(0.1, cores=2, threads=1).contended
    assert not _paired(1.0, cores=2, threads=1).contended  # one job, one core left for us
    assert _paired(1.9, cores=2, threads=1).contended
    assert _paired(0.8, cores=2, threads=2).contended
    assert not _paired(None, cores=2, threads=1).contended  # unknown: not claimed
    assert (
        _paired(1.9, cores=2, threads=1).describe_load() == "other jobs kept 1.9 of 2 cores busy"
    )
    assert _paired(2.4, cores=2, threads=1).describe_load() == (
        "other jobs kept 2.0 of 2 cores busy (demanding 2.4)"
    )


def test_paired_rounds_record_the_cores_other_jobs_kept_busy():
    cores = len(os.sched_getaffinity(0))
    model, inputs = _mlp(64, 2), torch.randn(4, 64)
    target = search.LatencyTarget(seq_len=1, num_threads=1)
    policy = MeasurePolicy(min_rounds=3, max_rounds=6, refuse_above=10.0, precision=5.0)
    with cpu_burners(cores, seconds=30):
        loaded = measure_paired({"a": model}, inputs, target=target, policy=policy)
    # no core was idle, so the burners' demand is read from what they took from the timer:
    # ``cores`` of them (2 burners and a 1-thread timer on 2 cores took 1.33 cores, a hair
    # above the margin, and read as quiet in one CI run in three)
    assert loaded.others is not None and loaded.others >= cores - 0.3, loaded.describe_load()
    assert loaded.contended and loaded.cores == cores


def test_a_contended_measurement_waits_for_idle_cores_then_stops_or_warns():
    from search.search import _settle

    target = search.LatencyTarget(batch_size=2, seq_len=16, num_threads=1)
    cores = len(os.sched_getaffinity(0))
    loaded = _paired(float(cores), cores=cores, threads=1)
    config = search.SearchConfig(trials=1, budget_fraction=0.5, settle_s=2)
    # the burners outlive the wait: stop with the one-line refusal, naming the load and the ways on
    with cpu_burners(cores, seconds=30):
        started = time.perf_counter()
        with pytest.raises(search.BusyMachineError, match="too noisy to measure") as error:
            _settle(loaded, target, config)
        assert time.perf_counter() - started >= 1.5  # it did wait
        assert error.value.threads == 1 and "\n" not in str(error.value)
        for hint in ("--settle 600", "--allow-busy", f"of {cores} cores busy"):
            assert hint in str(error.value)
        # allowed: the loaded figures stay, with a warning that names the load
        again, note = _settle(loaded, target, dataclasses.replace(config, allow_busy=True))
    assert again is False and note.startswith("WARNING: other jobs kept the cores busy")
    assert "--remeasure" in note
    # on a quiet machine the wait ends at once: the caller measures again
    assert _settle(loaded, target, dataclasses.replace(config, settle_s=20)) == (True, None)
    # not contended, or not a CPU: nothing to do
    assert _settle(_paired(0.0, cores, 1), target, config) == (False, None)


@pytest.mark.host_speed
def test_a_search_whose_final_measurement_was_contended_measures_again_once_idle(
    supernet, latency_model, tmp_path, monkeypatch
):
    """Burners start in the last trial and stop when the settle wait begins: the reported
    figures are the quiet re-measure, and the note says the first ones were made under load.
    (Stopped by the wait, not by a clock: a slow host's first measurement can outlast any
    fixed burn time and would then not be contended at all.)"""
    import search.search as search_module

    cores = len(os.sched_getaffinity(0))
    calls = []
    burners = []
    waits = []

    def evaluate(net, subnet):
        calls.append(1)
        if len(calls) == 4:  # the last trial: the final measurement runs under load
            burners.append(cpu_burners(cores, seconds=120))
            burners[-1].__enter__()
        return neg_loss(net, subnet)

    real_wait = search_module.wait_until_idle

    def stop_then_wait(threads, seconds, *args, **kwargs):
        waits.append(seconds)
        while burners:
            burners.pop().__exit__(None, None, None)
        return real_wait(threads, seconds, *args, **kwargs)

    monkeypatch.setattr(search_module, "wait_until_idle", stop_then_wait)
    try:
        result = search.run(
            supernet,
            evaluate=evaluate,
            latency=latency_model,
            config=search.SearchConfig(
                trials=4, budget_fraction=0.9, policy=LOGIC, settle_s=60, seed=0
            ),
            out_dir=tmp_path,
        )
    finally:
        for burner in burners:
            burner.__exit__(None, None, None)
    assert waits == [60]  # the loaded final measurement was seen as contended, and waited on
    assert result.best is not None and result.load["contended"] is False
    assert any("were first measured while other jobs kept" in n for n in result.notes)
    written = json.loads((tmp_path / "pareto.json").read_text())
    assert written["load"]["contended"] is False


def test_a_search_on_a_machine_that_stays_busy_stops_and_keeps_the_earlier_best(
    supernet, latency_model, tmp_path
):
    cores = len(os.sched_getaffinity(0))
    config = search.SearchConfig(trials=3, budget_fraction=0.9, policy=LOGIC, settle_s=1, seed=0)
    first = search.run(supernet, evaluate=neg_loss, latency=latency_model, config=config,
                       out_dir=tmp_path)  # fmt: skip
    before = (tmp_path / "pareto.json").read_text()
    assert first.best is not None
    with cpu_burners(cores, seconds=120):
        with pytest.raises(search.BusyMachineError, match="too noisy to measure"):
            search.run(supernet, evaluate=neg_loss, latency=latency_model, config=config,
                       out_dir=tmp_path)  # fmt: skip
        assert (tmp_path / "pareto.json").read_text() == before  # the earlier best is kept
        allowed = search.run(
            supernet,
            evaluate=neg_loss,
            latency=latency_model,
            config=dataclasses.replace(config, allow_busy=True),
        )
    assert allowed.best is not None and allowed.load["contended"] is True
    assert any(n.startswith("WARNING: other jobs kept the cores busy") for n in allowed.notes)


def test_contained_subnets():
    bert = latency_family("bert")
    big = Subnet(layers=(0, 1, 2), num_heads=(4, 4, 2), ffn_dims=(64, 64, 32), hidden_size=32)
    small = Subnet(layers=(0, 2), num_heads=(2, 4), ffn_dims=(64, 32), hidden_size=32)
    assert bert.contains(big, small) and not bert.contains(small, big)
    wider = Subnet(layers=(0,), num_heads=(1,), ffn_dims=(16,), hidden_size=64)
    assert not bert.contains(big, wider)
    cnn = latency_family("cnn")
    assert cnn.contains(
        CnnSubnet(widths=(8, 16), depths=(2,)), CnnSubnet(widths=(8, 8), depths=(1,))
    )
    assert not cnn.contains(
        CnnSubnet(widths=(8, 16), depths=(1,)), CnnSubnet(widths=(8, 8), depths=(2,))
    )


def test_a_profile_above_the_error_bound_is_refused_with_its_model(supernet):
    with pytest.raises(search.UnusableProfileError, match="not usable") as error:
        search.LatencyModel.profile(
            supernet, seq_len=16, num_threads=1, num_train=5, num_test=2, max_error=1e-9
        )
    assert "quieter machine" in str(error.value) and error.value.model.held_out_error > 1e-9


@pytest.mark.host_speed
def test_validation_tells_a_slower_machine_from_a_stale_shape(supernet, latency_model):
    check = latency_model.validate(supernet, policy=LOGIC)
    assert not check.stale, check.describe()
    data = latency_model.to_dict()
    for record in data["measurements"]:
        record["measured_ms"] *= 3  # profiled on a machine three times slower
    slower = search.LatencyModel.from_dict(data).validate(supernet, policy=LOGIC)
    # against the check just made, not the fixture's profile: a shared host's speed drifts
    assert slower.moved and slower.scale / check.scale == pytest.approx(1 / 3, rel=0.3)
    data = latency_model.to_dict()
    for record in data["measurements"]:
        if search.LatencyModel.from_dict(data).space.min_subnet().to_dict() == record["subnet"]:
            record["measured_ms"] *= 3  # the min subnet alone: the shape changed
    assert search.LatencyModel.from_dict(data).validate(supernet, policy=LOGIC).stale


def test_rescaled_model_multiplies_every_prediction(supernet, latency_model):
    scaled = latency_model.rescaled(1.5)
    for subnet in (supernet.space.max_subnet(), supernet.space.min_subnet()):
        assert scaled(subnet) == pytest.approx(1.5 * latency_model(subnet))
    assert scaled.anchors_ms() == latency_model.anchors_ms()  # measurements stay as profiled


def test_budget_fraction_is_checked_by_the_paired_share(supernet, latency_model, tmp_path):
    result = search.run(
        supernet,
        evaluate=neg_loss,
        latency=latency_model,
        budget_fraction=0.9,
        trials=6,
        out_dir=tmp_path,
        policy=LOGIC,
    )
    assert result.budget_fraction == 0.9 and result.teacher_ms > 0
    assert result.best is not None and result.best.share <= 0.9
    best = result.best
    assert best.speedup_low <= best.speedup <= best.speedup_high
    assert best.speedup == pytest.approx(1 / best.share, rel=0.05)
    assert "the teacher's speed (paired, 95% interval)" in result.message
    saved = json.loads((tmp_path / "pareto.json").read_text())
    assert saved["budget_fraction"] == 0.9 and saved["validation"]["scale"] > 0
    assert saved["best"]["share_of_teacher"] == best.share


def test_budget_fraction_below_the_smallest_subnet_names_its_share(supernet, latency_model):
    with pytest.raises(ValueError, match="below the smallest subnet's share") as error:
        search.run(
            supernet,
            evaluate=neg_loss,
            latency=latency_model,
            budget_fraction=0.01,
            trials=1,
            policy=LOGIC,
        )
    assert "measured side by side" in str(error.value) and "raise it to at least" in str(
        error.value
    )


def test_exactly_one_budget(supernet, latency_model):
    with pytest.raises(ValueError, match="either budget_ms or budget_fraction"):
        search.run(supernet, evaluate=neg_loss, latency=latency_model, trials=1)
    with pytest.raises(ValueError, match=r"budget_fraction must be in \(0, 1\]"):
        search.run(
            supernet, evaluate=neg_loss, latency=latency_model, budget_fraction=2.0, trials=1
        )


def test_onnxruntime_latency_is_measured_recorded_and_refused_for_eager(supernet, tmp_path):
    pytest.importorskip("onnxruntime")
    model = search.LatencyModel.profile(
        supernet,
        seq_len=16,
        num_threads=1,
        num_train=5,
        num_test=2,
        runtime="onnxruntime",
        max_error=None,
        policy=LOGIC,
    )
    model.save(tmp_path / "ort.json")
    saved = json.loads((tmp_path / "ort.json").read_text())
    assert saved["target"]["runtime"] == "onnxruntime"
    assert all(r["measured_ms"] > 0 for r in saved["measurements"])
    eager = search.LatencyTarget(seq_len=16, num_threads=1)
    with pytest.raises(ValueError, match="onnxruntime, not cpu float32 batch 1 seq 16 1 threads:"):
        search.LatencyModel.load(tmp_path / "ort.json", target=eager)
    with pytest.raises(ValueError, match="unknown runtime 'tvm'"):
        search.LatencyTarget(runtime="tvm")


@pytest.mark.slow
def test_compiled_latency_is_measured_and_refused_for_eager(supernet):
    target = search.LatencyTarget(seq_len=16, num_threads=1, runtime="compile")
    family = latency_family("bert")
    small = supernet.extract(supernet.space.min_subnet())
    policy = MeasurePolicy(warmup=2, min_rounds=3, max_rounds=6, refuse_above=0.5)
    paired = measure_paired(
        {"small": small}, family.inputs(supernet, target), target=target, policy=policy
    )
    assert paired.times["small"].value > 0
    assert target.describe().endswith(" compile") and target.to_dict()["runtime"] == "compile"
    assert "runtime" not in search.LatencyTarget().to_dict()  # eager JSON unchanged


@pytest.mark.host_speed
def test_a_profile_that_moved_within_2x_is_rescaled_to_now_and_says_so(supernet, latency_model):
    # Scaled from the anchors measured just now (not from the fixture's profile, made earlier
    # on a machine whose load may have changed since): as if profiled 1.5x slower than now.
    from search._measure import measure_anchors

    now_ms = measure_anchors(supernet, latency_model.target, policy=LOGIC).times["max"].value
    factor = 1.5 * now_ms / latency_model.anchors_ms()[0]
    data = latency_model.to_dict()
    for record in data["measurements"]:
        record["measured_ms"] *= factor
    moved = search.LatencyModel.from_dict(data)
    result = search.run(
        supernet, evaluate=neg_loss, latency=moved, budget_ms=1e6, trials=2, policy=LOGIC
    )
    assert result.validation is not None and result.validation["scale"] < 0.85
    assert any("predictions rescaled to now" in note for note in result.notes), result.notes
    assert result.best is not None


class _OneLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


def test_candidates_move_to_fresh_memory_every_few_rounds_and_the_originals_stay_as_they_were():
    model = _OneLinear().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    address = model.linear.weight.data_ptr()
    seen: list[int] = []

    def record(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        seen.append(module.linear.weight.data_ptr())

    model.register_forward_hook(record)  # copied with the module: every copy reports here
    policy = MeasurePolicy(
        warmup=1, repeats=1, min_rounds=8, max_rounds=8, min_seconds=0.0, replace_every=2
    )
    measure_paired(
        {"m": model}, torch.randn(2, 8), target=search.LatencyTarget(num_threads=1), policy=policy
    )
    assert len(set(seen)) >= 3, "8 rounds, a copy every 2: the weight lay in several places"
    assert model.linear.weight.data_ptr() == address  # the caller's model is not touched
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    seen.clear()
    measure_paired(
        {"m": model},
        torch.randn(2, 8),
        target=search.LatencyTarget(num_threads=1),
        policy=dataclasses.replace(policy, replace_every=0),
    )
    assert set(seen) == {address}
    with pytest.raises(ValueError, match="replace_every"):
        MeasurePolicy(replace_every=-1)


def test_a_figure_a_user_is_shown_spans_the_final_seconds(monkeypatch):
    monkeypatch.setenv("OFA_FINAL_SECONDS", "2.5")
    final = MeasurePolicy(min_seconds=0.5).final()
    assert final.min_seconds == 2.5 and final.max_seconds >= 2.5
    started = time.perf_counter()
    measure_paired(
        {"a": _mlp(16, 1), "b": _mlp(16, 2)},
        torch.randn(2, 16),
        target=search.LatencyTarget(num_threads=1),
        reference="a",
        policy=dataclasses.replace(final, refuse_above=10.0, precision=5.0),
    )
    assert time.perf_counter() - started >= 2.5
    monkeypatch.setenv("OFA_FINAL_SECONDS", "soon")
    with pytest.raises(ValueError, match="OFA_FINAL_SECONDS"):
        MeasurePolicy().final()
