"""Every bad input in tests/cli/bad_inputs.py exits 2 with its one-line message, nothing written."""

from __future__ import annotations

import pytest

from ofa_app.cli import main
from tests.cli.bad_inputs import CASES, build_fixtures


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    directory = tmp_path_factory.mktemp("bad_inputs")
    build_fixtures(directory)
    return directory


def test_there_are_at_least_twenty_cases_across_the_cli():
    assert len(CASES) >= 60
    assert {case.argv[0] for case in CASES} >= {
        "convert",
        "export",
        "profile",
        "search",
        "finetune",
        "train",
        "quickstart",
    }


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.what)
def test_bad_input_gets_one_clear_line_and_exit_2(case, fixtures, capsys):
    before = sorted(p.name for p in fixtures.iterdir())
    argv = [arg.format(d=fixtures) for arg in case.argv]
    assert main(argv) == 2
    ours = [line for line in capsys.readouterr().err.splitlines() if line.startswith("ofa ")]
    assert len(ours) == 1, ours
    assert ours[0].startswith(f"ofa {case.argv[0]}: error: ")
    assert case.message.format(d=fixtures) in ours[0]
    assert "Traceback" not in ours[0]
    assert sorted(p.name for p in fixtures.iterdir()) == before  # nothing written


def test_docs_table_is_current():
    from pathlib import Path

    from tools.gen_bad_inputs import render

    doc = Path(__file__).resolve().parents[2] / "docs" / "BAD_INPUTS.md"
    assert doc.read_text() == render(), "run python tools/gen_bad_inputs.py"
