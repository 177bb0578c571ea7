"""Names: no package shadowed by a function, one meaning per name, frozen configs for search and
export beside TrainConfig, and the former names still working (with a warning) for one release."""

from __future__ import annotations

import importlib
import pkgutil
import warnings

import pytest

import export
import ofa
import search
from export.sparsity import SparsityConfig


@pytest.mark.parametrize("package", ["ofa", "search", "export", "ofa_app"])
def test_no_submodule_is_shadowed_by_an_attribute(package):
    module = importlib.import_module(package)
    for info in pkgutil.iter_modules(module.__path__):
        sub = importlib.import_module(f"{package}.{info.name}")
        if hasattr(module, info.name):
            assert getattr(module, info.name) is sub, f"{package}.{info.name} is not the module"


def test_families_and_training_are_packages_and_convert_is_a_function():
    import ofa.families
    import ofa.training

    assert callable(ofa.families.family_for) and callable(ofa.training.train_)
    assert callable(ofa.convert) and ofa.train_ is ofa.training.train_


def test_the_former_train_name_warns_and_forwards():
    with pytest.warns(DeprecationWarning, match="ofa.train_"):
        with pytest.raises(TypeError):  # forwarded to train_, which needs its arguments
            ofa.train()


def test_the_former_select_layers_name_warns_and_forwards():
    from export.sparsity import select_layers, select_linears
    from tests.tiny import make_model

    model = make_model("bert-cls")
    with pytest.warns(DeprecationWarning, match="select_linears"):
        assert select_layers(model, SparsityConfig()) == select_linears(model, SparsityConfig())


def test_search_config_is_frozen_json():
    config = search.SearchConfig(
        trials=5,
        budget_fraction=0.5,
        target=search.LatencyTarget(seq_len=16, num_threads=1),
        policy=search.MeasurePolicy.quick(),
    )
    assert search.SearchConfig.from_json(config.to_json()) == config
    with pytest.raises(AttributeError):
        config.trials = 6  # type: ignore[misc]
    with pytest.raises(ValueError, match="unknown SearchConfig fields"):
        search.SearchConfig.from_dict({"trials": 1, "budget": 3})
    with pytest.raises(ValueError, match="trials must be an integer >= 0"):
        search.SearchConfig(trials=-1)


def test_export_config_is_frozen_json_and_takes_the_2_4_shorthand():
    config = export.ExportConfig(sparsity="2:4", onnx=True, seq_len=64)
    assert config.sparsity == SparsityConfig()
    assert export.ExportConfig.from_json(config.to_json()) == config
    with pytest.raises(ValueError, match="seq_len must be a positive integer"):
        export.ExportConfig(seq_len=0)
    with pytest.raises(TypeError, match="onnx must be True or False"):
        export.ExportConfig(onnx="yes")  # type: ignore[arg-type]


def test_search_run_keywords_warn_and_config_with_keywords_is_refused():
    from tests.search._tiny import tiny_supernet

    supernet = tiny_supernet()
    latency = search.MeasuredLatency(supernet, search.LatencyTarget(seq_len=8, num_threads=1))
    common = {"evaluate": lambda s, n: 0.0, "latency": latency}
    with pytest.raises(TypeError, match="not both"):
        search.run(supernet, **common, config=search.SearchConfig(trials=0), trials=0)
    with pytest.raises(TypeError, match="unexpected keyword arguments \\['trails'\\]"):
        search.run(supernet, **common, trails=0)
    with pytest.warns(DeprecationWarning, match="pass config=SearchConfig"):
        result = search.run(supernet, **common, trials=0, budget_ms=1e6, remeasure=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        again = search.run(
            supernet,
            **common,
            config=search.SearchConfig(trials=0, budget_ms=1e6, remeasure=False),
        )
    assert result.num_trials == again.num_trials == 0


def test_export_save_keywords_warn_and_config_exports_the_same(tmp_path):
    from tests.search._tiny import tiny_supernet

    supernet = tiny_supernet()
    subnet = supernet.space.min_subnet()
    with pytest.warns(DeprecationWarning, match="pass config=ExportConfig"):
        old = export.save(supernet, subnet, tmp_path / "old", seq_len=16)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        new = export.save(
            supernet, subnet, tmp_path / "new", config=export.ExportConfig(seq_len=16)
        )
    assert export.read_manifest(old)["flops"] == export.read_manifest(new)["flops"]
    with pytest.raises(TypeError, match="not both"):
        export.save(supernet, subnet, tmp_path / "x", config=export.ExportConfig(), onnx=True)
    assert not (tmp_path / "x").exists()
