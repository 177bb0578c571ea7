"""Shared fixtures: tiny BERT-family models built from configs; no downloads."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The tests of logic time tiny models (~1 ms calls), whose rounds a shared host (other virtual
# machines on the same cores, invisible from inside) can spread by 40% and more: they accept
# 95% intervals up to 30% (search.timing.noise_bound). The tests of honest measurement
# (tests/cli/test_busy_machine.py, the refusals in tests/search/test_timing.py) set their own.
os.environ.setdefault("OFA_NOISE_BOUND", "0.3")
# A figure a user is shown is measured over at least 10 s (MeasurePolicy.final); the tests of
# logic need 1 s, which keeps the suite's many searches short.
os.environ.setdefault("OFA_FINAL_SECONDS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool:
    """Run the test; again, at most twice, if it failed only by the "too noisy" refusal."""
    from tests._noise import retry_noisy

    args = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    drift = pyfuncitem.get_closest_marker("host_speed") is not None
    retry_noisy(lambda: pyfuncitem.obj(**args), pyfuncitem.nodeid, any_failure=drift)
    return True


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device; none is available")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _modules_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Remote code copied by transformers goes to a temporary folder, not the user's cache."""
    import transformers.dynamic_module_utils as dynamic

    cache = tmp_path_factory.mktemp("hf_modules")
    monkeypatch.setenv("HF_MODULES_CACHE", str(cache))
    monkeypatch.setattr(dynamic, "HF_MODULES_CACHE", str(cache))
