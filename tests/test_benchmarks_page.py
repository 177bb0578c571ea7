"""docs/BENCHMARKS.md and its archive are generated from the run records in benchmarks/results/.

The committed pages are what the generator makes of the committed records; every record says
where, when and how it ran; every link lands on a heading; the results page is short, its cells
too; a benchmark run recorded through ``benchmarks._report.write_record`` puts its figures on the
results page and moves the run it replaces to the archive. Nothing here writes the repository's
files: runs are recorded in tmp folders.
"""

from __future__ import annotations

import json
import re
import shutil

import pytest

from tools import gen_benchmarks as gen

DOCS = gen.DOCS
LINK = re.compile(r"\[([^\]]*)\]\(([^)\s]+)\)")
ENV = {
    "date": "2099-01-02",
    "device": "CPU test-machine, 2 cores",
    "torch_threads": 1,
    "versions": {"python": "3.11.7", "torch": "2.13.0+cpu"},
}
LATENCY_BODY = """\
Real MiniLM-L6 supernet (converted), 30 profiled + 30 held-out random extracted subnets.

| method | held-out median abs rel error | held-out max error | chosen |
|---|---|---|---|
| table | {error} | 20.0% | yes |
| predictor | 9.9% | 30.0% |  |

Machine noise while measuring: the same 10 held-out subnets measured again differ by a median \
2.0% (max 9.0%)."""


def _records() -> list[dict]:
    return gen.load_records(gen.RESULTS)


def _headings(text: str) -> list[str]:
    """The anchors GitHub gives the headings of a page (repeats get -1, -2, ...)."""
    seen: dict[str, int] = {}
    anchors = []
    for line in text.splitlines():
        match = re.match(r"#{1,6} (.+)", line)
        if match:
            base = gen.slug(match.group(1))
            anchors.append(base if base not in seen else f"{base}-{seen[base]}")
            seen[base] = seen.get(base, 0) + 1
    return anchors


def _table_cells(text: str) -> list[str]:
    return [
        cell
        for line in text.splitlines()
        if line.startswith("|")
        for cell in re.split(r"(?<!\\)\|", line.strip()[1:-1])
    ]


def test_pages_are_what_the_records_make():
    records = _records()
    stale = "stale: run python tools/gen_benchmarks.py"
    assert (DOCS / gen.MAIN).read_text() == gen.render_main(records), stale
    assert (DOCS / gen.ARCHIVE).read_text() == gen.render_archive(records), stale
    assert gen.main(["--check"]) == 0


def test_every_record_says_where_when_and_how_it_ran():
    paths = sorted(p for p in gen.RESULTS.glob("*.json") if gen.RECORD.fullmatch(p.name))
    assert len(paths) >= 33  # the runs of the notebook page, converted
    ids, order = set(), set()
    for path in paths:
        record = json.loads(path.read_text())
        assert set(gen.REQUIRED) <= set(record), path.name
        assert record["id"] == path.stem and record["id"] not in ids
        assert re.fullmatch(r"\d{4}-\d\d-\d\d", record["date"]) and record["id"].startswith(
            f"{record['date']}-{record['seq']:02d}-"
        )
        assert (record["date"], record["seq"]) not in order
        ids.add(record["id"])
        order.add((record["date"], record["seq"]))
        assert record["device"] and isinstance(record["device"], str)
        assert {"python", "torch"} <= set(record["versions"])
        assert record["command"] and all(isinstance(c, str) and c for c in record["command"])
        assert record["goals"] and set(record["goals"]) <= set(gen.GOAL_IDS)
        assert record["blocks"], path.name
        for block in record["blocks"]:
            assert block["type"] in ("table", "list", "heading", "text")
            if block["type"] == "table":
                assert all(list(row) == block["columns"] for row in block["rows"])
        again = gen.parse_markdown(gen.render_blocks(record["blocks"]))
        assert again == record["blocks"], f"{path.name}: blocks do not survive a round trip"


def test_links_land_on_headings():
    pages = {name: (DOCS / name).read_text() for name in (gen.MAIN, gen.ARCHIVE)}
    anchors = {name: _headings(text) for name, text in pages.items()}
    for name, text in pages.items():
        links = LINK.findall(text)
        assert links, name
        for label, target in links:
            page, _, anchor = target.partition("#")
            if page:
                assert (DOCS / page).exists(), f"{name}: [{label}]({target}): no such file"
            if anchor:
                assert anchor in anchors[page or name], f"{name}: [{label}]({target}): no heading"
    runs = [line for line in pages[gen.ARCHIVE].splitlines() if line.startswith("### ")]
    assert len(runs) == len(set(runs)) == len(_records())  # one unique heading per run


def test_results_page_is_short_with_short_cells():
    text = (DOCS / gen.MAIN).read_text()
    assert len(text.splitlines()) <= 240  # 11 goals over three model families, a row per series
    long = [cell for cell in _table_cells(text) if len(cell.strip()) >= 80]
    assert not long, long
    for goal in gen.GOALS:  # one section per goal, at most one table in it
        section = text.split(f"## {goal.title}\n", 1)[1].split("\n## ", 1)[0]
        assert sum(line.startswith("|---") for line in section.splitlines()) <= 1, goal.id


def test_results_page_quotes_the_latest_run_of_each_series():
    text = (DOCS / gen.MAIN).read_text()
    records = _records()
    latest = gen.latest_per_series(records)
    assert "cnn-converged-teacher" in text  # the later of the two bench_cnn runs
    assert "2026-11-22-05-cnn)" not in text  # the earlier one is in the archive only
    for record in records:
        if latest[record["series"]] is not record:
            assert gen.slug(record["id"]) not in text, record["id"]


def test_every_latest_run_gives_its_goals_headline_figures():
    """A report whose format drifted from what the page reads shows here, not as a gap."""
    no_headline = {("bench_export", "cuda")}  # the CUDA 2:4 table is linked, not quoted
    for record in gen.latest_per_series(_records()).values():
        if record["benchmark"] not in gen.EXTRACTORS:
            continue
        for goal in gen.GOALS:
            if goal.id in record["goals"] and (record["benchmark"], goal.id) not in no_headline:
                rows = gen.EXTRACTORS[record["benchmark"]](goal.id, record)
                assert rows, (record["id"], goal.id)
                assert all(len(row.cells) == len(goal.columns) for row in rows)


def test_write_record_puts_new_figures_on_the_page_and_moves_the_old_run(tmp_path, monkeypatch):
    from benchmarks import _report

    results, docs = tmp_path / "results", tmp_path / "docs"
    shutil.copytree(gen.RESULTS, results, ignore=shutil.ignore_patterns("*.tmp"))
    before = {name: (DOCS / name).read_text() for name in (gen.MAIN, gen.ARCHIVE)}
    monkeypatch.setattr(_report, "_WRITTEN", {})

    path = _report.write_record(
        "latency_model",
        "Latency model: held-out error on CPU",
        LATENCY_BODY.format(error="3.1%"),
        goals=["latency-model"],
        command="python benchmarks/bench_latency.py --rounds 12",
        benchmark="bench_latency",
        results=results,
        docs=docs,
        env=ENV,
    )
    assert path == results / "2099-01-02-01-latency_model.json"
    record = json.loads(path.read_text())
    assert record["command"] == ["python benchmarks/bench_latency.py --rounds 12"]
    table = next(b for b in record["blocks"] if b["type"] == "table")
    assert table["rows"][0] == {
        "method": "table",
        "held-out median abs rel error": "3.1%",
        "held-out max error": "20.0%",
        "chosen": "yes",
    }
    main, archive = (docs / gen.MAIN).read_text(), (docs / gen.ARCHIVE).read_text()
    section = main.split("## Latency model: held-out error\n", 1)[1].split("\n## ", 1)[0]
    assert "| latency_model | BERT (MiniLM-L6) | table | 3.1% | 20.0% | 2.0% | met |" in section
    assert "4.3%" not in section  # the previous run's figure left the page
    assert "#2099-01-02-01-latency_model)" in section and "2026-11-22-03" not in main
    assert "CPU test-machine, 2 cores" in section and "--rounds 12" in section
    old = archive.split("### 2026-11-22-03-latency_model\n", 1)[1].split("\n### ", 1)[0]
    assert "superseded by [2099-01-02-01-latency_model](#2099-01-02-01-latency_model)" in old
    assert "| table | 4.3% | 26.6% | yes |" in old  # its figures are kept there
    assert archive.index("### 2099-01-02-01") < archive.index("### 2026-12-01-01")  # newest first

    # a second run on the same day gets the next number; its figures replace the first's
    monkeypatch.setattr(_report, "_WRITTEN", {})
    second = _report.write_record(
        "latency_model",
        "Latency model: held-out error on CPU",
        LATENCY_BODY.format(error="6.5%"),
        goals=["latency-model"],
        benchmark="bench_latency",
        results=results,
        docs=docs,
        env=ENV,
    )
    assert second.name == "2099-01-02-02-latency_model.json"
    main = (docs / gen.MAIN).read_text()
    assert "| latency_model | BERT (MiniLM-L6) | table | 6.5% | 20.0% | 2.0% | no |" in main
    overview = next(line for line in main.splitlines() if line.startswith("| [latency-model]("))
    assert "| partly (1 of 2 figures) | 2 | 5 |" in overview
    # the repository's own pages are untouched
    assert before == {name: (DOCS / name).read_text() for name in (gen.MAIN, gen.ARCHIVE)}


def test_one_process_updates_its_own_record(tmp_path, monkeypatch):
    """A benchmark that publishes partial figures as it goes leaves one record, the last."""
    from benchmarks import _report

    monkeypatch.setattr(_report, "_WRITTEN", {})
    results, docs = tmp_path / "results", tmp_path / "docs"
    for error in ("8.0%", "4.0%"):
        _report.write_record(
            "latency_model",
            "Latency model: held-out error on CPU",
            LATENCY_BODY.format(error=error),
            goals=["latency-model"],
            benchmark="bench_latency",
            results=results,
            docs=docs,
            env=ENV,
        )
    assert [p.name for p in results.glob("*.json")] == ["2099-01-02-01-latency_model.json"]
    assert "| 4.0% |" in (docs / gen.MAIN).read_text()
    assert "8.0%" not in (docs / gen.ARCHIVE).read_text()
    # the same figures written again by another process add no record
    monkeypatch.setattr(_report, "_WRITTEN", {})
    _report.write_record(
        "latency_model",
        "Latency model: held-out error on CPU",
        LATENCY_BODY.format(error="4.0%"),
        goals=["latency-model"],
        benchmark="bench_latency",
        command=json.loads(next(results.glob("*.json")).read_text())["command"],
        results=results,
        docs=docs,
        env=ENV,
    )
    assert len(list(results.glob("*.json"))) == 1


def test_write_record_refuses_unknown_goals(tmp_path):
    from benchmarks import _report

    with pytest.raises(ValueError, match="goals"):
        _report.write_record("x", "X", "text", goals=["fast"], results=tmp_path, env=ENV)
    with pytest.raises(ValueError, match="goals"):
        _report.write_record("x", "X", "text", goals=[], results=tmp_path, env=ENV)
    assert not list(tmp_path.iterdir())


def test_gpu_check_record_fills_the_cuda_goal(tmp_path, monkeypatch):
    from benchmarks import _report

    monkeypatch.setattr(_report, "_WRITTEN", {})
    body = (
        "Mode: full; model: MiniLM-L6; device: NVIDIA H200; run took 300 s.\n\n"
        "- a. latency model: bf16 held-out 1.20% (table, met <= 3%)\n"
        "- d. 2:4 sparsity: error: no kernel\n\n"
        "**a. Latency model, held-out error**\n\n| dtype | held-out median error |\n|---|---|\n"
        "| bf16 | 1.20% |"
    )
    _report.write_record(
        "gpu_check",
        "GPU check (CUDA readiness)",
        body,
        goals=["cuda"],
        benchmark="gpu_check",
        results=tmp_path / "results",
        docs=tmp_path / "docs",
        env={**ENV, "device": "NVIDIA H200"},
    )
    main = (tmp_path / "docs" / gen.MAIN).read_text()
    section = main.split("## CUDA: ", 1)[1]
    assert (
        "| gpu_check | a. latency model | bf16 held-out 1.20% (table, met <= 3%) | met |"
        in section
    )
    assert "| gpu_check | d. 2:4 sparsity | error: no kernel | no |" in section
    assert "Not measured yet" not in section


def test_markdown_round_trip_keeps_every_line():
    body = (
        "Intro line one\nline two.\n\n| a | max |diff| | c |\n|---|---|---|\n| 1 |  | x |\n\n"
        "Goals:\n- first\n- second\n\nTimings: 3 s\nReading: by hand.\n\n### val\n\n"
        "| run | v |\n|---|---|\n| s0 | +0.1 |"
    )
    blocks = gen.parse_markdown(body)
    assert blocks[1] == {
        "type": "table",
        "columns": ["a", "max |diff|", "c"],
        "rows": [{"a": "1", "max |diff|": "", "c": "x"}],
    }
    assert gen.render_blocks(blocks).replace("\\|", "|") == body
    assert gen.parse_markdown(gen.render_blocks(blocks)) == blocks
    ragged = gen.parse_markdown("| a | b |\n|---|---|\n| 1 |")  # kept, as text
    assert ragged == [{"type": "text", "text": "| a | b |\n|---|---|\n| 1 |"}]
