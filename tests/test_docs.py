"""The generated docs are current: docs/API.md matches the packages' public names."""

from __future__ import annotations

from tools.gen_api import DOC, render


def test_api_reference_is_current():
    assert DOC.read_text() == render(), "public API changed: run python tools/gen_api.py"
