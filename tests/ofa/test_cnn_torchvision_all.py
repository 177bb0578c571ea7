"""Eighteen torchvision CNNs as supernets (random init, 32 x 32 inputs): every one converts, its
max subnet is the original, its min subnet has at most 40% of the FLOPs, and random subnets
export exactly and load where ofa cannot be imported.

Skipped with the reason where torchvision does not import (PyPI's torchvision needs the torch it
was built for; see DESIGN.md). Run them in a venv with torch 2.14.1 + torchvision 0.29.1.
"""

from __future__ import annotations

import dataclasses
import json
import os
import site
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch

try:
    import torchvision
except Exception as error:  # ImportError, or RuntimeError when built for another torch
    pytest.skip(f"torchvision is not importable here: {error}", allow_module_level=True)

import export
import ofa
from ofa.families.cnn import default_space, elasticity
from tests.ofa._cnn_nets import counted_flops, one_thread, randomize_bn_  # noqa: F401
from tests.tiny import BLOCK_PROJECT

MODELS = [
    "resnet18", "resnet50", "resnext50_32x4d", "wide_resnet50_2", "vgg11_bn", "mobilenet_v2",
    "mobilenet_v3_small", "mobilenet_v3_large", "mnasnet0_5", "efficientnet_b0",
    "efficientnet_v2_s", "regnet_x_400mf", "regnet_y_400mf", "densenet121",
    "shufflenet_v2_x1_0", "squeezenet1_1", "googlenet", "convnext_tiny",
]  # fmt: skip
SIZE = 32
X = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
EXPORTS = 5


class _Converted:
    def __init__(self, name: str, root: Path) -> None:
        torch.manual_seed(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # googlenet's init warning
            model = getattr(torchvision.models, name)(num_classes=10)
        with torch.no_grad():  # ConvNeXt's layer scales start at 1e-6: make its blocks count
            for param_name, param in model.named_parameters():
                if param_name.endswith("layer_scale"):
                    param.uniform_(0.5, 1.5)
        self.model = randomize_bn_(model).eval()
        self.space = default_space(self.model, image_size=SIZE)
        self.supernet = ofa.convert(self.model, self.space).eval()
        generator = torch.Generator().manual_seed(1)
        self.subnets = [self.space.sample(generator) for _ in range(EXPORTS - 1)]
        self.subnets.append(self.space.min_subnet())
        self.root = root / name
        self.exports: dict[str, list[list[float]]] = {}  # directory -> supernet's output


_CACHE: dict[str, _Converted] = {}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("torchvision_exports")


def _converted(name: str, root: Path) -> _Converted:
    if name not in _CACHE:
        _CACHE[name] = _Converted(name, root)
    return _CACHE[name]


@pytest.mark.parametrize("name", MODELS)
def test_converts_exactly_and_shrinks(name: str, root: Path) -> None:
    found = _converted(name, root)
    supernet, space = found.supernet, found.space
    with torch.no_grad():
        torch.testing.assert_close(supernet(X), found.model(X), atol=1e-5, rtol=1e-5)
    small, large = space.min_subnet(), space.max_subnet()
    ratio = supernet.flops(small, batch_size=1) / supernet.flops(large, batch_size=1)
    assert ratio <= 0.4, (name, ratio, elasticity(supernet.model, space).summary())
    assert elasticity(supernet.model, space).fraction >= 0.5


@pytest.mark.parametrize("name", MODELS)
def test_random_subnets_extract_and_export_exactly(name: str, root: Path) -> None:
    found = _converted(name, root)
    supernet = found.supernet
    for index, subnet in enumerate(found.subnets):
        with torch.no_grad(), supernet.using(subnet):
            want = supernet(X)
        small = supernet.extract(subnet).eval()
        with torch.no_grad():
            torch.testing.assert_close(small(X), want, atol=1e-5, rtol=1e-5)
        assert sum(p.numel() for p in small.parameters()) == supernet.num_params(subnet)
        assert counted_flops(small, X) == supernet.flops(subnet, batch_size=X.shape[0])
        directory = export.save(supernet, subnet, found.root / str(index), overwrite=True)
        with torch.no_grad():
            loaded = export.load(directory)(X)
        torch.testing.assert_close(loaded, want, atol=1e-5, rtol=1e-5)
        found.exports[str(directory)] = want.tolist()


@pytest.mark.parametrize("name", ["efficientnet_b0", "convnext_tiny"])
def test_stochastic_depth_runs_in_training_and_drops_with_the_blocks(name: str, root) -> None:
    """torchvision's stochastic_depth is the identity in eval (checked above) and random in
    training; a block the depth drops takes its stochastic depth with it."""
    supernet = _converted(name, root).supernet
    space = supernet.space
    shallow = dataclasses.replace(
        space.max_subnet(), depths=tuple(c[0] for c in space.depth_choices)
    )
    ops = [n.name for n in supernet.model.nodes if n.op == "drop_path"]
    skipped, _ = supernet._family._skips(supernet.model, space, shallow)
    assert ops and set(ops) & skipped and set(ops) - skipped
    supernet.train()
    try:
        outputs = []
        for seed in range(3):
            torch.manual_seed(seed)
            outputs.append(supernet(X))
        assert not all(torch.allclose(outputs[0], other) for other in outputs[1:])
        with supernet.using(shallow):
            supernet(X).sum().backward()
        assert any(p.grad is not None for p in supernet.parameters())
    finally:
        supernet.zero_grad(set_to_none=True)
        supernet.eval()


# `python -I -S` with only site-packages on sys.path and a finder that refuses the project's
# packages: the shipped cnn_model.py must rebuild every export with torch + safetensors alone.
_CHILD = BLOCK_PROJECT + textwrap.dedent(
    """
    import importlib.util, json, sys
    import torch

    x = torch.tensor(json.loads(sys.argv[3]))
    results = {}
    for index, directory in enumerate(json.loads(sys.argv[2])):
        name = f"cnn_model_{index}"
        spec = importlib.util.spec_from_file_location(name, directory + "/cnn_model.py")
        module = sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        with torch.no_grad():
            results[directory] = module.load_model(directory)(x).tolist()
    print("RESULT" + json.dumps(results))
    """
)


def test_exports_load_without_ofa(root: Path, tmp_path: Path) -> None:
    expected: dict[str, list[list[float]]] = {}
    for name in MODELS:
        found = _converted(name, root)
        if len(found.exports) < EXPORTS:
            test_random_subnets_extract_and_export_exactly(name, root)
        expected.update(found.exports)
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)}
    completed = subprocess.run(
        [sys.executable, "-I", "-S", "-c", _CHILD, json.dumps(site.getsitepackages()),
         json.dumps(sorted(expected)), json.dumps(X.tolist())],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    line = next(x for x in completed.stdout.splitlines() if x.startswith("RESULT"))
    results = json.loads(line[len("RESULT") :])
    assert set(results) == set(expected)
    for directory, want in expected.items():
        torch.testing.assert_close(
            torch.tensor(results[directory]), torch.tensor(want), atol=1e-5, rtol=1e-5
        )
