"""Write docs/BENCHMARKS.md and docs/BENCHMARKS_ARCHIVE.md from the run records.

Every benchmark run is one JSON record under ``benchmarks/results/`` (written by
``benchmarks/_report.write_record``): the benchmark, the goals it measures, date, device, versions,
the command, its figures as blocks (tables as rows with named columns, text, lists) and any notes
written by hand. The results page holds one section per goal with one table of the headline
figures of the latest run of each series that measures it; the archive page holds every run,
newest first, with its full tables and notes.

Run ``python tools/gen_benchmarks.py`` after adding or editing a record (a benchmark run does it
itself); ``--check`` exits 1 while a page is stale. The output depends on the records only.
"""

from __future__ import annotations

import json
import re
import statistics
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DOCS = ROOT / "docs"
MAIN = "BENCHMARKS.md"
ARCHIVE = "BENCHMARKS_ARCHIVE.md"
REQUIRED = (
    "id",
    "benchmark",
    "series",
    "name",
    "title",
    "goals",
    "date",
    "seq",
    "device",
    "torch_threads",
    "versions",
    "command",
    "blocks",
    "notes",
)
MAX_CELL = 79  # characters in a cell of the results page
RECORD = re.compile(r"\d{4}-\d\d-\d\d-\d{2,}-.+\.json")  # other JSON there is not a record


# --- the goals ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Goal:
    id: str
    title: str  # the section heading on the results page
    target: str  # what counts as met
    columns: tuple[str, ...]  # of the one table, after "run"


GOALS = (
    Goal(
        "exactness",
        "Exactness: the supernet at its max subnet is the original model",
        "max |diff| of the outputs <= 1e-5.",
        ("model", "max abs diff at max subnet", "met?"),
    ),
    Goal(
        "train-step",
        "Training step: the full-size supernet against the original",
        "step-time ratio <= 1.05 (BERT), <= 1.10 (CNN); ratios of candidates timed side by side.",
        ("model", "ratio (median)", "spread", "goal", "met?"),
    ),
    Goal(
        "extract-native",
        "Extracted subnets as fast as native models of their shape",
        "extract / native <= 1.02 for every subnet a vanilla config can express.",
        ("model", "subnets", "extract / native (medians)", "range over rounds", "met?"),
    ),
    Goal(
        "speedup-flops",
        "Speedup tracks FLOP reduction",
        "speedup / FLOP reduction >= 0.9 (median over the subnets; 1.0 is the limit).",
        ("subnets", "count", "median", "range", "met?"),
    ),
    Goal(
        "latency-model",
        "Latency model: held-out error",
        "held-out median relative error <= 5% on the CPU it was profiled on.",
        ("model", "method", "held-out median error", "worst", "re-measure noise", "met?"),
    ),
    Goal(
        "honest-latency",
        "Honest latency on a busy machine",
        "profile error <= 5% quiet, <= 10% loaded (or a refusal); every reported speedup "
        "within 10% of its quiet paired figure.",
        (
            "model",
            "burners",
            "threads",
            "profile error",
            "reported vs quiet: median / worst",
            "met?",
        ),
    ),
    Goal(
        "search-budget",
        "Search: every chosen subnet fits its budget",
        "the chosen subnet of every search, re-measured independently, fits its budget.",
        ("search", "budget ms", "chosen, predicted ms", "re-measured ms", "fits"),
    ),
    Goal(
        "accuracy",
        "Accuracy without retraining, against the teacher and baselines",
        "the 50% FLOPs subnet within 1 point of the teacher, the 25% within 3; ahead of "
        "prune-then-fine-tune of the same shape at equal steps. Mean ± standard error over "
        "seeds.",
        ("model, split", "50% vs teacher", "25% vs teacher", "50% vs baseline", "25% vs baseline"),
    ),
    Goal(
        "sparsity",
        "2:4 sparsity: accuracy after a recovery fine-tune",
        "no target on CPU (a 2:4 export runs dense there); the speedup needs CUDA >= 8.0.",
        ("subnet", "dense acc", "2:4 acc", "2:4 + fine-tune", "fine-tune steps"),
    ),
    Goal(
        "cuda",
        "CUDA: latency, 2:4 kernels and bf16 training on a GPU",
        "the checks of `benchmarks/gpu_check.py` on a CUDA device "
        "(`python benchmarks/gpu_check.py --write-doc`).",
        ("check", "figure", "met?"),
    ),
)
GOAL_IDS = tuple(goal.id for goal in GOALS)


# --- blocks: a benchmark's markdown body as data, and back -------------------------------


def _cells(line: str) -> list[str]:
    inner = line.strip()[2:-2] if line.strip() != "||" else ""
    return [cell.replace("\\|", "|") for cell in inner.split(" | ")]


def _is_table(lines: list[str]) -> bool:
    """A header, a ``|---|`` line and rows, all of the header's width, columns named apart."""
    columns = _cells(lines[0])
    return (
        len(lines) >= 2
        and lines[1] == "|" + "---|" * len(columns)
        and len(set(columns)) == len(columns)
        and all(len(_cells(line)) == len(columns) for line in lines[2:])
    )


def parse_markdown(body: str) -> list[dict]:
    """Split a benchmark's markdown body into blocks: tables (rows with named columns), lists,
    ``###`` headings and text. ``render_blocks`` turns them back into the same markdown."""
    blocks: list[dict] = []
    for chunk in body.strip().split("\n\n"):
        lines = chunk.split("\n")
        kinds = [
            "table"
            if ln.startswith("|")
            else "list"
            if ln.startswith("- ")
            else "heading"
            if ln.startswith("### ")
            else "text"
            for ln in lines
        ]
        start = 0
        for i in range(1, len(lines) + 1):
            if i < len(lines) and (kinds[i] == kinds[start] and kinds[i] != "heading"):
                continue
            group, kind = lines[start:i], kinds[start]
            block: dict = {"type": "text", "text": "\n".join(group)}  # what is not well formed
            if kind == "table" and _is_table(group):
                columns = _cells(group[0])
                rows = [dict(zip(columns, _cells(ln))) for ln in group[2:]]
                block = {"type": "table", "columns": columns, "rows": rows}
            elif kind == "list":
                block = {"type": "list", "items": [ln[2:] for ln in group]}
            elif kind == "heading":
                block = {"type": "heading", "text": group[0][4:]}
            if start:
                block["tight"] = True  # follows the previous block on the next line
            blocks.append(block)
            start = i
    return blocks


def markdown_table(columns: list[str], rows: Iterable[dict]) -> str:
    def esc(value: object) -> str:
        return str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(map(esc, columns)) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(esc(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def render_blocks(blocks: list[dict], *, heading: str = "### ") -> str:
    out = ""
    for block in blocks:
        kind = block["type"]
        if kind == "table":
            text = markdown_table(block["columns"], block["rows"])
        elif kind == "list":
            text = "\n".join(f"- {item}" for item in block["items"])
        elif kind == "heading":
            text = heading + block["text"] if heading else f"**{block['text']}**"
        else:
            text = block["text"]
        out += ("\n" if block.get("tight") else "\n\n") + text if out else text
    return out


# --- records ------------------------------------------------------------------------------


def load_records(results: Path = RESULTS) -> list[dict]:
    """Every record under ``results``, oldest first (date, then order within the day)."""
    paths = sorted(p for p in Path(results).glob("*.json") if RECORD.fullmatch(p.name))
    records = [json.loads(path.read_text()) for path in paths]
    for record in records:
        missing = [key for key in REQUIRED if key not in record]
        if missing:
            raise ValueError(f"record {record.get('id')}: missing {missing}")
    return sorted(records, key=lambda r: (r["date"], r["seq"], r["id"]))


def latest_per_series(records: list[dict]) -> dict[str, dict]:
    latest: dict[str, dict] = {}
    for record in records:  # oldest first, so the last one wins
        latest[record["series"]] = record
    return latest


def slug(heading: str) -> str:
    """GitHub's anchor for a heading (lowercase, punctuation dropped, spaces to hyphens)."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def run_heading(record: dict) -> str:
    return record["id"]


def run_link(record: dict, page: str = ARCHIVE) -> str:
    return f"[{record['name']}]({page}#{slug(run_heading(record))})"


def environment_line(record: dict) -> str:
    versions = ", ".join(f"{name} {version}" for name, version in record["versions"].items())
    threads = record["torch_threads"]
    threads = "" if threads is None else f"torch threads: {threads}; "
    return f"{record['date']}; device: {record['device']}; {threads}{versions}"


def command_text(record: dict) -> str:
    return "`" + "`, then `".join(record["command"]) + "`"


# --- headline figures ---------------------------------------------------------------------


def _tables(record: dict, *columns: str) -> list[tuple[dict, dict | None]]:
    """(table, the block before it) for every table that has all ``columns``."""
    found, previous = [], None
    for block in record["blocks"]:
        if block["type"] == "table" and all(c in block["columns"] for c in columns):
            found.append((block, previous))
        previous = block
    return found


def _table(record: dict, *columns: str) -> dict | None:
    found = _tables(record, *columns)
    return found[0][0] if found else None


def _search(record: dict, pattern: str) -> re.Match | None:
    for block in record["blocks"]:
        if block["type"] == "text":
            match = re.search(pattern, block["text"], re.S)
            if match:
                return match
    return None


def _float(text: str) -> float:
    return float(re.match(r"\s*\**([+-]?[\d.]+(?:e[+-]?\d+)?)", text).group(1))


def _verdict(ok: bool | None) -> str:
    return "-" if ok is None else "met" if ok else "no"


@dataclass
class Row:
    cells: list[str]  # the goal's columns after "run"
    met: list[bool | None]  # the verdicts it holds, for the overview


def _spread(values: list[float], digits: int = 2) -> str:
    return f"{min(values):.{digits}f}-{max(values):.{digits}f}"


def _median(values: list[float]) -> str:
    return f"{statistics.median(values):.2f}"


def _speedup_flops_row(subnets: str, values: list[float]) -> Row:
    """The "speedup tracks FLOP reduction" row of ``values`` (speedup / FLOP reduction)."""
    ok = statistics.median(values) >= 0.9
    return Row([subnets, str(len(values)), _median(values), _spread(values), _verdict(ok)], [ok])


def _bench_supernet(goal: str, record: dict) -> list[Row]:
    rows = []
    step = _table(record, "ratio (median)", "max |diff| @max")
    if goal == "exactness" and step:
        for r in step["rows"]:
            ok = _float(r["max |diff| @max"]) <= 1e-5
            rows.append(Row([r["model"], r["max |diff| @max"], _verdict(ok)], [ok]))
    if goal == "train-step" and step:
        goal_column = next(c for c in step["columns"] if c.startswith("goal"))
        for r in step["rows"]:
            ok = r[goal_column] == "met"
            spread = f"{r['per-round range']} over {r['rounds']} rounds"
            rows.append(
                Row([r["model"], r["ratio (median)"], spread, goal_column[5:], _verdict(ok)], [ok])
            )
    for table, before in _tables(record, "extract / native", "speedup / FLOP reduction"):
        match = re.match(r"\*\*(.+?)\*\*", (before or {}).get("text", ""))
        model = match.group(1) if match else "?"
        if goal == "extract-native":
            cells = [r["extract / native"] for r in table["rows"] if r["extract / native"]]
            medians = [_float(c) for c in cells]
            ranges = [re.search(r"\(([\d.]+)\.\.([\d.]+)", c) for c in cells]
            low, high = (
                min(float(m.group(1)) for m in ranges),
                max(float(m.group(2)) for m in ranges),
            )
            met = [c.endswith("met)") for c in cells]
            rows.append(
                Row(
                    [
                        model,
                        str(len(cells)),
                        _spread(medians, 3),
                        f"{low:.3f}..{high:.3f}",
                        f"{sum(met)}/{len(met)} met",
                    ],
                    met,
                )
            )
        if goal == "speedup-flops":
            values = [
                _float(r["speedup / FLOP reduction"])
                for r in table["rows"]
                if r["FLOP reduction"] != "1.00x"
            ]
            rows.append(_speedup_flops_row(f"{model}, extract() in memory", values))
    return rows


def _bench_export(goal: str, record: dict) -> list[Row]:
    rows = []
    table = _table(record, "speedup / FLOP reduction", "batch")
    if goal == "speedup-flops" and table:
        for batch in dict.fromkeys(r["batch"] for r in table["rows"]):
            values = [
                _float(r["speedup / FLOP reduction"])
                for r in table["rows"]
                if r["batch"] == batch and not r["subnet"].startswith("teacher")
            ]
            rows.append(_speedup_flops_row(f"BERT exports, batch {batch}", values))
    table = _table(record, "dense acc", "2:4 acc")
    if goal == "sparsity" and table:
        tuned = next(c for c in table["columns"] if "distill acc" in c)
        steps = re.search(r"(\d+)-step", tuned).group(1)
        for r in table["rows"]:
            rows.append(Row([r["subnet"], r["dense acc"], r["2:4 acc"], r[tuned], steps], [None]))
    return rows


def _bench_cnn(goal: str, record: dict) -> list[Row]:
    rows = []
    if goal == "train-step":
        match = _search(
            record,
            r"(\d+) interleaved rounds, medians: teacher ([\d.]+) ms, supernet at its max subnet "
            r"([\d.]+) ms: ratio \*\*([\d.]+)\*\* \(goal <= ([\d.]+)\)",
        )
        if match:
            rounds, teacher, supernet, ratio, target = match.groups()
            ok = float(ratio) <= float(target)
            spread = f"medians of {rounds} rounds: {teacher} / {supernet} ms"
            rows.append(
                Row(["CNN (Fashion-MNIST)", ratio, spread, f"<= {target}", _verdict(ok)], [ok])
            )
    if goal == "speedup-flops":
        for table, _ in _tables(record, "speedup / FLOP reduction", "FLOP reduction"):
            batch = next(c for c in table["columns"] if c.startswith("ms (batch"))[4:-1]
            values = [
                _float(r["speedup / FLOP reduction"])
                for r in table["rows"]
                if r["FLOP reduction"] != "1.00x"
            ]
            rows.append(_speedup_flops_row(f"CNN exports, {batch}", values))
    table = _table(record, "FLOP budget", "OFA subnet (no per-subnet training)")
    teacher = _search(record, r"test accuracy \*\*([\d.]+)\*\*")
    if goal == "accuracy" and table and teacher:
        by_budget = {r["FLOP budget"]: r for r in table["rows"]}
        baseline = next(c for c in table["columns"] if c.startswith("prune"))
        cells, met = ["CNN, test, 1 seed"], []
        for budget, limit in (("50%", -1.0), ("25%", -3.0)):
            gap = 100 * (
                _float(by_budget[budget]["OFA subnet (no per-subnet training)"])
                - float(teacher.group(1))
            )
            cells.append(f"{gap:+.1f} ({'met' if gap >= limit else 'not met'})")
            met.append(gap >= limit)
        for budget in ("50%", "25%"):
            gap = 100 * (
                _float(by_budget[budget]["OFA subnet (no per-subnet training)"])
                - _float(by_budget[budget][baseline])
            )
            cells.append(f"{gap:+.1f} ({'ahead' if gap > 0 else 'behind'})")
            met.append(gap > 0)
        rows.append(Row(cells, met))
    return rows


_POOLED = re.compile(
    r"(\d+)% subnet vs teacher: ([+-]?[\d.]+ ± [\d.]+) points(?: \(goal >= [+-]?[\d.]+\): "
    r"(met|NOT met))?(?:; vs baseline ([+-]?[\d.]+ ± [\d.]+) \((\w+))?"
)


def _bench_cnn_export_speed(goal: str, record: dict) -> list[Row]:
    rows = []
    table = _table(record, "speedup / FLOP reduction", "exported / native time")
    if table is None:
        return rows
    model = "ResNet-18 exports"
    if record.get("series", "").endswith("channels-last"):
        model += ", channels-last"
    for batch in dict.fromkeys(r["batch"] for r in table["rows"]):
        # a batch size the run found too noisy has one "not measured" row and no figures
        at = [r for r in table["rows"] if r["batch"] == batch and r["speedup / FLOP reduction"]]
        if not at:
            continue
        if goal == "speedup-flops":
            values = [_float(r["speedup / FLOP reduction"]) for r in at]
            rows.append(_speedup_flops_row(f"{model}, batch {batch}", values))
        if goal == "extract-native":
            rows.append(_native_row(f"{model} (export.load), batch {batch}", at))
    return rows


def _native_row(label: str, rows: list[dict]) -> Row:
    """The "as fast as native" row of table ``rows`` with an exported / native time column
    (median and interval per subnet; met within 2% of the native model)."""
    cells = [r["exported / native time"] for r in rows]
    medians = [_float(c) for c in cells]
    bounds = [re.search(r"\(([\d.]+)\.\.([\d.]+)\)", c) for c in cells]
    met = [m <= 1.02 for m in medians]
    return Row(
        [
            label,
            str(len(cells)),
            _spread(medians, 3),
            f"{min(float(b.group(1)) for b in bounds):.3f}.."
            f"{max(float(b.group(2)) for b in bounds):.3f}",
            f"{sum(met)}/{len(met)} met",
        ],
        met,
    )


def _decoder_speed(model: str) -> Callable[[str, dict], list[Row]]:
    """Prefill and decode rows of a decoder speed table (a "phase" column)."""

    def extract(goal: str, record: dict) -> list[Row]:
        table = _table(record, "speedup / FLOP reduction", "phase")
        if table is None:
            return []
        rows = []
        for phase in dict.fromkeys(r["phase"].split(" ")[0] for r in table["rows"]):
            at = [r for r in table["rows"] if r["phase"].split(" ")[0] == phase]
            if goal == "speedup-flops":
                values = [_float(r["speedup / FLOP reduction"]) for r in at]
                rows.append(_speedup_flops_row(f"{model} exports, {phase}", values))
            if goal == "extract-native" and "exported / native time" in table["columns"]:
                rows.append(_native_row(f"{model} (export.load), {phase}", at))
        return rows

    return extract


def _bench_decoder(goal: str, record: dict) -> list[Row]:
    """bench_decoder's speed rows, and its perplexities in the accuracy table (no goal: the
    accuracy goals are in points of accuracy; the cells give perplexity and its change)."""
    if goal == "speedup-flops":
        return _decoder_speed("Llama from scratch (2.3M)")(goal, record)
    table = _table(record, "params budget", "OFA perplexity (no per-subnet training)")
    teacher = _search(record, r"held-out perplexity \*\*([\d.]+)\*\*")
    if goal != "accuracy" or not table or not teacher:
        return []
    by_budget = {r["params budget"]: r for r in table["rows"]}
    baseline = next(c for c in table["columns"] if c.startswith("prune"))
    ofa = "OFA perplexity (no per-subnet training)"

    def versus(ours: str, theirs: float, words: tuple[str, str]) -> tuple[str, bool | None]:
        change = _float(ours) / theirs - 1
        if not words[0]:
            return f"ppl {_float(ours):.1f} vs {theirs:.1f} ({change:+.0%}, no goal)", None
        ok = change <= 0
        return f"ppl {_float(ours):.1f} vs {theirs:.1f} ({words[0] if ok else words[1]})", ok

    cells, met = ["decoder (params budgets), held-out perplexity, 1 seed"], []
    for against in ("teacher", "baseline"):
        for budget in ("50%", "25%"):
            row = by_budget[budget]
            if against == "teacher":
                cell, ok = versus(row[ofa], float(teacher.group(1)), ("", ""))
            else:
                cell, ok = versus(row[ofa], _float(row[baseline]), ("ahead", "behind"))
            cells.append(cell)
            met.append(ok)
    return [Row(cells, met)]


def _pool_train(goal: str, record: dict) -> list[Row]:
    if goal != "accuracy":
        return []
    splits: dict[str, dict] = {}  # per split heading: seeds pooled, the goal lines by target
    split = None
    for block in record["blocks"]:
        if block["type"] == "heading":
            split = splits.setdefault(block["text"], {"seeds": "?", "items": {}})
        elif split is not None and block["type"] == "table" and block["rows"]:
            match = re.search(r"mean of (\d+)", block["rows"][-1][block["columns"][0]])
            split["seeds"] = match.group(1) if match else split["seeds"]
        elif split is not None and block["type"] == "list":
            for item in block["items"]:
                match = _POOLED.match(item)
                if match:
                    split["items"][match.group(1)] = match.groups()
    if not splits:
        return []
    name = next((s for s in splits if s.startswith("held-out")), list(splits)[-1])
    items, none = splits[name]["items"], (None,) * 5
    if not items:
        return []
    model = "CNN" if record["series"].startswith("cnn") else "BERT"
    cells, met = [f"{model}, {name}, {splits[name]['seeds']} seeds"], []
    for budget in ("50", "25"):
        _, gap, verdict, _, _ = items.get(budget, none)
        if verdict:
            cells.append(f"{gap} ({'met' if verdict == 'met' else 'not met'})")
        else:  # pooled with --no-teacher-goals: the gap to the teacher has no goal
            cells.append(f"{gap} (no goal)" if gap else "-")
        met.append(verdict == "met" if verdict else None)
    for budget in ("50", "25"):
        _, _, _, gap, versus = items.get(budget, none)
        cells.append(f"{gap} ({versus})" if gap else "-")
        met.append(versus == "ahead" if gap else None)
    return [Row(cells, met)]


def _latency(model: str) -> Callable[[str, dict], list[Row]]:
    def extract(goal: str, record: dict) -> list[Row]:
        table = _table(record, "method", "held-out median abs rel error", "chosen")
        if goal != "latency-model" or not table:
            return []
        noise = _search(record, r"differ by a median ([\d.]+%)")
        rows = []
        for r in table["rows"]:
            if r["chosen"] == "yes":
                ok = _float(r["held-out median abs rel error"]) <= 5.0
                rows.append(
                    Row(
                        [
                            model,
                            r["method"],
                            r["held-out median abs rel error"],
                            r["held-out max error"],
                            noise.group(1) if noise else "-",
                            _verdict(ok),
                        ],
                        [ok],
                    )
                )
        return rows

    return extract


def _honest_latency(goal: str, record: dict) -> list[Row]:
    speedups = "reported speedup vs quiet paired: median / worst"
    table = _table(record, "profile held-out error", speedups)
    if goal != "honest-latency" or not table:
        return []
    rows = []
    for r in table["rows"]:
        error = _float(r["profile held-out error"])
        worst = _float(r[speedups].split("/")[-1])
        ok = bool(r["refused"]) or (
            error <= (5.0 if r["burners"] == "0" else 10.0) and worst <= 10.0
        )
        cells = [r["model"], r["burners"], r["threads"], r["profile held-out error"], r[speedups]]
        rows.append(Row([*cells, "refused" if r["refused"] else _verdict(ok)], [ok]))
    return rows


def _bench_search(goal: str, record: dict) -> list[Row]:
    table = _table(record, "search", "budget ms", "fits")
    if goal != "search-budget" or not table:
        return []
    measured = next(c for c in table["columns"] if c.startswith("independent"))
    return [
        Row(
            [r["search"], r["budget ms"], r["predicted ms"], r[measured], r["fits"]],
            [r["fits"] == "yes"],
        )
        for r in table["rows"]
    ]


def _search_extra(record: dict) -> str:
    table = _table(record, "sampler")
    if not table:
        return ""
    last = [c for c in table["columns"] if c.startswith("HV @")][-1]
    values = ", ".join(f"{r['sampler']} {r[last]}" for r in table["rows"])
    return f"Hypervolume after {last[4:]} trials (`{record['name']}`): {values}."


def _gpu_check(goal: str, record: dict) -> list[Row]:
    """One row per part of the GPU check: its summary line, cut to fit a cell."""
    lists = [block for block in record["blocks"] if block["type"] == "list"]
    if goal != "cuda" or not lists:
        return []
    rows = []
    for item in lists[0]["items"]:
        check, _, figure = item.partition(": ")
        figure = figure if len(figure) <= MAX_CELL else figure[: MAX_CELL - 3] + "..."
        ok = None if "met" not in figure and "MISSED" not in figure else "MISSED" not in figure
        if re.match(r"(error|not run|skipped)\b", figure):
            ok = False if figure.startswith("error") else None
        rows.append(Row([check[:MAX_CELL], figure, _verdict(ok)], [ok]))
    return rows


EXTRACTORS: dict[str, Callable[[str, dict], list[Row]]] = {
    "gpu_check": _gpu_check,
    "bench_supernet": _bench_supernet,
    "bench_export": _bench_export,
    "bench_cnn": _bench_cnn,
    "bench_cnn_export_speed": _bench_cnn_export_speed,
    "bench_decoder": _bench_decoder,
    "bench_decoder_speed": _decoder_speed("Llama 124M"),
    "pool_train": _pool_train,
    "bench_latency": _latency("BERT (MiniLM-L6)"),
    "bench_cnn_latency": _latency("CNN (bench CNN)"),
    "bench_honest_latency": _honest_latency,
    "bench_search": _bench_search,
}
EXTRAS: dict[str, Callable[[dict], str]] = {"bench_search": _search_extra}


def headline(goal: Goal, record: dict) -> list[Row]:
    """The rows ``record`` gives ``goal``'s table; none where its figures are not the expected
    ones (a partial run, a changed report): the page then links the run instead."""
    extract = EXTRACTORS.get(record["benchmark"])
    if not extract or goal.id not in record["goals"]:
        return []
    try:
        return extract(goal.id, record)
    except (AttributeError, IndexError, KeyError, StopIteration, TypeError, ValueError):
        return []


def _overview(rows: list[Row]) -> str:
    verdicts = [v for row in rows for v in row.met if v is not None]
    if not rows:
        return "not measured yet"
    if not verdicts:
        return "no target"
    if all(verdicts):
        return "met"
    if not any(verdicts):
        return "not met"
    return f"partly ({sum(verdicts)} of {len(verdicts)} figures)"


# --- the pages ----------------------------------------------------------------------------


def _quoted(records: list[dict]) -> dict[str, list[tuple[Goal, dict, list[Row]]]]:
    """Per goal: (goal, record, rows) for the latest run of each series with headline figures."""
    current = sorted(latest_per_series(records).values(), key=lambda r: (r["date"], r["seq"]))
    current.reverse()  # newest first
    return {
        goal.id: [(goal, r, rows) for r in current if (rows := headline(goal, r))]
        for goal in GOALS
    }


def _by_hand(records: list[dict]) -> list[str]:
    by_hand = [r for r in records if r["benchmark"] == "by-hand"]
    if not by_hand:
        return []
    return [
        "Readings written by hand stay with their runs in the archive; the latest summary by",
        f"hand: {run_link(by_hand[-1])} ({by_hand[-1]['date']}).",
    ]


def render_main(records: list[dict]) -> str:
    quoted = _quoted(records)
    devices = sorted({r["device"] for r in records})
    lines = [
        "# Benchmarks",
        "",
        "Generated by `python tools/gen_benchmarks.py` from the run records in",
        "[`benchmarks/results/`](../benchmarks/results/) (one JSON file per run: benchmark, goals,",
        "date, device, versions, command, figures); do not edit it by hand. Every benchmark in",
        "`benchmarks/` writes a new record and regenerates this page and the archive when it",
        "finishes: rerun the command shown under a table to refresh its figures (`--no-write` to",
        "only print them). Each table quotes the latest run of each series that measures the",
        f"goal; every run, older ones included, is in [the archive]({ARCHIVE}) with its full",
        "tables and notes.",
        "",
        "Machines are noisy: figures are ratios and medians of candidates timed side by side in",
        "one run, with their spread. Devices in the records: " + "; ".join(devices) + ".",
        *_by_hand(records),
        "",
        "## Goals",
        "",
        f"| goal | status | runs quoted | [all runs]({ARCHIVE}#index) |",
        "|---|---|---|---|",
    ]
    for goal in GOALS:
        rows = [row for _, _, found in quoted[goal.id] for row in found]
        link = f"[{goal.id}](#{slug(goal.title)})"
        runs = sum(goal.id in r["goals"] for r in records)
        lines.append(f"| {link} | {_overview(rows)} | {len(quoted[goal.id])} | {runs} |")
    for goal in GOALS:
        lines += ["", f"## {goal.title}", "", f"Goal: {goal.target}", ""]
        entries = quoted[goal.id]
        if not entries:
            runs = [r for r in records if goal.id in r["goals"]]
            lines.append(
                "Not measured yet."
                if not runs
                else "No headline figures: see " + ", ".join(run_link(r) for r in runs[::-1]) + "."
            )
            continue
        lines.append(
            markdown_table(
                ["run", *goal.columns],
                [
                    dict(zip(["run", *goal.columns], [r["name"], *row.cells], strict=True))
                    for _, r, found in entries
                    for row in found
                ],
            )
        )
        extras = [EXTRAS[r["benchmark"]](r) for _, r, _ in entries if r["benchmark"] in EXTRAS]
        if any(extras):
            lines += ["", *[e for e in extras if e]]
        lines.append("")
        for _, r, _ in entries:
            lines.append(f"- {run_link(r)}: {r['title']}. Run {environment_line(r)}.")
            lines.append(f"  Command: {command_text(r)}")
    return "\n".join(lines) + "\n"


def _status(record: dict, records: list[dict], quoted_ids: dict[str, list[str]]) -> str:
    later = [r for r in records if r["series"] == record["series"]]
    if later[-1] is not record:
        newer = later[later.index(record) + 1]
        return f"superseded by [{newer['id']}](#{slug(run_heading(newer))})"
    goals = quoted_ids.get(record["id"])
    if goals:
        links = ", ".join(f"[{g}]({MAIN}#{slug(_goal(g).title)})" for g in goals)
        return f"latest of its series; quoted on the results page under {links}"
    return "latest of its series; not quoted on the results page"


def _goal(goal_id: str) -> Goal:
    return next(goal for goal in GOALS if goal.id == goal_id)


def render_archive(records: list[dict]) -> str:
    quoted_ids: dict[str, list[str]] = {}
    for goal_id, entries in _quoted(records).items():
        for _, r, _ in entries:
            quoted_ids.setdefault(r["id"], []).append(goal_id)
    newest = records[::-1]
    lines = [
        "# Benchmarks: every run",
        "",
        "Generated by `python tools/gen_benchmarks.py` from the run records in",
        "[`benchmarks/results/`](../benchmarks/results/); do not edit it by hand. Every recorded",
        f"run, newest first, with its full tables and notes. [The results page]({MAIN}) quotes",
        "the latest run of each series; a run is superseded once a later run of its series",
        "is recorded.",
        "",
        "## Index",
        "",
        "| run | benchmark | goals | title | status |",
        "|---|---|---|---|---|",
    ]
    for r in newest:
        status = _status(r, records, quoted_ids)
        status = (
            "superseded"
            if status.startswith("superseded")
            else ("quoted" if "; quoted" in status else "latest")
        )
        lines.append(
            f"| [{r['id']}](#{slug(run_heading(r))}) | {r['benchmark']} | "
            f"{', '.join(r['goals'])} | {r['title']} | {status} |"
        )
    lines += ["", "## Runs, newest first"]
    for r in newest:
        script = f"`benchmarks/{r['benchmark']}.py`" if r["benchmark"] != "by-hand" else "by hand"
        lines += [
            "",
            f"### {run_heading(r)}",
            "",
            f"**{r['title']}** ({script}; goals: {', '.join(r['goals'])}; "
            f"{_status(r, records, quoted_ids)})",
            "",
            f"Command: {command_text(r)}  ",
            f"Run: {environment_line(r)}",
        ]
        if r["blocks"]:
            lines += ["", render_blocks(r["blocks"], heading="")]
        for note in r["notes"]:
            lines += ["", note]
    return "\n".join(lines) + "\n"


def write_pages(results: Path = RESULTS, docs: Path = DOCS) -> list[Path]:
    records = load_records(results)
    docs.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in ((MAIN, render_main(records)), (ARCHIVE, render_archive(records))):
        path = docs / name
        tmp = path.with_suffix(".md.tmp")
        tmp.write_text(text)
        tmp.replace(path)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--check" in argv:
        records = load_records()
        stale = [
            name
            for name, text in ((MAIN, render_main(records)), (ARCHIVE, render_archive(records)))
            if not (DOCS / name).exists() or (DOCS / name).read_text() != text
        ]
        if stale:
            print(f"stale: {', '.join(stale)}: run python tools/gen_benchmarks.py")
            return 1
        return 0
    for path in write_pages():
        print(path.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
