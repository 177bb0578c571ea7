"""Profile a supernet's latency model on this CPU and describe its held-out error (shared by the
BERT and CNN latency benchmarks)."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ofa
from benchmarks._report import markdown_table
from search import LatencyModel, MeasuredLatency


def load_average() -> str:
    return os.getloadavg()[0].__format__(".1f") if hasattr(os, "getloadavg") else "?"


def repeat_disagreement(supernet: ofa.Supernet, model: LatencyModel, count: int) -> list[float]:
    """Re-measure held-out subnets: |second - first| / first, the floor of any model's error."""
    measurer = MeasuredLatency(supernet, model.target, warmup=3, rounds=10)
    subnet_type = type(supernet.space.max_subnet())
    tests = [m for m in model.measurements if m["split"] == "test"][:count]
    return [
        abs(measurer(subnet_type.from_dict(m["subnet"])) - m["measured_ms"]) / m["measured_ms"]
        for m in tests
    ]


def profile_report(
    supernet: ofa.Supernet,
    *,
    intro: Callable[[LatencyModel], str],
    out_file: Path,
    num_train: int,
    num_test: int,
    rounds: int,
    busy_load: float,
    goal: float | None = None,
    **profile: Any,
) -> str:
    """Profile on the CPU, save the model to ``out_file`` and return the report's markdown."""
    load_before, start = load_average(), time.time()
    latency = LatencyModel.profile(
        supernet,
        device="cpu",
        num_train=num_train,
        num_test=num_test,
        warmup=3,
        rounds=rounds,
        progress=True,
        **profile,
    )
    profile_s = time.time() - start
    repeat = repeat_disagreement(supernet, latency, min(10, num_test))
    load_after = load_average()
    out_file.parent.mkdir(parents=True, exist_ok=True)
    latency.save(out_file)
    held = latency.held_out
    measured = [m["measured_ms"] for m in latency.measurements]
    rows = [
        {
            "method": m,
            "held-out median abs rel error": f"{100 * held[f'{m}_median_error']:.1f}%",
            "held-out max error": f"{100 * held[f'{m}_max_error']:.1f}%",
            "chosen": "yes" if m == latency.method else "",
        }
        for m in ("table", "predictor")
    ]
    verdict = ""
    if goal is not None:
        met = "met" if latency.held_out_error <= goal else "NOT met"
        verdict = f" (goal <= {100 * goal:.0f}%: {met})"
    busy = (
        "?" in (load_before, load_after) or max(float(load_before), float(load_after)) > busy_load
    )
    shared = (
        ": the CPU was shared with other jobs, so these are upper bounds on the error a quiet "
        "machine would show"
        if busy
        else ": nothing else ran, the machine was quiet"
    )
    took = f"{profile_s:.0f} s" if profile_s < 120 else f"{profile_s / 60:.1f} min"
    return f"""{intro(latency)}

{markdown_table(rows)}

Held-out error of the chosen method: **{100 * latency.held_out_error:.1f}%**{verdict}.

Machine noise while measuring: median IQR/median of one measurement \
{100 * held["median_measurement_spread"]:.1f}%; the same {len(repeat)} held-out subnets measured \
again after profiling differ by a median {100 * statistics.median(repeat):.1f}% (max \
{100 * max(repeat):.1f}%), which bounds what any latency model can reach here. Subnet latencies \
ranged {min(measured):.2f}-{max(measured):.2f} ms. Load average {load_before} at the start, \
{load_after} at the end (2 cores){shared}. Profiling took {took}."""
