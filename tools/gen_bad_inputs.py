"""Write docs/BAD_INPUTS.md, the table of bad CLI inputs and what each gets.

The cases live in tests/cli/bad_inputs.py, where a test runs every one of them.
Run: python tools/gen_bad_inputs.py
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "BAD_INPUTS.md"


def render() -> str:
    sys.path.insert(0, str(ROOT))
    from tests.cli.bad_inputs import CASES

    lines = [
        "# Bad inputs and what they get",
        "",
        "Every row is run by `tests/cli/test_bad_inputs.py`: the command exits with code 2 and",
        "prints one line, `ofa COMMAND: error: ...`, containing the text shown, with no traceback",
        "(add `--debug` to see one), and writes nothing. `D` is a directory of test fixtures.",
        "",
        "| bad input | command | the error line contains |",
        "|---|---|---|",
    ]
    for case in CASES:
        command = "ofa " + " ".join(case.argv).replace("{d}", "D")
        message = case.message.replace("{d}", "D").replace("|", "\\|")
        lines.append(f"| {case.what} | `{command}` | {message} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    DOC.write_text(render())
