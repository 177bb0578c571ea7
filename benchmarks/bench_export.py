"""Exported MiniLM subnets: CPU latency and size against the teacher; 2:4 accuracy on Rotten Tomatoes.

1. Latency and size. The subnets are the search's (``best`` and the Pareto points of every
   ``runs/**/pareto.json`` that fit the supernet's space) when there are any, else uniform
   subnets at about 75 / 50 / 25 % of the teacher's FLOPs (the table says which). Each is
   exported with ``export.save``, loaded back with ``export.load`` and timed against the exported
   teacher (the max subnet) on the CPU, interleaved round by round; the figures are medians of
   per-round ratios. "speedup / FLOP reduction" is 1.0 when latency falls as fast as FLOPs.
2. 2:4. With the fine-tuned teacher and trained supernet of ``benchmarks/bench_train.py``
   (``runs/bench_train/``), the teacher (the supernet's max subnet) and one smaller subnet are
   exported with 2:4 encoder Linears, before and after a short distillation fine-tune with
   the masks fixed, and their test accuracy on Rotten Tomatoes is measured. On a CPU 2:4 runs
   dense (no CPU kernel), so it changes accuracy, not latency, here.

Usage:
    python benchmarks/bench_export.py                  # about 20-30 min on 2 busy CPU cores
    python benchmarks/bench_export.py --quick --no-write
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import export  # noqa: E402
import ofa  # noqa: E402
from benchmarks._report import markdown_table, write_record  # noqa: E402
from ofa._io import read_json  # noqa: E402
from ofa.space import Subnet  # noqa: E402

log = logging.getLogger("bench_export")
ROOT = Path(__file__).resolve().parent.parent
TARGETS = (0.75, 0.5, 0.25)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-dir", default=str(ROOT / "runs" / "bench_train"))
    parser.add_argument("--runs", default=str(ROOT / "runs"), help="where to look for pareto.json")
    parser.add_argument("--batch-sizes", default="1,8")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3, help="calls timed per model per round")
    parser.add_argument("--sparse-steps", type=int, default=60)
    parser.add_argument("--sparse-lr", type=float, default=5e-5)
    parser.add_argument("--sparse-batch", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=48)
    parser.add_argument("--eval-size", type=int, default=400, help="test rows (0: all 853)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1: on a shared 2-core machine 2 threads ran 7x slower, spinning)",
    )
    parser.add_argument("--part", choices=("latency", "sparse", "all", "gpu"), default="all")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--no-write", action="store_true", help="print only; write no record")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.repeats, args.sparse_steps, args.eval_size = 2, 2, 4, 64
        args.batch_sizes = "1"
    return args


def load_sources(train_dir: Path) -> tuple[ofa.Supernet, object, str]:
    """The trained supernet of bench_train, else its fine-tuned teacher, else the bare MiniLM."""
    from transformers import AutoTokenizer, BertForSequenceClassification

    from ofa.embedded import minilm_path

    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    if (train_dir / "supernet" / "supernet.json").exists():
        supernet = ofa.load_supernet(train_dir / "supernet")
        return supernet, tokenizer, f"trained supernet {train_dir.name}/supernet"
    if (train_dir / "teacher" / "config.json").exists():
        model = BertForSequenceClassification.from_pretrained(train_dir / "teacher")
        return ofa.convert(model), tokenizer, f"fine-tuned teacher {train_dir.name}/teacher"
    model = BertForSequenceClassification.from_pretrained(minilm_path(), num_labels=2)
    return ofa.convert(model), tokenizer, "MiniLM-L6 (untrained classifier head: latency only)"


def search_subnets(
    runs: Path, supernet: ofa.Supernet, *, limit: int = 5
) -> list[tuple[str, Subnet]]:
    """Per search result under ``runs`` (newest first): its ``best``, then its Pareto points."""
    found: dict[Subnet, str] = {}
    for path in sorted(runs.glob("**/pareto.json"), key=lambda p: -p.stat().st_mtime):
        data = read_json(path, what="search result")
        entries = [(f"{path.parent.name} best", data["best"])] if data.get("best") else []
        entries += [(f"{path.parent.name} Pareto #{i}", p) for i, p in enumerate(data["pareto"])]
        for label, point in entries:
            subnet = Subnet.from_dict(point["subnet"])
            if supernet.space.contains(subnet):
                found.setdefault(subnet, label)
    return [(f"search: {label}", subnet) for subnet, label in list(found.items())[:limit]]


def flops_subnets(supernet: ofa.Supernet, seq_len: int) -> list[tuple[str, Subnet]]:
    """Per FLOPs target: the widest-hidden, deepest uniform subnet, and the all-heads shallow one."""
    space = supernet.space
    full = supernet.flops(space.max_subnet(), seq_len=seq_len)
    candidates = space.uniform_subnets()
    chosen = []
    for target in TARGETS:
        ratio = {s: supernet.flops(s, seq_len=seq_len) / full for s in candidates}
        near = [s for s in candidates if abs(ratio[s] - target) <= 0.05 * target] or [
            min(candidates, key=lambda s: abs(ratio[s] - target))
        ]
        best = max(near, key=lambda s: (s.hidden_size, s.depth, -abs(ratio[s] - target)))
        chosen.append((f"{100 * target:.0f}% FLOPs, narrow", best))
        # the same budget spent on fewer, whole layers: a vanilla config, no remote code
        whole = [s for s in candidates if s.num_heads[0] == space.max_num_heads
                 and s.hidden_size == space.max_hidden_size]  # fmt: skip
        shallow = min(whole, key=lambda s: (abs(ratio[s] - target), -s.ffn_dims[0]))
        if shallow != best:
            chosen.append((f"{100 * target:.0f}% FLOPs, shallow", shallow))
    return chosen


def time_interleaved(
    models: dict[str, torch.nn.Module],
    inputs: dict[str, torch.Tensor],
    *,
    rounds: int,
    repeats: int,
) -> dict[str, list[float]]:
    """Per-round median milliseconds of each model, the models taking turns every round."""
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode():
        for model in models.values():
            model(**inputs)  # warm-up
        for _ in range(rounds):
            for name, model in models.items():
                samples = []
                for _ in range(repeats):
                    _sync()
                    start = time.perf_counter()
                    model(**inputs)
                    _sync()
                    samples.append((time.perf_counter() - start) * 1e3)
                times[name].append(sorted(samples)[len(samples) // 2])
    return times


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def bench_latency(
    supernet: ofa.Supernet, tokenizer: object, subnets: list[tuple[str, Subnet]],
    args: argparse.Namespace, work: Path,
) -> list[dict[str, object]]:  # fmt: skip
    teacher = supernet.space.max_subnet()
    entries = [("teacher (max subnet)", teacher), *subnets]
    dirs, models = {}, {}
    for index, (label, subnet) in enumerate(entries):
        dirs[label] = export.save(supernet, subnet, work / f"latency_{index}", tokenizer=tokenizer)
        models[label] = export.load(dirs[label])
    full_flops = supernet.flops(teacher, seq_len=args.seq_len)
    rows = []
    for batch_size in (int(b) for b in args.batch_sizes.split(",")):
        generator = torch.Generator().manual_seed(batch_size)
        vocab = models["teacher (max subnet)"].config.vocab_size
        ids = torch.randint(1000, vocab, (batch_size, args.seq_len), generator=generator)
        inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        times = time_interleaved(models, inputs, rounds=args.rounds, repeats=args.repeats)
        base = times["teacher (max subnet)"]
        for label, subnet in entries:
            speedup = _median([t / s for t, s in zip(base, times[label])])
            reduction = full_flops / supernet.flops(subnet, seq_len=args.seq_len)
            size = (dirs[label] / export.checkpoint.WEIGHTS_FILE).stat().st_size / 2**20
            rows.append({
                "subnet": label,
                "layers / heads / FFN / hidden": _shape(subnet),
                "batch": batch_size,
                "params (M)": f"{supernet.num_params(subnet) / 1e6:.1f}",
                "weights (MiB)": f"{size:.1f}",
                "FLOPs %": f"{100 / reduction:.0f}",
                "latency ms (median)": f"{_median(times[label]):.1f}",
                "speedup": f"{speedup:.2f}x",
                "speedup / FLOP reduction": f"{speedup / reduction:.2f}",
                "loads with": "transformers" if export.fits_vanilla(supernet.space, subnet)
                else "trust_remote_code",
            })  # fmt: skip
            log.info("%s", rows[-1])
    return rows


def _shape(subnet: Subnet) -> str:
    def compact(values: tuple[int, ...]) -> str:
        return str(values[0]) if len(set(values)) == 1 else "/".join(map(str, values))

    return (
        f"{subnet.depth} / {compact(subnet.num_heads)} / {compact(subnet.ffn_dims)} / "
        f"{subnet.hidden_size}"
    )


def bench_sparse(
    supernet: ofa.Supernet, tokenizer: object, subnets: list[tuple[str, Subnet]],
    args: argparse.Namespace, work: Path,
) -> list[dict[str, object]]:  # fmt: skip
    """Test accuracy dense, 2:4 (magnitude masks) and 2:4 after the recovery fine-tune."""
    from ofa.data import load_movie_reviews, make_loader, tokenize
    from ofa.evaluation import accuracy

    task = load_movie_reviews()
    test = task["test"]
    if args.eval_size:
        test = test.select(range(min(args.eval_size, len(test))))
    test = tokenize(test, tokenizer, max_length=args.max_length)
    train = tokenize(task["train"], tokenizer, max_length=args.max_length)
    count = args.sparse_steps * args.sparse_batch
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:count]
    loader = make_loader(train, tokenizer, batch_size=args.sparse_batch, indices=order.tolist())
    batches = [dict(batch) for batch in loader]
    rows = []
    for index, (label, subnet) in enumerate(subnets):
        row: dict[str, object] = {"subnet": label, "layers / heads / FFN / hidden": _shape(subnet)}
        dense = export.save(supernet, subnet, work / f"dense_{index}")
        row["dense acc"] = f"{accuracy(export.load(dense), test):.3f}"
        masked = export.save(
            supernet, subnet, work / f"sparse_{index}", config=export.ExportConfig(sparsity="2:4")
        )
        row["2:4 acc"] = f"{accuracy(export.load(masked), test):.3f}"
        row["2:4 layers"] = len(export.read_manifest(masked)["sparsity"]["layers"])
        config = export.SparsityConfig(
            finetune_steps=args.sparse_steps, learning_rate=args.sparse_lr
        )
        start = time.perf_counter()
        tuned = export.save(
            supernet,
            subnet,
            work / f"tuned_{index}",
            config=export.ExportConfig(sparsity=config),
            finetune_data=batches,
        )
        row[f"2:4 + {args.sparse_steps}-step distill acc"] = (
            f"{accuracy(export.load(tuned), test):.3f}"
        )
        row["fine-tune s"] = f"{time.perf_counter() - start:.0f}"
        rows.append(row)
        log.info("%s", row)
    return rows


def choose_subnets(
    supernet: ofa.Supernet, args: argparse.Namespace
) -> tuple[list[tuple[str, Subnet]], str]:
    found = search_subnets(Path(args.runs), supernet)
    targets = flops_subnets(supernet, args.seq_len)
    chosen_by = (
        "per 75 / 50 / 25 % FLOPs target, the uniform subnet with full hidden width and all "
        "layers (narrow) and the one with all heads and fewer layers (shallow)"
    )
    if found:
        dirs = sorted({p.parent.name for p in Path(args.runs).glob("**/pareto.json")})
        chosen_by = f"the search's best and Pareto subnets ({', '.join(dirs)}), and {chosen_by}"
    else:
        chosen_by = f"no search result under {args.runs}; {chosen_by}"
    return found + [t for t in targets if t[1] not in {s for _, s in found}], chosen_by


def latency_section(supernet: ofa.Supernet, tokenizer: object, source: str,
                    args: argparse.Namespace) -> str:  # fmt: skip
    subnets, chosen_by = choose_subnets(supernet, args)
    with tempfile.TemporaryDirectory(prefix="bench_export_") as tmp:
        rows = bench_latency(supernet, tokenizer, subnets, args, Path(tmp))
    return "\n\n".join([
        f"Source: {source}. Subnets: {chosen_by}. CPU, {args.threads} torch thread(s), fp32, "
        f"sequence length {args.seq_len}, {args.rounds} interleaved rounds of {args.repeats} "
        "calls; latency is the median of per-round medians, speedup the median of per-round "
        "ratios to the exported teacher (the max subnet: the teacher's shape). Each model is "
        "written by `export.save` and read back by `export.load`. The machine is shared with "
        "other benchmarks (load average about 10 on 2 cores): absolute figures are inflated and "
        "move 15-30 % between runs; the ratios move less. `speedup / FLOP reduction` is 1.0 "
        "when latency falls as fast as matmul FLOPs.",
        markdown_table(rows),
        _efficiency_summary(rows),
    ])  # fmt: skip


def _efficiency_summary(rows: list[dict[str, object]]) -> str:
    """Median and range of speedup / FLOP reduction per batch size, teacher excluded."""
    parts = []
    for batch in sorted({int(str(r["batch"])) for r in rows}):
        values = [
            float(str(r["speedup / FLOP reduction"]))
            for r in rows
            if int(str(r["batch"])) == batch and not str(r["subnet"]).startswith("teacher")
        ]
        if values:
            parts.append(f"batch {batch}: median {_median(values):.2f} "
                         f"(range {min(values):.2f}-{max(values):.2f})")  # fmt: skip
    return "Speedup / FLOP reduction of the exported subnets: " + "; ".join(parts) + "."


def sparse_section(supernet: ofa.Supernet, tokenizer: object, source: str,
                   args: argparse.Namespace) -> str:  # fmt: skip
    if source.startswith("MiniLM"):
        return (
            f"2:4 accuracy: not measured (no fine-tuned teacher or trained supernet in "
            f"{args.train_dir}; run benchmarks/bench_train.py first)."
        )
    # the fine-tuned teacher itself; of a trained supernet, its 50 %-FLOPs narrow subnet
    picks = [("teacher", supernet.space.max_subnet())]
    if source.startswith("trained"):
        picks = [flops_subnets(supernet, args.seq_len)[2]]
    with tempfile.TemporaryDirectory(prefix="bench_export_") as tmp:
        rows = bench_sparse(supernet, tokenizer, picks, args, Path(tmp))
    rows_note = f"first {args.eval_size} rows of the" if args.eval_size else "the 853-row"
    return "\n\n".join([
        f"Source: {source}. 2:4 sparsity (magnitude masks on every encoder Linear whose shape "
        "the kernels take; classifier and pooler dense): Rotten Tomatoes accuracy on "
        f"{rows_note} seeded test split of `ofa.data.load_movie_reviews()` (max length "
        f"{args.max_length}) of the dense export, the 2:4 export, and the 2:4 export after a "
        f"distillation fine-tune from the dense export with the masks fixed ({args.sparse_steps} "
        f"steps of {args.sparse_batch} training reviews, lr {args.sparse_lr}, KL at T=2). On "
        "CPU a 2:4 export runs dense: no speedup here; on CUDA >= 8.0 `export.load` converts "
        "the layers whose micro-benchmark wins.",
        markdown_table(rows),
    ])  # fmt: skip


def gpu_section(args: argparse.Namespace) -> str:
    """Dense vs 2:4 end to end (fp16, CUDA) for a BERT-base-shaped model, batch 1 to 256."""
    if not torch.cuda.is_available():
        return "Dense vs 2:4 on CUDA: not run (no CUDA device on this machine)."
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)  # BERT-base shape: 12 layers, hidden 768, 12 heads, FFN 3072
    supernet = ofa.convert(BertForSequenceClassification(BertConfig(num_labels=2))).eval()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_export_") as tmp:
        out = export.save(
            supernet,
            supernet.space.max_subnet(),
            Path(tmp) / "s",
            config=export.ExportConfig(sparsity="2:4"),
        )
        dense = export.load(out, device="cuda", dtype=torch.float16, semi_structured="off")
        sparse = export.load(out, device="cuda", dtype=torch.float16)
        converted = len(sparse.config.ofa_semi_structured_layers)
        for batch_size in (1, 16, 64, 256):
            ids = torch.randint(1000, 30000, (batch_size, args.seq_len), device="cuda")
            inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
            models = {"dense": dense, "2:4": sparse}
            times = time_interleaved(models, inputs, rounds=args.rounds, repeats=10)
            speedup = _median([d / s for d, s in zip(times["dense"], times["2:4"])])
            rows.append({
                "batch": batch_size,
                "dense ms": f"{_median(times['dense']):.2f}",
                "2:4 ms": f"{_median(times['2:4']):.2f}",
                "speedup": f"{speedup:.2f}x",
            })  # fmt: skip
    return (
        f"{torch.cuda.get_device_name()}, fp16, sequence length {args.seq_len}, BERT-base shape "
        f"(random weights); {converted} of 72 encoder Linears converted to "
        "`to_sparse_semi_structured` by the per-layer micro-benchmark at load.\n\n"
        + markdown_table(rows)
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    supernet, tokenizer, source = load_sources(Path(args.train_dir))
    supernet.eval()
    sections = []
    if args.part in ("latency", "all"):
        sections.append(("export", "Export: exported subnets vs teacher on CPU",
                         latency_section(supernet, tokenizer, source, args)))  # fmt: skip
    if args.part in ("sparse", "all"):
        name = "export-2-4-supernet" if source.startswith("trained") else "export-2-4"
        what = "a trained supernet's subnet" if source.startswith("trained") else "the teacher"
        sections.append((name, f"Export: 2:4 sparsity and recovery fine-tune, {what}",
                         sparse_section(supernet, tokenizer, source, args)))  # fmt: skip
    if args.part == "gpu":
        sections.append(("export-2-4-cuda", "Export: dense vs 2:4 on CUDA", gpu_section(args)))
    for name, title, text in sections:
        print(f"## {title}\n\n{text}\n")
        if not args.no_write:
            goals = ("speedup-flops",) if name == "export" else ("sparsity",)
            write_record(name, title, text, goals=goals + (("cuda",) if "cuda" in name else ()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
