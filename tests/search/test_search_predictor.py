"""Latency models: held-out error, JSON round trip, refusal for another device, shape or space."""

from __future__ import annotations

import json

import pytest

from search import LatencyModel, LatencyTarget
from tests.search._tiny import tiny_supernet


def test_profile_reports_held_out_error_and_chooses_the_better_method(latency_model):
    held = latency_model.held_out
    assert held["num_subnets"] == 4
    errors = {m: held[f"{m}_median_error"] for m in ("table", "predictor")}
    assert latency_model.method == min(errors, key=errors.get)
    assert latency_model.held_out_error == errors[latency_model.method]
    splits = [m["split"] for m in latency_model.measurements]
    assert splits.count("train") == 8 and splits.count("test") == 4
    space = latency_model.space
    assert len(latency_model.table) == (
        len(space.num_heads) * len(space.ffn_dims) * len(space.hidden_sizes)
    )
    assert latency_model(space.min_subnet()) > 0


def test_json_round_trip_predicts_the_same(latency_model, supernet, tmp_path):
    path = latency_model.save(tmp_path / "latency.json")
    loaded = LatencyModel.load(path, target=latency_model.target, space=supernet.space)
    same = json.dumps(loaded.to_dict(), sort_keys=True)
    assert same == json.dumps(latency_model.to_dict(), sort_keys=True)
    for subnet in (supernet.space.max_subnet(), supernet.space.min_subnet()):
        assert loaded(subnet) == pytest.approx(latency_model(subnet), rel=1e-12)
        assert loaded.predict_table(subnet) == pytest.approx(latency_model.predict_table(subnet))
        assert loaded.predict_fitted(subnet) == pytest.approx(latency_model.predict_fitted(subnet))


def test_refuses_another_device(latency_model, tmp_path):
    data = latency_model.to_dict()
    data["device_name"] = "NVIDIA H100 80GB HBM3"
    path = tmp_path / "gpu.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="profiled on 'NVIDIA H100.*run `ofa profile`"):
        LatencyModel.load(path)


@pytest.mark.parametrize("change", [{"seq_len": 64}, {"batch_size": 8}, {"dtype": "bfloat16"}])
def test_refuses_another_shape_or_dtype(latency_model, tmp_path, change):
    path = latency_model.save(tmp_path / "latency.json")
    other = LatencyTarget(**{**latency_model.target.to_dict(), **change})
    with pytest.raises(ValueError, match="profiled for cpu float32 batch 2 seq 16"):
        LatencyModel.load(path, target=other)


def test_refuses_another_space(latency_model, tmp_path):
    path = latency_model.save(tmp_path / "latency.json")
    other = tiny_supernet()
    from ofa.space import SearchSpace

    space = SearchSpace.from_dict({**other.space.to_dict(), "depths": [4]})
    with pytest.raises(ValueError, match="another search space"):
        LatencyModel.load(path, space=space)


def test_not_a_latency_model(tmp_path):
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ValueError, match="not an ofa latency model"):
        LatencyModel.load(path)


def test_refit_from_stored_measurements_is_the_same_model(latency_model):
    again = latency_model.refit()
    assert again.method == latency_model.method
    assert again.held_out == pytest.approx(latency_model.held_out)
    subnet = latency_model.space.max_subnet()
    assert again(subnet) == pytest.approx(latency_model(subnet))
    assert (
        min(latency_model.table_scale.values()) > 0 and min(latency_model.fixed_ms.values()) >= 0
    )


class _FewSubnets:
    """A search space of ``n`` subnets (0 the min, n-1 the max)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def max_subnet(self) -> int:
        return self.n - 1

    def min_subnet(self) -> int:
        return 0

    def sample(self, generator) -> int:
        import torch

        return int(torch.randint(self.n, (1,), generator=generator))


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_a_small_space_is_profiled_on_the_subnets_it_has(n, caplog):
    """Fewer subnets than the profile asks for: the ones there are, none twice, some held out
    where there are any left; none left, and the error is measured on the fitted ones (said)."""
    from search._profile import draw_subnets

    train, test = draw_subnets(_FewSubnets(n), num_train=16, num_test=8, seed=0)
    assert len(set(train)) == len(train) and test
    assert set(train) | set(test) == set(range(n))
    if n > 2:
        assert not set(train) & set(test)
    else:
        assert "not held out" in caplog.text
