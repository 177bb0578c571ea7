"""``ofa export``: one subnet of a saved supernet as a deployable checkpoint, then verified.

``--subnet`` takes ``best`` (the ``"best"`` entry of a search's ``pareto.json``, found with
``--search DIR`` or ``--search path/to/pareto.json``), ``max``, ``min``, a JSON file holding a
subnet (``{"layers": [...], "num_heads": [...], "ffn_dims": [...], "hidden_size": N}``) or a file
with a ``"best"`` entry (``{"best": {"subnet": {...}, "accuracy": ..., "measured_ms": ...}}``, as
search writes), or that JSON inline. From a search result, the accuracy and the measured
latency with its target device go into the manifest.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

EXAMPLE = """examples:
  ofa export --supernet runs/supernet --subnet best --search runs/search --out runs/export \\
      --tokenizer path/to/bert --onnx
  ofa export --supernet runs/supernet --subnet subnet.json --out runs/small --sparsity 2:4 \\
      --finetune-steps 100 --text-csv reviews.csv --tokenizer path/to/bert"""


def add_parser(subparsers: Any) -> tuple[str, argparse.ArgumentParser]:
    parser = subparsers.add_parser(
        "export",
        help="export a subnet as a plain checkpoint (safetensors, config, manifest; 2:4, ONNX)",
        description="Extract one subnet of a saved supernet into a checkpoint directory that "
        "loads with transformers, check that it computes what the supernet computes, and write "
        "its manifest.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--supernet", required=True, help="directory written by Supernet.save")
    parser.add_argument("--subnet", required=True, help="best | max | min | FILE.json | JSON")
    parser.add_argument("--search", help="search output directory or its pareto.json (for best)")
    parser.add_argument("--out", required=True, help="checkpoint directory to create")
    parser.add_argument("--tokenizer", help="directory holding the tokenizer to ship")
    parser.add_argument("--sparsity", choices=("none", "2:4"), default="none")
    parser.add_argument("--sparse-layers", nargs="+", help="fnmatch patterns of Linears for 2:4")
    parser.add_argument("--finetune-steps", type=int, default=0, help="2:4 recovery steps")
    parser.add_argument("--learning-rate", type=float, default=3e-5)
    parser.add_argument("--text-csv", help="CSV with a 'text' column for the 2:4 fine-tune")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--onnx", action="store_true", help="also write model.onnx")
    parser.add_argument("--no-verify", action="store_true", help="skip the final verify")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.set_defaults(func=run)
    return "export", parser


def _load_json_arg(text: str, what: str) -> Any:
    path = Path(text)
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{what} {path} is not valid JSON: {error}") from None
    if text.lstrip().startswith("{"):
        return json.loads(text)
    raise FileNotFoundError(f"{what} {text!r} is neither a file nor inline JSON")


def _from_result(data: dict[str, Any], where: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The subnet dict and manifest extras of a search result's ``"best"`` entry."""
    best = data.get("best")
    if best is None:
        raise ValueError(f"{where} has no best subnet: {data.get('message', 'none fits')}")
    if not isinstance(best, dict):
        raise ValueError(f"{where}: 'best' must be an object")
    if "subnet" not in best:  # a bare subnet under "best"
        return best, {}
    extras: dict[str, Any] = {}
    if best.get("accuracy") is not None:
        extras["accuracy"] = {"value": best["accuracy"], "source": "search (shared weights)"}
    ms = best.get("measured_ms")
    if ms is not None and isinstance(data.get("target"), dict) and "device" in data["target"]:
        extras["latency"] = {"ms": ms, "iqr_ms": best.get("measured_iqr_ms"), **data["target"]}
    return best["subnet"], extras


def resolve_subnet(spec: str, space: Any, search: str | None) -> tuple[Any, dict[str, Any]]:
    """The subnet ``--subnet`` names, and latency / accuracy found with it."""
    from ofa.space import Subnet

    if spec in ("max", "min"):
        return (space.max_subnet() if spec == "max" else space.min_subnet()), {}
    if spec == "best":
        if search is None:
            raise ValueError(
                "--subnet best needs --search (a search directory or its pareto.json)"
            )
        path = Path(search)
        path = path / "pareto.json" if path.is_dir() else path
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: run `ofa search` first")
        data, where = _load_json_arg(str(path), "search result"), str(path)
    else:
        data, where = _load_json_arg(spec, "--subnet"), spec
    if not isinstance(data, dict):
        raise ValueError(f"{where} must hold a JSON object")
    subnet_dict, extras = _from_result(data, where) if "best" in data else (data, {})
    return Subnet.from_dict(subnet_dict), extras


def _finetune_batches(args: argparse.Namespace, tokenizer: Any) -> list[dict[str, Any]] | None:
    if not args.finetune_steps:
        return None
    if args.text_csv is None or tokenizer is None:
        raise ValueError("--finetune-steps needs --text-csv and --tokenizer")
    from ofa.pipeline import read_texts, text_batches

    texts = read_texts(args.text_csv, limit=args.finetune_steps * args.batch_size)
    return list(
        text_batches(texts, tokenizer, batch_size=args.batch_size, max_length=args.max_length)
    )


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"{out} already exists: pass --overwrite or pick another --out")
    import export
    from ofa.supernet import load_supernet

    supernet = load_supernet(args.supernet)
    subnet, extras = resolve_subnet(args.subnet, supernet.space, args.search)
    supernet.space.check(subnet)
    tokenizer = None
    if args.tokenizer:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    sparsity = None
    if args.sparsity == "2:4":
        sparsity = export.SparsityConfig(
            layers=tuple(args.sparse_layers) if args.sparse_layers else None,
            finetune_steps=args.finetune_steps,
            learning_rate=args.learning_rate,
        )
    export.save(
        supernet,
        subnet,
        out,
        sparsity=sparsity,
        onnx=args.onnx,
        overwrite=args.overwrite,
        tokenizer=tokenizer,
        finetune_data=_finetune_batches(args, tokenizer) if sparsity else None,
        **extras,
    )
    manifest = export.read_manifest(out)
    print(f"exported {subnet.to_json()} to {out} ({manifest['params']:,} params)")
    if not args.no_verify:
        result = export.verify(out, supernet, subnet)
        bound = "unbounded" if result.atol is None else f"<= {result.atol:.0e}"
        print(
            f"verified against the {result.reference}: max |diff| {result.max_abs_diff:.2e} ({bound})"
        )
    return 0
