"""Write a benchmark's figures into its own section of docs/BENCHMARKS.md.

Each benchmark owns the text between ``<!-- BEGIN name -->`` and ``<!-- END name -->``; the file
is rewritten atomically, so several benchmarks can share it. Every section records the command,
the date, the device and the versions it ran with.
"""

from __future__ import annotations

import datetime
import os
import platform
import re
import sys
import tempfile
from pathlib import Path

import torch

DOC = Path(__file__).resolve().parent.parent / "docs" / "BENCHMARKS.md"
_HEADER = "# Benchmarks\n\nFigures written by the scripts in `benchmarks/`; each section names its command.\n"


def environment() -> str:
    import optuna
    import transformers

    if torch.cuda.is_available():
        device = torch.cuda.get_device_name(0)
    else:
        device = f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    return (
        f"{datetime.date.today().isoformat()}; device: {device}; torch threads: "
        f"{torch.get_num_threads()}; python {platform.python_version()}, torch {torch.__version__}, "
        f"transformers {transformers.__version__}, optuna {optuna.__version__}"
    )


def write_section(name: str, title: str, body: str, *, command: str | None = None) -> None:
    """Replace (or append) the section ``name`` of docs/BENCHMARKS.md.

    Paths under this checkout are written relative to it, as a reader runs them from its root.
    """
    command = command or "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
    section = (
        f"<!-- BEGIN {name} -->\n## {title}\n\n"
        f"Command: `{command}`  \nRun: {environment()}\n\n{body.strip()}\n<!-- END {name} -->"
    ).replace(f"{DOC.parent.parent.as_posix()}/", "")
    text = DOC.read_text() if DOC.exists() else _HEADER
    pattern = re.compile(
        rf"<!-- BEGIN {re.escape(name)} -->.*?<!-- END {re.escape(name)} -->", re.S
    )
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else f"{text}\n{section}\n"
    DOC.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=DOC.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, DOC)


def markdown_table(rows: list[dict[str, object]]) -> str:
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines)
