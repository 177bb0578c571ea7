"""CNN exports: graph + safetensors, BN calibration, ONNX, torch.export, a loader without ofa."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import site
import subprocess
import sys
import textwrap

import pytest
import torch

import export
import ofa
from export.cnn import LOADER_FILE, PROGRAM_FILE
from ofa.cnn_space import CnnSubnet
from ofa.families.cnn import default_space
from ofa.families.cnn_graph import CnnGraph
from tests.export.conftest import make_supernet, vanilla_subnet
from tests.ofa._cnn_nets import home_net, one_thread  # noqa: F401
from tests.tiny import BLOCK_PROJECT

X = torch.randn(4, 1, 16, 16, generator=torch.Generator().manual_seed(7))


@pytest.fixture(scope="module")
def supernet() -> ofa.Supernet:
    net = home_net()
    return ofa.convert(net, default_space(net, image_size=16)).eval()


@pytest.fixture(scope="module")
def subnets(supernet) -> list[CnnSubnet]:
    generator = torch.Generator().manual_seed(3)
    space = supernet.space
    return [space.min_subnet(), space.sample(generator), space.sample(generator)]


def _calibration_batches(count: int = 3) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(11)
    return [
        {"pixel_values": torch.randn(8, 1, 16, 16, generator=generator) * 2 + 0.5}
        for _ in range(count)
    ]


def _supernet_output(supernet: ofa.Supernet, subnet: CnnSubnet, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad(), supernet.using(subnet):
        return supernet.eval()(x)


def test_export_equals_supernet_reloads_and_records_counts(supernet, subnets, tmp_path, caplog):
    for index, subnet in enumerate(subnets):
        with caplog.at_level(logging.WARNING, logger="export.cnn"):
            out = export.save(supernet, subnet, tmp_path / f"cnn{index}")
        assert "max subnet's batch-norm statistics" in caplog.text
        model = export.load(out)
        assert isinstance(model, CnnGraph) and not model.training
        with torch.no_grad():
            got = model(X)
        torch.testing.assert_close(got, _supernet_output(supernet, subnet, X), atol=1e-5, rtol=0)
        manifest = export.read_manifest(out)
        assert manifest["family"] == "cnn" and manifest["architecture"] == "CnnGraph"
        assert CnnSubnet.from_dict(manifest["subnet"]) == subnet
        assert manifest["params"] == supernet.num_params(subnet)
        assert manifest["flops"]["value"] == supernet.flops(subnet)
        assert manifest["flops"]["image_size"] == [16, 16]
        assert manifest["verify"]["reference"] == "supernet" and manifest["verify"]["passed"]
        assert manifest["calibration"] is None and manifest["sparsity"] is None
        expected = {"model.safetensors", "architecture.json", "subnet.json", LOADER_FILE}
        assert set(manifest["files"]) == expected
        rebuilt = CnnGraph.from_dict(json.loads((out / "architecture.json").read_text()))
        assert set(rebuilt.state_dict()) == set(model.state_dict())  # BN stats included
        assert any(k.endswith("running_mean") for k in model.state_dict())
        result = export.verify(out, supernet)
        assert result.passed and result.reference == "supernet" and result.max_abs_diff <= 1e-5


def test_calibration_recomputes_bn_and_verify_uses_the_calibrated_model(
    supernet, subnets, tmp_path
):
    subnet = subnets[1]
    batches = _calibration_batches()
    out = export.save(supernet, subnet, tmp_path / "calibrated", calibration_data=batches)
    model = export.load(out)
    expected = export.extract(supernet, subnet)
    ofa.calibrate_bn_(expected, batches)
    for name, buffer in expected.eval().named_buffers():
        torch.testing.assert_close(model.get_buffer(name), buffer, atol=0, rtol=0)
    with torch.no_grad():
        torch.testing.assert_close(model(X), expected(X), atol=1e-5, rtol=0)
        assert (model(X) - _supernet_output(supernet, subnet, X)).abs().max() > 1e-3
    manifest = export.read_manifest(out)
    assert manifest["calibration"]["batches"] == 3
    assert manifest["calibration"]["supernet_max_abs_diff_before_calibration"] <= 1e-5
    assert manifest["verify"]["reference"] == "calibrated extracted model"
    assert manifest["verify"]["max_abs_diff"] <= 1e-5
    result = export.verify(out, supernet, subnet)
    assert result.reference == "calibrated extracted model" and result.passed
    # the supernet keeps its own statistics: calibrating an export leaves it untouched
    torch.testing.assert_close(
        _supernet_output(supernet, supernet.space.max_subnet(), X),
        home_net()(X).detach(),
        atol=1e-5,
        rtol=0,
    )


def test_onnx_and_torch_export_reproduce_the_subnet(supernet, subnets, tmp_path):
    subnet = subnets[2]
    out = export.save(supernet, subnet, tmp_path / "x", onnx=True, torch_export=True)
    manifest = export.read_manifest(out)
    assert {"model.onnx", PROGRAM_FILE} <= set(manifest["files"])
    assert manifest["torch_export"]["checked"] and manifest["torch_export"]["max_abs_diff"] <= 1e-5
    want = _supernet_output(supernet, subnet, X)  # batch 4: traced with 2
    program = torch.export.load(str(out / PROGRAM_FILE)).module()
    with torch.no_grad():
        torch.testing.assert_close(program(X), want, atol=1e-5, rtol=0)
        torch.testing.assert_close(program(X[:1]), want[:1], atol=1e-5, rtol=0)
    onnxruntime = pytest.importorskip("onnxruntime")
    assert manifest["onnx"]["checked"] and manifest["onnx"]["max_abs_diff"] <= 1e-4
    session = onnxruntime.InferenceSession(str(out / "model.onnx"))
    assert [tuple(i.shape) for i in session.get_inputs()] == [("batch", 1, 16, 16)]
    got = session.run(None, {"pixel_values": X.numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(got), want, atol=1e-4, rtol=0)


# `python -I -S` with only site-packages on sys.path, and a finder that refuses the project's
# packages: the shipped cnn_model.py must rebuild the model with torch + safetensors alone.
_CHILD = BLOCK_PROJECT + textwrap.dedent(
    """
    import importlib.util, json, sys
    import torch

    x = torch.tensor(json.loads(sys.argv[3]))
    results = {}
    for index, directory in enumerate(json.loads(sys.argv[2])):
        name = f"cnn_model_{index}"  # the usual importlib recipe: register, then execute
        spec = importlib.util.spec_from_file_location(name, directory + "/cnn_model.py")
        module = sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        model = module.load_model(directory)
        assert not model.training
        nhwc = module.load_model(directory, channels_last=True)
        convs = [m for m in nhwc.modules() if isinstance(m, torch.nn.Conv2d)]
        assert convs and all(
            c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs
        )
        with torch.no_grad():
            results[directory] = model(x).tolist()
            last = nhwc(x.contiguous(memory_format=torch.channels_last))
            assert (last - model(x)).abs().max() <= 1e-5, "channels-last changed the outputs"
    print("RESULT" + json.dumps(results))
    """
)


def test_shipped_loader_works_without_ofa(supernet, subnets, tmp_path):
    plain = export.save(supernet, subnets[1], tmp_path / "plain")
    calibrated = export.save(
        supernet, subnets[0], tmp_path / "calibrated", calibration_data=_calibration_batches(2)
    )
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)}
    dirs = [str(plain), str(calibrated)]
    completed = subprocess.run(
        [sys.executable, "-I", "-S", "-c", _CHILD, json.dumps(site.getsitepackages()),
         json.dumps(dirs), json.dumps(X.tolist())],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-2000:]
    line = next(x for x in completed.stdout.splitlines() if x.startswith("RESULT"))
    results = json.loads(line[len("RESULT") :])
    for directory in (plain, calibrated):
        with torch.no_grad():
            want = export.load(directory)(X)
        torch.testing.assert_close(torch.tensor(results[str(directory)]), want, atol=1e-5, rtol=0)
    torch.testing.assert_close(
        torch.tensor(results[str(plain)]),
        _supernet_output(supernet, subnets[1], X),
        atol=1e-5,
        rtol=0,
    )


def test_manifest_sha256_catches_a_tampered_file(supernet, subnets, tmp_path, monkeypatch):
    out = export.save(supernet, subnets[0], tmp_path / "t")
    manifest = export.read_manifest(out)
    export.check_files(out, manifest)  # intact
    original = (out / "architecture.json").read_text()
    architecture = json.loads(original)
    architecture["nodes"][-1]["name"] += "_x"
    (out / "architecture.json").write_text(json.dumps(architecture))
    with pytest.raises(ValueError, match="architecture.json is corrupted"):
        export.check_files(out, manifest)
    with pytest.raises(ValueError, match="sha256 mismatch"):
        export.load(out)
    spec = importlib.util.spec_from_file_location("cnn_model_tampered", out / LOADER_FILE)
    assert spec is not None and spec.loader is not None
    loader = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, loader)
    spec.loader.exec_module(loader)
    with pytest.raises(ValueError, match="sha256 mismatch"):
        loader.load_model(out)
    (out / "architecture.json").write_text(original)
    export.load(out)  # intact again
    (out / "subnet.json").unlink()
    with pytest.raises(FileNotFoundError, match="subnet.json is missing"):
        export.check_files(out, manifest)


def test_refusals_name_the_problem(supernet, subnets, tmp_path):
    subnet = subnets[0]
    with pytest.raises(ValueError, match="2:4 sparsity is not supported for CNN exports"):
        export.save(supernet, subnet, tmp_path / "a", sparsity="2:4")
    with pytest.raises(ValueError, match="takes no tokenizer"):
        export.save(supernet, subnet, tmp_path / "b", tokenizer=object())
    with pytest.raises(ValueError, match="pass calibration_data"):
        export.save(supernet, subnet, tmp_path / "c", finetune_data=[])
    bert = make_supernet()
    with pytest.raises(TypeError, match="must be an ofa.CnnSubnet"):
        export.save(supernet, vanilla_subnet(bert), tmp_path / "d")
    with pytest.raises(ValueError, match="BERT-family export has none"):
        export.save(bert, vanilla_subnet(bert), tmp_path / "e", calibration_data=[X])
    with pytest.raises(ValueError, match="torch_export is supported for CNN exports only"):
        export.save(bert, vanilla_subnet(bert), tmp_path / "f", torch_export=True)
    assert not any((tmp_path / name).exists() for name in "abcdef")
    out = export.save(supernet, subnet, tmp_path / "g")
    with pytest.raises(ValueError, match="is a cnn export but the supernet's family is 'bert'"):
        export.verify(out, bert)


def test_a_loaded_graph_runs_a_layer_swapped_in_after_its_first_call_and_pickles(
    supernet, subnets, tmp_path
):
    """The exported graph compiles its nodes once; layers are still looked up on every call,
    so a layer a user swaps in afterwards (as quantization does) is the one that runs, and the
    model survives deepcopy and pickling (a whole-module torch.save)."""
    import copy
    import pickle

    model = export.load(export.save(supernet, subnets[1], tmp_path / "cnn"))
    with torch.no_grad():
        before = model(X)
        conv = next(t for t, layer in model.layers().items() if isinstance(layer, torch.nn.Conv2d))
        parent, _, leaf = conv.rpartition(".")
        owner = model.get_submodule(parent) if parent else model
        original = owner._modules[leaf]
        doubled = copy.deepcopy(original)
        doubled.weight.mul_(2.0)
        if doubled.bias is not None:
            doubled.bias.mul_(2.0)
        owner._modules[leaf] = doubled
        swapped = model(X)
        assert (swapped - before).abs().max() > 1e-3  # the new layer ran
        owner._modules[leaf] = original
        torch.testing.assert_close(model(X), before, atol=0, rtol=0)
        torch.testing.assert_close(copy.deepcopy(model)(X), before, atol=0, rtol=0)
        pickled = pickle.dumps(model)  # a whole-module torch.save pickles it like this
        assert len(pickled) > sum(p.numel() for p in model.parameters()) * 4
