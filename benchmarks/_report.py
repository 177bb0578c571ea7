"""Record a benchmark run as data, then regenerate docs/BENCHMARKS.md and its archive.

``write_record`` turns a benchmark's markdown report into one JSON record under
``benchmarks/results/`` (``<date>-<nn>-<name>.json``: the benchmark, the goals it measures, date,
device, torch threads, versions, the command, the figures as blocks, tables as rows with named
columns, and notes) and runs ``tools/gen_benchmarks.py``, which writes docs/BENCHMARKS.md (the
latest figures per goal) and docs/BENCHMARKS_ARCHIVE.md (every run). A new record never replaces
an older one: the older run moves to the archive. Several writes of one series from one process
(a benchmark publishing partial figures as it goes) update that process's record.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import shlex
import sys
from collections.abc import Iterable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tools import gen_benchmarks  # noqa: E402

RESULTS = gen_benchmarks.RESULTS
DOCS = gen_benchmarks.DOCS
_WRITTEN: dict[tuple[str, str], Path] = {}  # (results folder, series) -> this process's record


def environment() -> dict:
    """Date, device, torch threads and versions, as a record holds them."""
    import optuna
    import transformers

    if torch.cuda.is_available():
        device = torch.cuda.get_device_name(0)
    else:
        device = f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    return {
        "date": datetime.date.today().isoformat(),
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "optuna": optuna.__version__,
        },
    }


def _relative(text: str) -> str:
    """Paths under this checkout, relative to it, as a reader runs them from its root."""
    return text.replace(f"{ROOT.as_posix()}/", "")


def write_record(
    name: str,
    title: str,
    body: str,
    *,
    goals: Iterable[str],
    command: str | list[str] | None = None,
    series: str | None = None,
    benchmark: str | None = None,
    notes: Iterable[str] = (),
    results: Path = RESULTS,
    docs: Path = DOCS,
    env: dict | None = None,
) -> Path:
    """Write a run's figures as a record under ``results`` and regenerate the pages in ``docs``.

    ``name`` names the run on the pages; ``series`` (default ``name``) groups the runs that
    succeed one another: the latest of a series is the one the results page quotes. ``goals``
    are ids of ``tools.gen_benchmarks.GOALS``. ``command`` is the command line, or the commands
    in order that made the figures (default: this process's); ``benchmark`` the script's name
    (default: this process's). ``env`` replaces ``environment()`` (date, device, versions).
    Returns the record's path.
    """
    goals = list(goals)
    unknown = [goal for goal in goals if goal not in gen_benchmarks.GOAL_IDS]
    if not goals or unknown:
        raise ValueError(f"goals must be some of {gen_benchmarks.GOAL_IDS}, not {goals}")
    if command is None:
        command = "python " + shlex.join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
    commands = [_relative(c) for c in ([command] if isinstance(command, str) else command)]
    env = env or environment()
    series = series or name
    results = Path(results)
    record = {
        "id": "",
        "benchmark": benchmark or Path(sys.argv[0]).stem,
        "series": series,
        "name": name,
        "title": title,
        "goals": goals,
        "date": env["date"],
        "seq": 0,
        "device": env["device"],
        "torch_threads": env["torch_threads"],
        "versions": env["versions"],
        "command": commands,
        "blocks": gen_benchmarks.parse_markdown(_relative(body)),
        "notes": [_relative(note) for note in notes],
    }
    key = (str(results.resolve()), series)
    path = _WRITTEN.get(key)
    if path is not None and path.exists():  # this process's record of the series: update it
        old = json.loads(path.read_text())
        record["id"], record["seq"] = old["id"], old["seq"]
    else:
        same = [r for r in gen_benchmarks.load_records(results) if r["series"] == series]
        if same and _figures(same[-1]) == _figures(record):  # the same figures written again
            path = results / f"{same[-1]['id']}.json"
            _WRITTEN[key] = path
            gen_benchmarks.write_pages(results, docs)
            return path
        day = [r["seq"] for r in gen_benchmarks.load_records(results) if r["date"] == env["date"]]
        record["seq"] = max(day, default=0) + 1
        safe = re.sub(r"[^\w.-]+", "-", name)
        record["id"] = f"{env['date']}-{record['seq']:02d}-{safe}"
        path = results / f"{record['id']}.json"
    results.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    _WRITTEN[key] = path
    gen_benchmarks.write_pages(results, docs)
    return path


def _figures(record: dict) -> tuple:
    keep = ("benchmark", "name", "title", "goals", "device", "torch_threads", "versions")
    return (*(record[k] for k in keep), record["command"], record["blocks"], record["notes"])


def markdown_table(rows: list[dict[str, object]]) -> str:
    columns = list(dict.fromkeys(c for row in rows for c in row))  # a short row leaves blanks
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)
