"""Figures a refactor must not change: run it before and after, and diff the two JSON files.

On the real MiniLM-L6 (Rotten Tomatoes, its seeded split) and on a small CNN (scikit-learn's
digits), everything that does not depend on timing, with fixed seeds on one thread: the max
subnet against the original, importance scores, a short progressive-shrinking run (its losses),
subnet accuracies with shared weights, extracted models (params, FLOPs, their difference from
the supernet), and exports (the sha256 of the weights file, the verified difference). Timing is
left out on purpose: it is noise between two runs; the latency benchmarks measure it paired.

Runs against whichever ofa/search/export is first on ``sys.path``, so the same script measures
an older checkout (``PYTHONPATH=/path/to/old/checkout python benchmarks/bench_fingerprint.py``).

Example:
    python benchmarks/bench_fingerprint.py --out runs/fingerprint_new.json
    PYTHONPATH=/tmp/old python benchmarks/bench_fingerprint.py --out runs/fingerprint_old.json
    python benchmarks/bench_fingerprint.py --diff runs/fingerprint_old.json runs/fingerprint_new.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from torch import nn  # noqa: E402

if "ofa" not in sys.modules and not os.environ.get("PYTHONPATH"):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import export  # noqa: E402
import ofa  # noqa: E402

warnings.filterwarnings("ignore", category=DeprecationWarning)  # older or newer keyword forms


def _train(supernet: Any, **kwargs: Any) -> Any:
    train = getattr(ofa, "train_", None) or ofa.train  # train_ since the family interface
    return train(supernet, **kwargs)


def _weights(path: Path) -> dict[str, Any]:
    """The tensors' digest and the metadata of a safetensors file, apart (a refactor may change
    how the metadata is written without changing a weight)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), "pt") as handle:
        metadata = handle.metadata() or {}
    return {"tensors": _tensor_digest(load_file(str(path))), "metadata": metadata}


def _tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(name.encode())
        digest.update(tensors[name].detach().float().contiguous().numpy().tobytes())
    return digest.hexdigest()


def bert_figures(work: Path, steps: int) -> dict[str, Any]:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from ofa.data import load_movie_reviews, tokenize
    from ofa.embedded import minilm_path

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    teacher = AutoModelForSequenceClassification.from_pretrained(minilm_path(), num_labels=2)
    teacher.eval()
    task = load_movie_reviews()
    train_data = tokenize(task["train"].select(range(96)), tokenizer, max_length=32)
    val_data = tokenize(task["validation"].select(range(128)), tokenizer, max_length=32)
    batch = tokenizer(["a fine film", "dull and long"], padding=True, return_tensors="pt")
    with torch.no_grad():
        want = teacher(**batch).logits
    supernet = ofa.convert(teacher)
    from ofa.data import pad_collate

    pad = tokenizer.pad_token_id
    batches = [pad_collate(train_data[j : j + 8], pad) for j in (0, 8)]
    scores = ofa.importance.score(supernet, batches, metric="taylor")
    ofa.reorder_(supernet, scores)
    with torch.no_grad():
        got = supernet.eval()(**batch).logits
    config = ofa.TrainConfig(phases=ofa.default_phases(steps), batch_size=8, seed=0)
    result = _train(
        supernet,
        teacher=teacher,
        train_data=train_data,
        config=config,
        output_dir=work / "train",
        progress=False,
    )
    space = supernet.space
    mid = space.uniform(
        depth=space.depths[len(space.depths) // 2],
        num_heads=space.num_heads[len(space.num_heads) // 2],
        ffn_dim=space.ffn_dims[len(space.ffn_dims) // 2],
        hidden_size=space.hidden_sizes[-1],
    )
    subnets = {"max": space.max_subnet(), "mid": mid, "min": space.min_subnet()}
    figures: dict[str, Any] = {
        "max_subnet_vs_teacher": float((got - want).abs().max()),
        "importance_digest": _tensor_digest(scores),
        "train_losses": [float(x) for x in _losses(work / "train" / "metrics.jsonl")],
        "final_loss": float(result.final_loss),
        "subnets": {},
    }
    for name, subnet in subnets.items():
        extracted = supernet.extract(subnet).eval()
        with torch.no_grad(), supernet.using(subnet):
            diff = float((extracted(**batch).logits - supernet.eval()(**batch).logits).abs().max())
        out = export.save(supernet, subnet, work / f"export_{name}", tokenizer=tokenizer)
        verified = export.verify(out, supernet, subnet)
        figures["subnets"][name] = {
            "subnet": subnet.to_dict(),
            "accuracy": round(float(ofa.evaluate(supernet, subnet, val_data)), 6),
            "params": supernet.num_params(subnet),
            "flops": supernet.flops(subnet, seq_len=32),
            "extracted_vs_supernet": diff,
            "export_weights": _weights(out / "model.safetensors"),
            "export_verified_diff": verified.max_abs_diff,
        }
    return figures


class SmallCnn(nn.Module):
    """Two residual stages on 8 x 8 digits."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16))
        self.block = nn.Sequential(
            nn.Conv2d(16, 32, 3, padding=1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.Conv2d(32, 16, 3, padding=1, bias=False),
            nn.BatchNorm2d(16),
        )
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.stem(x))
        x = self.relu(x + self.block(x))
        return self.fc(torch.flatten(self.pool(x), 1))


def cnn_figures(work: Path, steps: int) -> dict[str, Any]:
    from ofa.data_images import load_digits

    torch.manual_seed(0)
    train, test = load_digits(split="train"), load_digits(split="test")
    teacher = SmallCnn().eval()
    x = test.images[:16]
    with torch.no_grad():
        want = teacher(x)
    supernet = ofa.convert(teacher)
    with torch.no_grad():
        got = supernet.eval()(x)
    config = ofa.TrainConfig(
        phases=ofa.default_cnn_phases(steps, space=supernet.space), batch_size=32, seed=0
    )
    result = _train(
        supernet,
        teacher=teacher,
        train_data=train,
        config=config,
        output_dir=work / "cnn_train",
        progress=False,
    )
    calibration = train.subset(256, seed=0)
    space = supernet.space
    figures: dict[str, Any] = {
        "max_subnet_vs_teacher": float((got - want).abs().max()),
        "train_losses": [float(v) for v in _losses(work / "cnn_train" / "metrics.jsonl")],
        "final_loss": float(result.final_loss),
        "subnets": {},
    }
    for name, subnet in (("max", space.max_subnet()), ("min", space.min_subnet())):
        acc = ofa.evaluate(supernet, subnet, test, calibration_data=calibration)
        out = export.save(
            supernet, subnet, work / f"cnn_export_{name}", calibration_data=calibration.batches(64)
        )
        figures["subnets"][name] = {
            "subnet": subnet.to_dict(),
            "accuracy": round(float(acc), 6),
            "params": supernet.num_params(subnet),
            "flops": supernet.flops(subnet),
            "export_weights": _weights(out / "model.safetensors"),
            "export_verified_diff": export.verify(out, supernet, subnet).max_abs_diff,
        }
    return figures


def _losses(metrics: Path) -> list[float]:
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    return [row["loss"] for row in rows if "loss" in row]


def diff(old: dict[str, Any], new: dict[str, Any], path: str = "") -> list[str]:
    """Every leaf that differs (floats beyond 1e-6 relative), as ``path: old -> new``."""
    if isinstance(old, dict) and isinstance(new, dict):
        found = []
        for key in sorted(set(old) | set(new)):
            if key in ("versions", "source"):
                continue
            found += diff(old.get(key), new.get(key), f"{path}.{key}" if path else key)
        return found
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [
            line for i, (a, b) in enumerate(zip(old, new)) for line in diff(a, b, f"{path}[{i}]")
        ]
    if isinstance(old, float) and isinstance(new, float):
        same = math.isclose(old, new, rel_tol=1e-6, abs_tol=1e-9)
        return [] if same else [f"{path}: {old!r} -> {new!r}"]
    return [] if old == new else [f"{path}: {old!r} -> {new!r}"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="JSON file to write the figures to")
    parser.add_argument("--steps", type=int, default=8, help="training steps of each supernet")
    parser.add_argument("--diff", nargs=2, metavar=("OLD", "NEW"), help="compare two runs")
    args = parser.parse_args(argv)
    if args.diff:
        old, new = (json.loads(Path(p).read_text()) for p in args.diff)
        lines = diff(old, new)
        print("\n".join(lines) if lines else "identical: every figure is the same")
        return 1 if lines else 0
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    with tempfile.TemporaryDirectory() as tmp:
        figures = {
            "source": str(Path(ofa.__file__).resolve().parent.parent),
            "versions": {"torch": torch.__version__, "ofa": ofa.__version__},
            "bert": bert_figures(Path(tmp), args.steps),
            "cnn": cnn_figures(Path(tmp), args.steps * 5),
        }
    text = json.dumps(figures, indent=1, sort_keys=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
