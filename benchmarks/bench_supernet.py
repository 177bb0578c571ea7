"""Supernet overheads on CPU: training step at max subnet, extracted-subnet latency, FLOP efficiency.

Measures, on the real MiniLM-L6 and on a random BERT-base-shaped model (batch 8, seq 128, fp32,
sdpa attention), side by side in one run, interleaving the candidates round by round:

1. forward+backward time of the supernet at its max subnet / the original model (goal <= 1.05);
2. forward latency of ``supernet.extract(s)`` / a transformers model built natively from a
   vanilla ``BertConfig`` of the same shapes, for three subnets a vanilla config can express
   (goal <= 1.02);
3. speedup of ``extract(s)`` over the full model divided by its FLOP reduction
   (``supernet.flops``), for those subnets and three that need reshaped layers.

Every figure is the median of per-round ratios of candidates timed next to each other; the CPU
is shared, so absolute times drift between rounds while ratios stay put.

Example:
    python benchmarks/bench_supernet.py            # ~10-25 min on 2 shared cores
    python benchmarks/bench_supernet.py --quick --no-write
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the models are local; never wait on a hub

import torch
from torch import nn
from transformers import BertConfig, BertForSequenceClassification, BertModel, PreTrainedModel

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._report import markdown_table, write_record  # noqa: E402
from ofa import SearchSpace, Subnet, Supernet, convert  # noqa: E402
from ofa.embedded import minilm_path  # noqa: E402

BATCH, SEQ, ATTN = 8, 128, "sdpa"
NO_DROPOUT = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
Step = Callable[[], object]


# ---- timing -------------------------------------------------------------------------------
def _time(step: Step, reps: int) -> tuple[float, float]:
    """Wall and process-CPU seconds per call (CPU time is less sensitive to other jobs)."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(reps):
        step()
    return (time.perf_counter() - wall) / reps, (time.process_time() - cpu) / reps


def interleaved(
    groups: list[dict[str, Step]], *, rounds: int, min_sample_s: float, seed: int = 0
) -> dict[str, list[float]]:
    """Seconds per call of every candidate (wall: ``name``, CPU: ``name#cpu``), one per round.

    Each round visits the groups in a shuffled order and times the members of a group next to
    each other, alternating their order from round to round, so paired ratios see the same load.
    The warmup call also sets how many calls make one sample (at least ``min_sample_s``).
    """
    order = random.Random(seed)
    reps: dict[str, int] = {}
    for group in groups:
        for name, step in group.items():
            first, _ = _time(step, 1)  # warmup
            if first < min_sample_s:
                first, _ = _time(step, 1)
            reps[name] = max(1, round(min_sample_s / max(first, 1e-4)))
    samples: dict[str, list[float]] = {n: [] for name in reps for n in (name, f"{name}#cpu")}
    for index in range(rounds):
        for group in order.sample(groups, len(groups)):
            names = list(group) if index % 2 == 0 else list(reversed(group))
            for name in names:
                wall, cpu = _time(group[name], reps[name])
                samples[name].append(wall)
                samples[f"{name}#cpu"].append(cpu)
        print(f"  round {index + 1}/{rounds} done", flush=True)
    return samples


def paired_ratio(samples: dict[str, list[float]], top: str, bottom: str) -> tuple[float, str]:
    """Median of per-round ratios top/bottom, and their min..max as text."""
    ratios = [a / b for a, b in zip(samples[top], samples[bottom])]
    return statistics.median(ratios), f"{min(ratios):.3f}..{max(ratios):.3f}"


def ms(samples: list[float]) -> str:
    return f"{1000 * statistics.median(samples):.0f}"


# ---- models -------------------------------------------------------------------------------
@dataclass
class Case:
    """One model under test: its plain form, its supernet, and the subnets to time."""

    name: str
    model: PreTrainedModel
    supernet: Supernet
    vanilla: dict[str, Subnet]  # subnets a vanilla BertConfig expresses
    others: dict[str, Subnet] = field(default_factory=dict)


def inputs(vocab_size: int, *, labels: bool, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(vocab_size, (BATCH, SEQ), generator=generator)
    batch = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "token_type_ids": torch.zeros_like(ids),
    }
    if labels:
        batch["labels"] = torch.randint(2, (BATCH,), generator=generator)
    return batch


def load_minilm(*, classifier: bool) -> PreTrainedModel:
    """The real MiniLM with dropout off, bare or inside a 2-label sequence classifier."""
    bare = BertModel.from_pretrained(minilm_path(), attn_implementation=ATTN, **NO_DROPOUT)
    if not classifier:
        return bare
    config = BertConfig.from_dict({**bare.config.to_dict(), "num_labels": 2})
    config.classifier_dropout = 0.0
    torch.manual_seed(0)
    model = BertForSequenceClassification._from_config(config, attn_implementation=ATTN)
    model.bert.load_state_dict(bare.state_dict(), strict=True)
    return model


def bert_base() -> BertForSequenceClassification:
    config = BertConfig(num_labels=2, classifier_dropout=0.0, **NO_DROPOUT)  # 12 x 768, 12 heads
    torch.manual_seed(0)
    return BertForSequenceClassification._from_config(config, attn_implementation=ATTN)


def native(model: PreTrainedModel, subnet: Subnet) -> PreTrainedModel:
    """A model of ``subnet``'s shapes built from a vanilla BertConfig, random weights."""
    base = model.config
    config = BertConfig(
        vocab_size=base.vocab_size,
        hidden_size=subnet.hidden_size,
        num_hidden_layers=subnet.depth,
        num_attention_heads=subnet.num_heads[0],
        intermediate_size=subnet.ffn_dims[0],
        hidden_act=base.hidden_act,
        max_position_embeddings=base.max_position_embeddings,
        type_vocab_size=base.type_vocab_size,
        layer_norm_eps=base.layer_norm_eps,
        num_labels=getattr(base, "num_labels", 2),
        classifier_dropout=0.0,
        **NO_DROPOUT,
    )
    assert (
        config.hidden_size // config.num_attention_heads
        == base.hidden_size // base.num_attention_heads
    )
    torch.manual_seed(1)
    return type(model)._from_config(config, attn_implementation=ATTN)


def base_space() -> SearchSpace:
    """BERT-base's default space plus hidden 512 / 8 heads / FFN 2048 (vanilla-expressible)."""
    default = SearchSpace.default(
        num_layers=12, max_num_heads=12, head_dim=64, max_ffn_dim=3072, max_hidden_size=768
    )
    data = default.to_dict()
    data["num_heads"] = sorted({*default.num_heads, 8})
    data["ffn_dims"] = sorted({*default.ffn_dims, 2048})
    data["hidden_sizes"] = sorted({*default.hidden_sizes, 512})
    return SearchSpace.from_dict(data)


def uniform_subnets(
    space: SearchSpace, shapes: dict[str, tuple[int, int, int, int]]
) -> dict[str, Subnet]:
    """Named uniform subnets from (depth, heads, ffn_dim, hidden_size)."""
    return {
        name: space.uniform(depth=d, num_heads=h, ffn_dim=f, hidden_size=w)
        for name, (d, h, f, w) in shapes.items()
    }


def make_case(
    name: str, model: PreTrainedModel, space: SearchSpace | None, vanilla: dict, others: dict
) -> Case:
    supernet = convert(model, space)
    return Case(
        name=name,
        model=model,
        supernet=supernet,
        vanilla=uniform_subnets(supernet.space, vanilla),
        others={
            **uniform_subnets(supernet.space, others.get("uniform", {})),
            **others.get("raw", {}),
        },
    )


def minilm_cases() -> list[Case]:
    bare = make_case(
        "MiniLM-L6 (BertModel)",
        load_minilm(classifier=False),
        None,
        {
            "3 layers": (3, 12, 1536, 384),
            "FFN 768": (6, 12, 768, 384),
            "4 layers, hidden 288 (9x32), FFN 1152": (4, 9, 1152, 288),
        },
        {"uniform": {"6 heads (attn 192 < hidden 384)": (6, 6, 1536, 384)}},
    )
    space = bare.supernet.space
    bare.others["min subnet"] = space.min_subnet()
    bare.others["sampled (seed 0)"] = space.sample(torch.Generator().manual_seed(0))
    cls = make_case("MiniLM-L6 + 2-label head", load_minilm(classifier=True), None, {}, {})
    return [bare, cls]


def base_case() -> Case:
    case = make_case(
        "BERT-base shape, random",
        bert_base(),
        base_space(),
        {
            "6 layers": (6, 12, 3072, 768),
            "FFN 1536": (12, 12, 1536, 768),
            "8 layers, hidden 512 (8x64), FFN 2048": (8, 8, 2048, 512),
        },
        {"uniform": {"6 heads (attn 384 < hidden 768)": (12, 6, 3072, 768)}},
    )
    space = case.supernet.space
    case.others["min subnet"] = space.min_subnet()
    case.others["sampled (seed 0)"] = space.sample(torch.Generator().manual_seed(0))
    return case


# ---- the three measurements ---------------------------------------------------------------
def train_step(module: nn.Module, batch: dict[str, torch.Tensor]) -> Step:
    module.train()  # dropout probabilities are 0, so train and eval compute the same

    def step() -> None:
        out = module(**batch)
        if "labels" in batch:
            loss = out.loss
        else:
            loss = out.last_hidden_state.square().mean() + out.pooler_output.square().mean()
        loss.backward()
        module.zero_grad(set_to_none=True)

    return step


def forward_step(module: nn.Module, batch: dict[str, torch.Tensor]) -> Step:
    module.eval()

    def step() -> None:
        with torch.inference_mode():
            module(**batch)

    return step


def max_subnet_diff(case: Case) -> float:
    batch = inputs(case.model.config.vocab_size, labels=False)
    case.model.eval(), case.supernet.eval()
    with torch.no_grad():
        a, b = case.model(**batch), case.supernet(**batch)
    key = "logits" if "logits" in a else "last_hidden_state"
    return (a[key] - b[key]).abs().max().item()


def bench_train(cases: list[Case], *, rounds: int, min_sample_s: float) -> list[dict[str, object]]:
    groups = []
    for case in cases:
        case.supernet.set_subnet(case.supernet.space.max_subnet())
        batch = inputs(
            case.model.config.vocab_size, labels=case.model.base_model is not case.model
        )
        groups.append(
            {
                f"{case.name}|original": train_step(case.model, batch),
                f"{case.name}|supernet": train_step(case.supernet, batch),
            }
        )
    samples = interleaved(groups, rounds=rounds, min_sample_s=min_sample_s)
    rows = []
    for case in cases:
        ratio, spread = paired_ratio(samples, f"{case.name}|supernet", f"{case.name}|original")
        cpu, cpu_spread = paired_ratio(
            samples, f"{case.name}|supernet#cpu", f"{case.name}|original#cpu"
        )
        rows.append(
            {
                "model": case.name,
                "original fwd+bwd (ms)": ms(samples[f"{case.name}|original"]),
                "supernet @max (ms)": ms(samples[f"{case.name}|supernet"]),
                "ratio (median)": f"{ratio:.3f}",
                "per-round range": spread,
                "ratio, CPU time": f"{cpu:.3f} ({cpu_spread})",
                "rounds": rounds,
                "goal <= 1.05": "met" if ratio <= 1.05 else "MISSED",
                "max |diff| @max": f"{max_subnet_diff(case):.1e}",
            }
        )
    return rows


def describe(subnet: Subnet) -> str:
    def span(values: tuple[int, ...]) -> str:
        return str(values[0]) if len(set(values)) == 1 else f"{min(values)}-{max(values)}"

    return (
        f"L{subnet.depth} H{span(subnet.num_heads)} F{span(subnet.ffn_dims)} D{subnet.hidden_size}"
    )


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def forward_candidates(case: Case, batch: dict[str, torch.Tensor]) -> list[dict[str, Step]]:
    """Groups: the full model alone, each vanilla subnet's extract beside its native twin, the rest."""
    groups = [{"full": forward_step(case.model, batch)}]
    for name, subnet in case.vanilla.items():
        extracted, twin = case.supernet.extract(subnet), native(case.model, subnet)
        if count(extracted) != count(twin):
            raise RuntimeError(
                f"{name}: extract has {count(extracted)} params, native {count(twin)}"
            )
        if extracted.config._attn_implementation != twin.config._attn_implementation:
            raise RuntimeError(f"{name}: attention implementations differ")
        groups.append(
            {
                f"{name}|extract": forward_step(extracted, batch),
                f"{name}|native": forward_step(twin, batch),
            }
        )
    for name, subnet in case.others.items():
        groups.append({f"{name}|extract": forward_step(case.supernet.extract(subnet), batch)})
    return groups


def bench_forward(case: Case, *, rounds: int, min_sample_s: float) -> list[dict[str, object]]:
    batch = inputs(case.model.config.vocab_size, labels=False)
    samples = interleaved(
        forward_candidates(case, batch), rounds=rounds, min_sample_s=min_sample_s
    )
    space = case.supernet.space
    full_flops = case.supernet.flops(space.max_subnet(), batch_size=BATCH, seq_len=SEQ)
    rows = [
        {
            "subnet": "full model (original)",
            "shape": describe(space.max_subnet()),
            "GFLOPs": f"{full_flops / 1e9:.1f}",
            "FLOP reduction": "1.00x",
            "extract (ms)": ms(samples["full"]),
            "native (ms)": "",
            "extract / native": "",
            "same, CPU time": "",
            "speedup vs full": "1.00x",
            "speedup / FLOP reduction": "1.00",
        }
    ]
    for name, subnet in {**case.vanilla, **case.others}.items():
        flops = case.supernet.flops(subnet, batch_size=BATCH, seq_len=SEQ)
        speedup, _ = paired_ratio(samples, "full", f"{name}|extract")
        row = {
            "subnet": name,
            "shape": describe(subnet),
            "GFLOPs": f"{flops / 1e9:.1f}",
            "FLOP reduction": f"{full_flops / flops:.2f}x",
            "extract (ms)": ms(samples[f"{name}|extract"]),
            "native (ms)": "",
            "extract / native": "",
            "same, CPU time": "",
            "speedup vs full": f"{speedup:.2f}x",
            "speedup / FLOP reduction": f"{speedup * flops / full_flops:.2f}",
        }
        if name in case.vanilla:
            ratio, spread = paired_ratio(samples, f"{name}|extract", f"{name}|native")
            verdict = "met" if ratio <= 1.02 else "MISSED"
            row["native (ms)"] = ms(samples[f"{name}|native"])
            cpu, cpu_spread = paired_ratio(samples, f"{name}|extract#cpu", f"{name}|native#cpu")
            row["extract / native"] = f"{ratio:.3f} ({spread}; {verdict})"
            row["same, CPU time"] = f"{cpu:.3f} ({cpu_spread})"
        rows.append(row)
    return rows


# ---- driver -------------------------------------------------------------------------------
ROUNDS = {
    "full": {"minilm": (8, 10), "base": (4, 5)},
    "quick": {"minilm": (3, 3), "base": (2, 2)},
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="few rounds: a smoke run")
    parser.add_argument("--models", default="minilm,base", help="comma list of minilm, base")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (fixed)")
    parser.add_argument(
        "--min-sample-s", type=float, default=0.25, help="least seconds per sample"
    )
    parser.add_argument("--no-write", action="store_true", help="print only; write no record")
    return parser.parse_args()


def run(args: argparse.Namespace, publish: Callable[[list[str], bool, bool], None]) -> None:
    """Run the measurements, publishing the markdown parts after each model."""
    rounds = ROUNDS["quick" if args.quick else "full"]
    keys = [k for k in ("minilm", "base") if k in args.models.split(",")]
    train_rows: list[dict[str, object]] = []
    forward_parts: list[str] = []
    ok = True
    for position, key in enumerate(keys):
        cases = minilm_cases() if key == "minilm" else [base_case()]
        train_rounds, forward_rounds = rounds[key]
        print(f"{key}: forward+backward, {train_rounds} rounds", flush=True)
        rows = bench_train(cases, rounds=train_rounds, min_sample_s=args.min_sample_s)
        ok &= all(r["goal <= 1.05"] == "met" for r in rows)
        train_rows += rows
        print(markdown_table(rows), flush=True)
        print(f"{key}: forward latency, {forward_rounds} rounds", flush=True)
        rows = bench_forward(cases[0], rounds=forward_rounds, min_sample_s=args.min_sample_s)
        ok &= all("MISSED" not in str(r["extract / native"]) for r in rows)
        forward_parts.append(
            f"**{cases[0].name}**, forward, eval, `inference_mode`, {forward_rounds} rounds\n\n"
            + markdown_table(rows)
        )
        print(markdown_table(rows), flush=True)
        del cases
        parts = [
            "### 1. Training step: supernet at max subnet / original model\n\n"
            + markdown_table(train_rows),
            "### 2-3. Extracted subnets: latency vs a native model, and vs FLOPs\n\n"
            + "\n\n".join(forward_parts),
        ]
        publish(parts, ok, position == len(keys) - 1)


INTRO = """\
Batch {batch}, sequence {seq}, fp32, CPU, `torch.set_num_threads({threads})`, sdpa attention,
all-ones attention mask, dropout probabilities 0. The CPU is shared with other jobs (load
average {load_start:.1f} at the start, {load_end:.1f} at the end; run took {minutes:.1f} min), so
absolute times drift by tens of percent between rounds: every ratio is the median of per-round
ratios of candidates timed next to each other (range over rounds in brackets), and the candidates
of a round are visited in shuffled order, pairs in alternating order. Shape: L layers, H heads
per layer, F FFN width, D hidden width. "native" is the same class built from a vanilla
`BertConfig` of the subnet's shapes with random weights. Speedup / FLOP reduction is the
fraction of the analytic (matmul) FLOP saving that shows up as time; 1.0 is the limit.
Goals (issue 2): training step ratio <= 1.05; extract / native <= 1.02. All goals met: {ok}."""

NOTES = """\
Reading: at its max subnet every elastic module takes its dense fast path (`F.linear`,
`F.layer_norm`, `F.embedding` on the unsliced parameters it shares with the model), so the
supernet's training step is the original's up to noise. `extract()` returns the transformers
class itself with contiguous weight copies, so extract / native compares the same code on the
same shapes: deviations from 1.0 are noise. Speedup / FLOP reduction drops below 1 as subnets
shrink because work the matmul FLOP count leaves out does not shrink with it (embedding lookups,
LayerNorm, GELU, softmax and masking over the 128 x 128 scores, per-op dispatch), and narrow
matmuls run further below the CPU's peak; cutting depth or heads keeps most of the saving,
cutting everything to the min subnet the least."""


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    load_start, start = os.getloadavg()[0], time.perf_counter()

    def publish(parts: list[str], ok: bool, done: bool) -> None:
        intro = INTRO.format(
            batch=BATCH,
            seq=SEQ,
            threads=args.threads,
            load_start=load_start,
            load_end=os.getloadavg()[0],
            minutes=(time.perf_counter() - start) / 60,
            ok="yes" if ok else "no",
        )
        if not done:
            intro += "\n\n*Partial: the run is still going (later models missing).*"
        intro += "\n\n" + NOTES
        print(intro, flush=True)
        if not args.no_write:
            write_record(
                "supernet_speed",
                "Supernet overheads (BERT, CPU)",
                intro + "\n\n" + "\n\n".join(parts),
                goals=("exactness", "train-step", "extract-native", "speedup-flops"),
            )

    run(args, publish)


if __name__ == "__main__":
    main()
