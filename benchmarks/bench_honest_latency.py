"""Latency on a busy machine: held-out error, and reported speedups against a quiet re-measure.

For a BERT-family supernet (the real MiniLM-L6, seq 64, batch 1; latency does not depend on the
weights) and a CNN (the bench CNN, 28 x 28), under four conditions — quiet, 1 CPU burner
process, 2 burner processes, 2 memory-copying processes (``2m``) — this does what a user's run
does:

1. ``LatencyModel.profile`` with the thread count chosen from the idle cores: its held-out
   median error, or its refusal (too noisy / not usable) as the user would see it;
2. the speedups a search reports: a few subnets measured side by side with the teacher (the max
   subnet) by ``search.measure_paired``, as ``search.run`` re-measures its Pareto front;
3. with the burners stopped, the same subnets measured side by side again on the quiet machine
   at the same thread count: the reference each reported speedup (and the latency model's
   predicted speedup) is held to.

Goals (issue 15): quiet held-out error <= 5%; loaded <= 10% or a refusal; every reported
speedup within 10% of its paired quiet figure.

Example:
    python benchmarks/bench_honest_latency.py            # ~10 minutes on 2 cores
    python benchmarks/bench_honest_latency.py --quick --no-write
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ofa  # noqa: E402
import search  # noqa: E402
from benchmarks._report import write_record  # noqa: E402
from search._families import latency_family  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "runs" / "bench_honest_latency"
BURN = "import time\nend = time.time() + {seconds}\nwhile time.time() < end:\n    pass\n"
# memory-heavy: each process copies 64 MB back and forth, taking caches and memory bandwidth
MEMORY_BURN = (
    "import time\na = bytearray(64 << 20)\nb = bytearray(64 << 20)\n"
    "end = time.time() + {seconds}\nwhile time.time() < end:\n    b[:] = a\n    a[:] = b\n"
)


@contextlib.contextmanager
def burners(count: int, seconds: float = 900, memory: bool = False) -> Iterator[None]:
    """``count`` busy-loop (or, with ``memory``, memory-copying) processes, bounded by
    ``seconds`` and killed on exit."""
    code = (MEMORY_BURN if memory else BURN).format(seconds=seconds)
    procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(count)]
    try:
        if procs:
            time.sleep(1.0)
        yield
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait()
        if procs:
            time.sleep(1.0)


def bert_supernet() -> tuple[Any, dict[str, Any]]:
    from transformers import BertForSequenceClassification

    from ofa.embedded import minilm_path

    model = BertForSequenceClassification.from_pretrained(minilm_path(), num_labels=2).eval()
    supernet = ofa.convert(model).eval()
    space = supernet.space
    subnets = {
        "half depth": space.uniform(
            depth=space.depths[len(space.depths) // 2],
            num_heads=space.num_heads[-1],
            ffn_dim=space.ffn_dims[-1],
            hidden_size=space.hidden_sizes[-1],
        ),
        "half width": space.uniform(
            depth=space.depths[-1],
            num_heads=space.num_heads[len(space.num_heads) // 2],
            ffn_dim=space.ffn_dims[len(space.ffn_dims) // 2],
            hidden_size=space.hidden_sizes[-1],
        ),
        "random": space.sample(torch.Generator().manual_seed(3)),
        "min": space.min_subnet(),
    }
    return supernet, {"subnets": subnets, "seq_len": 64}


def cnn_supernet() -> tuple[Any, dict[str, Any]]:
    from benchmarks.bench_cnn import Teacher
    from ofa.families.cnn import default_space

    teacher = Teacher(16).eval()
    space = default_space(teacher, image_size=28)
    supernet = ofa.convert(teacher, space).eval()
    subnets = {
        "half width": space.scaled(0.5),
        "random": space.sample(torch.Generator().manual_seed(3)),
        "min": space.min_subnet(),
    }
    return supernet, {"subnets": subnets, "seq_len": 1}


def paired_speedups(
    supernet: Any, target: search.LatencyTarget, subnets: dict[str, Any]
) -> tuple[dict[str, Any], bool]:
    """Each subnet's speedup over the teacher, and whether other jobs contended the rounds
    (where ``search.run`` stops as too noisy unless ``allow_busy``)."""
    family = latency_family(supernet.family_name)
    models = {"teacher": supernet.extract(supernet.space.max_subnet())}
    models.update({name: supernet.extract(s) for name, s in subnets.items()})
    paired = search.measure_paired(
        models, family.inputs(supernet, target), target=target, reference="teacher"
    )
    return {name: paired.speedup(name) for name in subnets}, paired.contended


def one_condition(
    family: str, supernet: Any, extra: dict[str, Any], load: str, quick: bool
) -> dict[str, Any]:
    """``load``: a burner count, with ``m`` for memory-copying burners (``"2m"``)."""
    row: dict[str, Any] = {"family": family, "burners": load}
    subnets = extra["subnets"]
    with burners(int(load.rstrip("m")), memory=load.endswith("m")):
        threads = search.choose_threads()
        row["threads"] = threads
        try:
            model = search.LatencyModel.profile(
                supernet,
                seq_len=extra["seq_len"],
                num_threads=threads,
                num_train=8 if quick else 16,
                num_test=4 if quick else 10,
                rounds=5,
                max_error=None,  # the error is what this benchmark reports
            )
            row["held_out_error"] = model.held_out_error
            row["method"] = model.method
            row["refused"] = (
                f"held-out error above the {100 * search.predictor.MAX_ERROR:.0f}% bound"
                if model.held_out_error > search.predictor.MAX_ERROR
                else None
            )
            target = model.target
        except search.TooNoisyError as error:
            row["refused"], model = str(error), None
            target = search.LatencyTarget(seq_len=extra["seq_len"], num_threads=threads)
            target = latency_family(supernet.family_name).resolve_target(supernet, target)
        try:
            reported, row["contended"] = paired_speedups(supernet, target, subnets)
        except search.TooNoisyError as error:
            reported, row["speedup_refused"] = None, str(error)
    quiet, _ = paired_speedups(supernet, target, subnets)  # burners stopped
    row["quiet"] = {n: e.to_dict() for n, e in quiet.items()}
    if reported is not None:
        row["reported"] = {n: e.to_dict() for n, e in reported.items()}
        errors = [abs(reported[n].value - quiet[n].value) / quiet[n].value for n in subnets]
        row["speedup_error_median"] = statistics.median(errors)
        row["speedup_error_max"] = max(errors)
    if model is not None:
        top = model(supernet.space.max_subnet())
        errors = [
            abs(top / model(s) - quiet[n].value) / quiet[n].value for n, s in subnets.items()
        ]
        row["predicted_speedup_error_max"] = max(errors)
    return row


def render(rows: list[dict[str, Any]]) -> str:
    def pct(value: Any) -> str:
        return "-" if value is None else f"{100 * value:.1f}%"

    lines = [
        "| model | burners | threads | profile held-out error | reported speedup vs quiet "
        "paired: median / worst | predicted speedup vs quiet: worst | contended (a search "
        "stops) | refused |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        refused = r.get("refused") or r.get("speedup_refused") or ""
        lines.append(
            f"| {r['family']} | {r['burners']} | {r['threads']} | {pct(r.get('held_out_error'))} "
            f"| {pct(r.get('speedup_error_median'))} / {pct(r.get('speedup_error_max'))} "
            f"| {pct(r.get('predicted_speedup_error_max'))} "
            f"| {'-' if r.get('contended') is None else ('yes' if r['contended'] else 'no')} "
            f"| {refused[:120]} |"
        )
    detail = ["", "Quiet paired speedups (the reference), and what was reported under load:", ""]
    for r in rows:
        quiet = ", ".join(f"{n} {v['value']:.2f}x" for n, v in r["quiet"].items())
        reported = ", ".join(f"{n} {v['value']:.2f}x" for n, v in r.get("reported", {}).items())
        detail.append(
            f"- {r['family']}, {r['burners']} burner(s): quiet {quiet}; reported {reported or '-'}"
        )
    return "\n".join(lines + detail)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer subnets, CNN only")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument(
        "--loads",
        default="0,1,2,2m",
        help="burner counts to run; N m: N memory-copying burners (64 MB each way)",
    )
    args = parser.parse_args()
    loads = [v.strip() for v in args.loads.split(",")]
    for load in loads:
        if not load.rstrip("m").isdigit():
            parser.error(f"--loads: {load!r} is not a burner count such as 2 or 2m")
    families = (
        [("cnn", cnn_supernet)] if args.quick else [("bert", bert_supernet), ("cnn", cnn_supernet)]
    )
    rows = []
    for family, build in families:
        supernet, extra = build()
        for load in loads:
            started = time.perf_counter()
            row = one_condition(family, supernet, extra, load, args.quick)
            row["seconds"] = time.perf_counter() - started
            print(json.dumps(row, default=str), flush=True)
            rows.append(row)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "results.json").write_text(json.dumps(rows, indent=2, default=str))
    body = (
        f"Cores: {os.cpu_count()}; threads chosen from the idle cores before each profile "
        "(`search.choose_threads`); with 1 thread every call is timed by the thread's CPU time. "
        "BERT: the real MiniLM-L6 at seq 64, batch 1; CNN: the bench CNN (width 16) at 28 x 28. "
        "Speedups: teacher (max subnet) over subnet, median of per-round ratios from "
        "`search.measure_paired`; the quiet reference is measured right after the burners stop. "
        "Goals: quiet held-out <= 5%; loaded <= 10% or a refusal; every reported speedup within "
        "10% of its paired quiet figure. The last figure column is the latency model's own "
        "predicted speedup (max over subnet, predicted) against the quiet paired one: the "
        "search never reports it, it re-measures the front side by side with the teacher, "
        "which is why the reported column is held to the goal and this one is not.\n\n"
        + render(rows)
    )
    print(body)
    if not args.no_write:
        write_record(
            "honest_latency",
            "Latency on a busy machine: profile error and reported speedups",
            body,
            goals=("honest-latency",),
        )


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
