"""Measured latency: fields, thread count, interleaved comparison, bad input."""

from __future__ import annotations

import pytest
import torch

from search import LatencyTarget, compare_latency, example_inputs, measure_latency


def test_measure_latency_records_conditions_and_restores_threads(supernet):
    model = supernet.extract(supernet.space.max_subnet())
    inputs = example_inputs(batch_size=2, seq_len=12, vocab_size=100)
    threads = torch.get_num_threads()
    result = measure_latency(model, inputs, device="cpu", warmup=1, rounds=5, num_threads=1)
    assert torch.get_num_threads() == threads
    assert len(result.times_ms) == 5
    assert result.min_ms <= result.median_ms <= result.max_ms
    assert 0 <= result.iqr_ms <= result.max_ms - result.min_ms
    assert (result.batch_size, result.seq_len, result.dtype) == (2, 12, "float32")
    assert result.device == "cpu" and result.device_name.startswith("CPU")
    assert result.torch_version == torch.__version__ and result.num_threads == 1


def test_compare_interleaves_and_small_is_not_slower(supernet):
    space = supernet.space
    models = {
        "max": supernet.extract(space.max_subnet()),
        "min": supernet.extract(space.min_subnet()),
    }
    inputs = example_inputs(batch_size=4, seq_len=32, vocab_size=100)
    results = compare_latency(models, inputs, warmup=1, rounds=6, num_threads=1)
    assert set(results) == {"max", "min"}
    assert all(len(r.times_ms) == 6 for r in results.values())
    # min has 1/3 of the FLOPs; a generous bound keeps a shared machine from flaking
    assert results["min"].median_ms < 1.5 * results["max"].median_ms


def test_measure_does_not_change_the_model_dtype(supernet):
    model = supernet.extract(supernet.space.min_subnet())
    inputs = example_inputs(batch_size=1, seq_len=8, vocab_size=100)
    measure_latency(model, inputs, dtype="bfloat16", warmup=0, rounds=1, num_threads=1)
    assert next(model.parameters()).dtype == torch.float32


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"rounds": 0}, "rounds"),
        ({"dtype": "float8"}, "unknown dtype"),
        ({"warmup": -1}, "warmup"),
    ],
)
def test_bad_measurement_settings(supernet, kwargs, match):
    model = supernet.extract(supernet.space.min_subnet())
    inputs = example_inputs(batch_size=1, seq_len=8, vocab_size=100)
    with pytest.raises(ValueError, match=match):
        measure_latency(model, inputs, **kwargs)


def test_target_rejects_cuda_without_gpu():
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ValueError, match="CUDA is not available"):
        LatencyTarget(device="cuda")


@pytest.mark.gpu
def test_cuda_events_timing(supernet):
    model = supernet.extract(supernet.space.max_subnet())
    inputs = example_inputs(batch_size=2, seq_len=16, vocab_size=100)
    result = measure_latency(model, inputs, device="cuda", dtype="float16", warmup=2, rounds=5)
    assert result.median_ms > 0 and result.dtype == "float16"
    assert result.device_name == torch.cuda.get_device_name(0)
