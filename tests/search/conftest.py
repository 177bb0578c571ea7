from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


from search import LatencyModel  # noqa: E402
from tests._noise import retry_noisy  # noqa: E402
from tests.search._tiny import tiny_supernet  # noqa: E402


@pytest.fixture(scope="session")
def supernet():
    return tiny_supernet()


@pytest.fixture(scope="session")
def latency_model(supernet) -> LatencyModel:
    return retry_noisy(lambda: _profile(supernet), "the tiny supernet's latency model")


def _profile(supernet) -> LatencyModel:
    return LatencyModel.profile(
        supernet,
        device="cpu",
        batch_size=2,
        seq_len=16,
        num_threads=1,
        num_train=8,
        num_test=4,
        warmup=1,
        rounds=3,
    )
