"""The layering holds: `lint-imports` keeps every contract in pyproject.toml (the app above search
and export, both above ofa; no import circles inside a package), and every package is named."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parent.parent


def _contracts() -> list[dict]:
    with open(ROOT / "pyproject.toml", "rb") as handle:
        return tomllib.load(handle)["tool"]["importlinter"]["contracts"]


def test_every_package_is_in_a_layer_and_checked_for_circles():
    """A new top-level package cannot slip past the contracts: each is a layer and an ancestor
    of the acyclic-siblings contract."""
    packages = {
        p.name
        for p in ROOT.iterdir()
        if (p / "__init__.py").exists() and p.name not in ("tests", "benchmarks", "tools")
    }
    (layers,) = [c for c in _contracts() if c["type"] == "layers"]
    (acyclic,) = [c for c in _contracts() if c["type"] == "acyclic_siblings"]
    layered = {name.strip() for layer in layers["layers"] for name in layer.split("|")}
    assert packages == layered, "name the new package in pyproject's import-linter layers"
    assert layers["layers"][0] == "ofa_app" and layers["layers"][-1] == "ofa"
    assert packages <= set(acyclic["ancestors"])


def test_lint_imports_keeps_every_contract():
    if (
        shutil.which("lint-imports") is None
        and not Path(sys.executable).with_name("lint-imports").exists()
    ):
        pytest.skip("import-linter is not installed (pip install import-linter)")
    command = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    result = subprocess.run([command], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout
