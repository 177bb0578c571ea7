"""The layering holds: `lint-imports` keeps every contract in pyproject.toml, and every module of
ofa is named in them (a new module cannot slip past the contracts)."""

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


def test_every_ofa_module_is_in_a_layer():
    core = set(_contracts()[0]["source_modules"])
    app = set(_contracts()[0]["forbidden_modules"]) - {"search", "export"}
    here = {
        f"ofa.{p.stem}"
        for p in (ROOT / "ofa").iterdir()
        if (p.suffix == ".py" and p.stem != "__init__")
        or (p.is_dir() and (p / "__init__.py").exists())
    }
    assert here - core - app == set(), "name the new module in pyproject's import-linter contracts"
    assert core & app == set()


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
