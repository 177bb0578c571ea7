"""Exported decoder subnets of a small-LLM-sized Llama: prefill and decode speedup over FLOPs.

``bench_decoder.py`` times subnets of the 2.3M-parameter teacher it can train here, where decode
is bound by per-token overhead (a few hundred microseconds of Python and dispatch per token
whatever the width), so its speedups say little about the models users shrink. This benchmark
asks only the speed question, at a size where the weights dominate: a Llama of 124M parameters
(8 layers, hidden 1024, 16 query heads on 4 KV heads of 64, MLP 2816, 32000 tokens, tied
embeddings; random init, since no pretrained decoder of that size installs offline here).

It is converted, and for about 75 / 50 / 25% of its FLOPs the full-depth uniform subnet of the
default space nearest that share (every KV head kept; query heads per KV head, MLP width and
hidden width from the space's quarter choices, within a quarter of each other) is exported with ``export.save`` (the stock ``LlamaForCausalLM``) and
loaded back with ``export.load``. Each is timed beside the original and beside a *native* model
(``LlamaForCausalLM`` built from the export's own config, fresh random weights), paired and
interleaved (``search.measure_paired``):

- prefill: one forward pass over a prompt (batch 1, ``--prompt`` tokens);
- decode: greedy ``generate`` of ``--new`` tokens after a 32-token prompt, with the KV cache,
  at each of ``--decode-batches`` (default 1 and 8); its FLOP reduction is a decode step's (one
  token at the mean context, the LM head on it).

Two figures per subnet and phase: speedup / FLOP reduction (goal >= 0.9 at 50%), and exported /
native time (1.0: the export runs as fast as a model defined at its shape).

Run: python benchmarks/bench_decoder_speed.py [--threads 2] [--section decoder-speed]
     python benchmarks/bench_decoder_speed.py --tiny --no-write   # a 2-layer toy, seconds
"""

from __future__ import annotations

import argparse
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
from ofa.families import decoder_units  # noqa: E402

TARGETS = (0.75, 0.5, 0.25)
SIZES = {
    "llama-124m": dict(
        vocab_size=32000,
        hidden_size=1024,
        intermediate_size=2816,
        num_hidden_layers=8,
        num_attention_heads=16,
        num_key_value_heads=4,
        head_dim=64,
    ),
    "tiny": dict(
        vocab_size=512,
        hidden_size=64,
        intermediate_size=176,
        num_hidden_layers=2,
        num_attention_heads=8,
        num_key_value_heads=2,
        head_dim=8,
    ),
}


def make_model(size: str) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(**SIZES[size], max_position_embeddings=512, tie_word_embeddings=True)
    return LlamaForCausalLM(config).eval()


def nearest_uniform(supernet: ofa.Supernet, share: float, seq: int) -> ofa.DecoderSubnet:
    """The full-depth uniform subnet, every KV head kept, whose FLOPs are nearest ``share`` of
    the max subnet's, among the balanced ones (query heads per KV head, MLP and hidden width
    within a quarter of each other as fractions of the full), as one would shrink a model."""
    space = supernet.space
    full = supernet.flops(space.max_subnet(), seq_len=seq)

    def fractions(s: ofa.DecoderSubnet) -> tuple[float, ...]:
        return (
            s.heads_per_kv[0] / space.heads_per_kv[-1],
            s.ffn_dims[0] / space.ffn_dims[-1],
            s.hidden_size / space.hidden_sizes[-1],
        )

    shapes = [
        s
        for s in space.uniform_subnets()
        if s.depth == space.depths[-1]
        and s.num_kv_heads[0] == space.num_kv_heads[-1]
        and max(fractions(s)) - min(fractions(s)) <= 0.25 + 1e-9
    ]
    return min(shapes, key=lambda s: abs(supernet.flops(s, seq_len=seq) / full - share))


def nearest_depth(supernet: ofa.Supernet, share: float, seq: int) -> ofa.DecoderSubnet:
    """The full-width uniform subnet (every head, KV head, MLP neuron and hidden channel kept)
    whose depth puts its FLOPs nearest ``share`` of the max subnet's."""
    space = supernet.space
    full = supernet.flops(space.max_subnet(), seq_len=seq)
    widest = space.max_subnet()
    shapes = [
        s
        for s in space.uniform_subnets()
        if (s.num_heads[0], s.num_kv_heads[0], s.ffn_dims[0], s.hidden_size)
        == (widest.num_heads[0], widest.num_kv_heads[0], widest.ffn_dims[0], widest.hidden_size)
    ]
    return min(shapes, key=lambda s: abs(supernet.flops(s, seq_len=seq) / full - share))


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompt", type=int, default=128, help="prefill tokens")
    parser.add_argument("--new", type=int, default=32, help="decoded tokens")
    parser.add_argument(
        "--decode-batches",
        default="1,8",
        help="batch sizes of the decode timing, comma-separated (1: one user; 8: a small server)",
    )
    parser.add_argument("--tiny", action="store_true", help="a 2-layer toy (smoke runs)")
    parser.add_argument("--section", default="decoder-speed")
    parser.add_argument("--no-write", action="store_true", help="print only (smoke runs)")
    args = parser.parse_args(argv)
    previous = torch.get_num_threads()
    torch.set_num_threads(args.threads)  # the record's torch_threads: the count measured at
    try:
        return _run(args)
    finally:
        torch.set_num_threads(previous)


def _run(args: argparse.Namespace) -> list[dict[str, Any]]:
    started = time.time()
    size = "tiny" if args.tiny else "llama-124m"
    model = make_model(size)
    supernet = ofa.convert(model)
    seq = args.prompt
    full = supernet.flops(supernet.space.max_subnet(), seq_len=seq)
    subnets = {f"{share:.0%}": nearest_uniform(supernet, share, seq) for share in TARGETS}
    # beside them, the same budget spent on depth: per-token overhead goes with the layers
    by_depth = nearest_depth(supernet, 0.5, seq)
    if by_depth.depth < supernet.space.max_subnet().depth:
        subnets["50% by depth"] = by_depth
    exported: dict[str, torch.nn.Module] = {}
    native: dict[str, torch.nn.Module] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, subnet in subnets.items():
            out = Path(tmp) / label.rstrip("%").replace(" ", "_").replace("%", "")
            export.save(supernet, subnet, out)
            exported[label] = export.load(out).eval()
            if type(exported[label]) is not LlamaForCausalLM:
                raise SystemExit(f"the {label} export loaded as {type(exported[label]).__name__}")
            torch.manual_seed(1)
            native[f"native {label}"] = LlamaForCausalLM(exported[label].config).eval()
            if _params(exported[label]) != _params(native[f"native {label}"]):
                raise SystemExit(f"the {label} export and its native model differ in shape")
    models = {"original": model, **exported, **native}
    target = search.LatencyTarget(batch_size=1, seq_len=seq, num_threads=args.threads)
    prompt = torch.randint(0, model.config.vocab_size, (1, seq), generator=torch.Generator())
    policy = search.MeasurePolicy(max_seconds=8 if args.tiny else 240)
    prefill = search.measure_paired(
        models,
        {"input_ids": prompt, "attention_mask": torch.ones_like(prompt)},
        target=target,
        reference="original",
        what="prefill",
        policy=policy,
    )
    decode_batches = [int(b) for b in args.decode_batches.split(",") if b.strip()]

    def generate(m: LlamaForCausalLM, batch: int):
        short = prompt[:, :32].expand(batch, -1).contiguous()
        return lambda: m.generate(
            short,
            attention_mask=torch.ones_like(short),
            max_new_tokens=args.new,
            min_new_tokens=args.new,
            do_sample=False,
            pad_token_id=0,
        )

    decodes = {
        batch: search.measure_paired(
            {name: generate(m, batch) for name, m in models.items()},
            target=search.LatencyTarget(batch_size=batch, seq_len=seq, num_threads=args.threads),
            reference="original",
            what="decode",
            policy=search.MeasurePolicy(
                repeats=1,
                min_rounds=5,
                max_rounds=40,
                max_seconds=policy.max_seconds,
            ),
        )
        for batch in decode_batches
    }
    max_sub = supernet.space.max_subnet()

    def decode_step(subnet: ofa.DecoderSubnet) -> int:
        return decoder_units.flops(
            supernet.model,
            supernet.space,
            subnet,
            batch_size=1,
            seq_len=1,
            logits=1,
            context=32 + args.new // 2,
        )

    rows: list[dict[str, Any]] = []
    depth_rows: list[dict[str, Any]] = []
    for label, subnet in subnets.items():
        flops = supernet.flops(subnet, seq_len=seq)
        phases = [("prefill", 1, prefill)] + [("decode", b, p) for b, p in decodes.items()]
        for phase, batch, paired in phases:
            # prefill: the whole prompt's forward; decode: one step at the mean context
            reduction = (
                full / flops if phase == "prefill" else decode_step(max_sub) / decode_step(subnet)
            )
            speedup = paired.speedup(label)
            mine, theirs = paired.ratios[label], paired.ratios[f"native {label}"]
            vs_native = (mine.value / theirs.value, mine.low / theirs.high, mine.high / theirs.low)
            (depth_rows if label.endswith("by depth") else rows).append(
                {
                    "subnet": label,
                    "shape (layers, q heads, kv heads, MLP, hidden)": (
                        f"{subnet.depth}, {subnet.num_heads[0]}, {subnet.num_kv_heads[0]}, "
                        f"{subnet.ffn_dims[0]}, {subnet.hidden_size}"
                    ),
                    "FLOPs": f"{flops / full:.0%}",
                    "params": f"{_params(exported[label]) / 1e6:.1f}M",
                    "phase": (
                        f"prefill ({seq} tokens)"
                        if phase == "prefill"
                        else f"decode ({args.new} tokens after 32, batch {batch})"
                    ),
                    "original ms": f"{paired.times['original'].value:.1f}",
                    "subnet ms": f"{paired.times[label].value:.1f}",
                    "speedup (95% interval)": (
                        f"{speedup.value:.2f}x ({speedup.low:.2f}-{speedup.high:.2f})"
                    ),
                    "FLOP reduction": f"{reduction:.2f}x",
                    "speedup / FLOP reduction": f"**{speedup.value / reduction:.2f}**",
                    "exported / native time": "{:.3f} ({:.3f}..{:.3f})".format(*vs_native),
                }
            )
            print((depth_rows if label.endswith("by depth") else rows)[-1], flush=True)
    cfg = model.config
    depth_text = (
        "\n\nThe 50% budget spent on depth instead (every width kept, the later layers "
        "dropped), timed in the same rounds; not in the goal's figures above, which shrink "
        "width at full depth as the issue asks, but it shows what decode pays per layer "
        "whatever its width:\n\n" + markdown_table(depth_rows)
        if depth_rows
        else ""
    )
    body = (
        f"LlamaForCausalLM, random init ({_params(model) / 1e6:.0f}M parameters: "
        f"{cfg.num_hidden_layers} layers, hidden {cfg.hidden_size}, "
        f"{cfg.num_attention_heads} query heads on {cfg.num_key_value_heads} KV heads of "
        f"{cfg.head_dim}, MLP {cfg.intermediate_size}, {cfg.vocab_size} tokens, tied "
        f"embeddings), CPU float32, {args.threads} thread(s); prefill at batch 1, decode at "
        f"batch {', '.join(map(str, decode_batches))}. For about 75/50/25% of "
        "the FLOPs, the full-depth uniform subnet of the default space nearest that share "
        "(every KV head kept; query heads per KV head, MLP and hidden width within a quarter "
        "of each other), "
        "exported with `export.save` (stock `LlamaForCausalLM`) and loaded back with "
        "`export.load`, each timed beside the original and beside a native model built from "
        "the export's config, in the same run (`search.measure_paired`: interleaved rounds). "
        "Decode is greedy `generate` with the KV cache; at batch 1 it pays a fixed cost per "
        "token (Python, dispatch, the sampling loop) that no width cut removes, so batch 8 "
        "shows where the weights dominate, as on a server. Goal: speedup / FLOP reduction >= 0.9 "
        "at 50%. *exported / native time* is what the export controls (1.00: as fast as a "
        "model written at its shape)."
        "\n\n"
        + markdown_table(rows)
        + depth_text
        + f"\n\nTotal run time {time.time() - started:.0f} s."
    )
    print(body)
    if not args.no_write:
        write_record(
            args.section,
            "Exported decoder subnets of a small-LLM-sized Llama",
            body,
            goals=("speedup-flops", "extract-native"),
            series="decoder-speed",
        )
    return rows


if __name__ == "__main__":
    main()
