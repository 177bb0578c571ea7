"""``ofa export``: one subnet of a saved supernet as a deployable checkpoint, then verified.

``--subnet`` takes ``best`` (the ``"best"`` entry of a search's ``pareto.json``, found with
``--search DIR`` or ``--search path/to/pareto.json``), ``max``, ``min``, a JSON file holding a
subnet (``{"layers": [...], "num_heads": [...], "ffn_dims": [...], "hidden_size": N}``) or a file
with a ``"best"`` entry (``{"best": {"subnet": {...}, "accuracy": ..., "measured_ms": ...}}``, as
search writes), or that JSON inline. From a search result, the accuracy and the measured
latency with its target device go into the manifest.

CNN supernets (saved by ``Supernet.save`` from an ``ofa.convert``-ed CNN) take the same
command; their subnets are ``{"widths": [...], "depths": [...], "kernel_sizes": [...]}``. The
BERT-only options (``--tokenizer``, ``--sparsity 2:4`` and its fine-tune flags) are refused for
them; ``--calibration-data`` recomputes the subnet's batch-norm statistics before saving and
``--torch-export`` also writes ``model.pt2``.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from ofa_app._help import HelpFormatter

logger = logging.getLogger(__name__)

EXAMPLE = """examples:
  ofa export --supernet runs/supernet --subnet best --search runs/search --out runs/export \\
      --tokenizer path/to/bert --onnx
  ofa export --supernet runs/supernet --subnet subnet.json --out runs/small --sparsity 2:4 \\
      --finetune-steps 100 --text-csv reviews.csv --tokenizer path/to/bert
  ofa export --supernet runs/cnn-supernet --subnet min --out runs/cnn-small \\
      --calibration-data digits --onnx --torch-export"""


def add_parser(subparsers: Any) -> tuple[str, argparse.ArgumentParser]:
    parser = subparsers.add_parser(
        "export",
        help="export a subnet as a plain checkpoint (safetensors, config, manifest; 2:4, ONNX)",
        description="Extract one subnet of a saved supernet into a checkpoint directory that "
        "loads with transformers (BERT family) or plain torch (CNNs), check that it computes "
        "what the supernet computes, and write its manifest.",
        epilog=EXAMPLE,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--supernet", required=True, help="directory written by Supernet.save")
    parser.add_argument("--subnet", required=True, help="best | max | min | FILE.json | JSON")
    parser.add_argument("--search", help="search output directory or its pareto.json (for best)")
    parser.add_argument("--out", required=True, help="checkpoint directory to create")
    parser.add_argument(
        "--tokenizer",
        help="directory holding the tokenizer to ship (default: the supernet's own, when its "
        "directory holds one)",
    )
    parser.add_argument("--sparsity", choices=("none", "2:4"), default="none")
    parser.add_argument("--sparse-layers", nargs="+", help="fnmatch patterns of Linears for 2:4")
    parser.add_argument("--finetune-steps", type=int, default=0, help="2:4 recovery steps")
    parser.add_argument("--learning-rate", type=float, default=3e-5)
    parser.add_argument("--text-csv", help="CSV of texts for the 2:4 fine-tune")
    parser.add_argument("--text-column", default="text", help="--text-csv column of the texts")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=128, help="tokens per fine-tune text")
    parser.add_argument(
        "--seq-len",
        type=int,
        help="BERT: tokens per input the manifest's FLOPs are counted at (default: the "
        "search's profiled length with --subnet best, else 128)",
    )
    parser.add_argument("--onnx", action="store_true", help="also write model.onnx")
    parser.add_argument(
        "--calibration-data",
        help="CNN only: images to recompute batch-norm statistics on: digits | fashion-mnist | "
        "FILE.npy holding (N, C, H, W) float images",
    )
    parser.add_argument(
        "--calibration-batches", type=int, default=20, help="CNN only: batches of --batch-size"
    )
    parser.add_argument(
        "--torch-export", action="store_true", help="CNN only: also write model.pt2"
    )
    parser.add_argument(
        "--remeasure",
        action="store_true",
        help="time the subnet beside the teacher (the max subnet) now, on the search's latency "
        "target, and write that speedup into the manifest (for a search measured on a busy "
        "machine: run this on a quiet one)",
    )
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
        if best.get("speedup") is not None:  # measured side by side with the teacher
            extras["latency"].update(
                teacher_ms=data.get("teacher_ms"),
                speedup=best["speedup"],
                speedup_interval=[best.get("speedup_low"), best.get("speedup_high")],
                runtime=data["target"].get("runtime", "eager"),
            )
    return best["subnet"], extras


def resolve_subnet(spec: str, space: Any, search: str | None) -> tuple[Any, dict[str, Any]]:
    """The subnet ``--subnet`` names (of ``space``'s own subnet type), and latency / accuracy."""
    subnet_type = type(space.max_subnet())  # Subnet (BERT family) or CnnSubnet
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
    if not isinstance(subnet_dict, dict):
        raise ValueError(f"{where}: the subnet must be a JSON object")
    return subnet_type.from_dict(subnet_dict), extras


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"{out} already exists: pass --overwrite or pick another --out")
    import export
    from ofa.supernet import load_supernet
    from ofa_app.commands._families import app_family

    supernet = load_supernet(args.supernet)
    options = app_family(supernet).export_options(args, supernet)  # refuses foreign flags
    subnet, extras = resolve_subnet(args.subnet, supernet.space, args.search)
    supernet.space.check(subnet)
    if args.remeasure:
        extras["latency"] = _remeasured(supernet, subnet, extras.get("latency"))
    settings, objects = options
    export.save(
        supernet,
        subnet,
        out,
        config=export.ExportConfig(onnx=args.onnx, **settings),
        overwrite=args.overwrite,
        **objects,
        **extras,
    )
    return _report(args, out, supernet, subnet)


def _remeasured(supernet: Any, subnet: Any, latency: dict[str, Any] | None) -> dict[str, Any]:
    """The search's latency entry with the speedup measured again now, side by side."""
    import search

    if not latency or latency.get("speedup") is None:
        raise ValueError(
            "--remeasure needs the latency target of a search that measured a speedup: pass "
            "--subnet best --search DIR (or a pareto.json)"
        )
    fields = set(search.LatencyTarget.__dataclass_fields__)
    target = search.LatencyTarget.from_dict({k: v for k, v in latency.items() if k in fields})
    paired = search.measure_speedup(supernet, subnet, target)
    speedup = paired.speedup("subnet")
    if paired.contended and target.device == "cpu":  # nothing is written yet
        raise search.BusyMachineError.of(
            paired,
            target,
            "the subnet was timed again beside the teacher",
            "Run --remeasure again when the machine is quieter, or export without it (the "
            "search's figure is kept)",
        )
    return {
        **latency,
        "ms": paired.times["subnet"].value,
        "iqr_ms": paired.times["subnet"].spread * paired.times["subnet"].value,
        "teacher_ms": paired.times["teacher"].value,
        "speedup": speedup.value,
        "speedup_interval": [speedup.low, speedup.high],
        "measured": "side by side with the teacher, at export",
        "search_speedup": latency.get("speedup"),
        "load": paired.load(),
    }


def _report(args: argparse.Namespace, out: Path, supernet: Any, subnet: Any) -> int:
    import export

    manifest = export.read_manifest(out)
    print(f"exported {subnet.to_json()} to {out} ({manifest['params']:,} params)")
    latency = manifest.get("latency") or {}
    if latency.get("speedup") is not None:
        low, high = latency.get("speedup_interval") or (None, None)
        interval = "" if low is None else f" (95% interval {low:.2f}-{high:.2f})"
        when = "in the search"
        if latency.get("measured", "").endswith("at export"):
            when = "now"
            if latency.get("search_speedup") is not None:
                when += f" (the search measured {latency['search_speedup']:.2f}x)"
        print(
            f"speedup over the teacher: {latency['speedup']:.2f}x{interval} in "
            f"{latency.get('runtime', 'eager')} on {latency.get('device', '?')}, "
            f"measured side by side {when}"
        )
    if not args.no_verify:
        result = export.verify(out, supernet, subnet)
        bound = "unbounded" if result.atol is None else f"<= {result.atol:.0e}"
        print(
            f"verified against the {result.reference}: max |diff| {result.max_abs_diff:.2e} ({bound})"
        )
    return 0
