"""Checkpoint directories: save a subnet (weights, config, tokenizer, manifest), load one back.

A directory holds ``model.safetensors`` (the subnet JSON in its metadata), ``config.json``,
``subnet.json``, the tokenizer files when a tokenizer is given, ``modeling_ofa.py`` when the
subnet needs per-layer widths, ``model.onnx`` when asked, and ``manifest.json`` (subnet, params,
FLOPs, latency and accuracy if known, sparsity, ONNX check, verification, versions and the
sha256 of every other file). It is written to a temporary directory and renamed into place, so
a crash leaves the target absent (or the previous complete export).
"""

from __future__ import annotations

import copy
import datetime
import json
import logging
import os
import platform
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import safetensors
import safetensors.torch
import torch
from torch import nn
from transformers import PreTrainedModel

from export.extract import (
    MODELING_FILE,
    build_model,
    checkpoint_config,
    extract,
    fits_vanilla,
    modeling_source,
)
from export.onnx import ONNX_FILE, check_onnx, export_onnx
from export.sparsity import (
    SparsityConfig,
    apply_2_4_,
    choose_semi_structured,
    finetune_masked_,
    kernels_available,
    say_dense_once,
    select_layers,
    to_semi_structured_,
)
from export.verify import DENSE_ATOL, VerifyResult, check_diff, compare, masked_supernet
from ofa._io import atomic_dir, read_json, sha256_file, write_json_atomic
from ofa.space import Subnet
from ofa.supernet import Supernet

__all__ = ["save", "load", "read_manifest", "WEIGHTS_FILE", "MANIFEST_FILE"]

logger = logging.getLogger(__name__)

FORMAT = "ofa-export"
WEIGHTS_FILE, CONFIG_FILE, SUBNET_FILE, MANIFEST_FILE = (
    "model.safetensors",
    "config.json",
    "subnet.json",
    "manifest.json",
)


def _versions() -> dict[str, str]:
    import transformers

    import ofa

    return {
        "ofa": ofa.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "safetensors": safetensors.__version__,
        "python": platform.python_version(),
    }


def _check_inputs(
    supernet: Supernet,
    subnet: Subnet,
    out_dir: Path,
    overwrite: bool,
    latency: Mapping[str, Any] | None,
) -> None:
    if not isinstance(supernet, Supernet):
        raise TypeError(f"export.save takes an ofa.Supernet, got {type(supernet).__name__}")
    if not isinstance(subnet, Subnet):
        raise TypeError(f"subnet must be an ofa.Subnet, got {type(subnet).__name__}")
    supernet.space.check(subnet)
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"{out_dir} already exists: pass overwrite=True (--overwrite)")
    if latency is not None and (not isinstance(latency, Mapping) or "device" not in latency):
        raise ValueError(
            "latency must be a mapping that names its device, e.g. "
            '{"ms": 4.1, "device": "cpu (2 threads)", "batch_size": 1, "seq_len": 128}'
        )


def _sparsify(
    model: PreTrainedModel,
    supernet: Supernet,
    subnet: Subnet,
    config: SparsityConfig,
    finetune_data: Iterable[Mapping[str, torch.Tensor]] | None,
) -> dict[str, Any]:
    """Mask ``model`` 2:4 in place, check it against the masked supernet, optionally fine-tune."""
    if config.finetune_steps and finetune_data is None:
        raise ValueError(
            "SparsityConfig.finetune_steps > 0 needs finetune_data (batches of inputs)"
        )
    names, skipped = select_layers(model, config)
    teacher = copy.deepcopy(model) if config.finetune_steps else None
    masks = apply_2_4_(model, names)
    reference = masked_supernet(supernet, subnet, masks)
    with reference.using(subnet):
        diff = compare(model, reference, vocab_size=model.config.vocab_size)
    check_diff("masked supernet", diff, DENSE_ATOL)  # raises when the masking went wrong
    del reference
    losses: list[float] = []
    if teacher is not None:
        assert finetune_data is not None
        losses = finetune_masked_(model, teacher, masks, finetune_data, config)
    device = next(model.parameters()).device
    kernels = None
    if kernels_available(device):
        decisions = choose_semi_structured(copy.deepcopy(model).half(), names)
        kernels = {
            "device": torch.cuda.get_device_name(device),
            "dtype": "float16",
            "layers": decisions,
        }
    return {
        **config.to_dict(),
        "layers": names,
        "dense_layers": skipped,
        "masked_max_abs_diff": diff,
        "finetune_loss": [losses[0], losses[-1]] if losses else None,
        "kernels": kernels,
    }


def save(
    supernet: Supernet,
    subnet: Subnet,
    out_dir: str | os.PathLike,
    *,
    sparsity: SparsityConfig | Literal["2:4"] | None = None,
    onnx: bool = False,
    overwrite: bool = False,
    tokenizer: Any = None,
    latency: Mapping[str, Any] | None = None,
    accuracy: float | Mapping[str, Any] | None = None,
    finetune_data: Iterable[Mapping[str, torch.Tensor]] | None = None,
) -> Path:
    """Export ``subnet`` of ``supernet`` as a deployable checkpoint directory.

    Args:
        supernet: the trained supernet.
        subnet: the subnet to export (must be in ``supernet.space``).
        out_dir: the directory to create.
        sparsity: ``"2:4"`` or a :class:`SparsityConfig` to prune encoder Linears 2:4.
        onnx: also write ``model.onnx`` (dynamic batch and sequence axes), checked with
            onnxruntime when installed.
        overwrite: replace an existing ``out_dir``.
        tokenizer: a transformers tokenizer to save beside the model.
        latency: measured latency, a mapping naming its ``device`` (stored in the manifest).
        accuracy: measured accuracy, a number or a mapping (stored in the manifest).
        finetune_data: batches of model inputs for the 2:4 recovery fine-tune.

    Raises:
        ValueError: subnet outside the space, bad sparsity layers, outputs that differ.
        FileExistsError: ``out_dir`` exists and ``overwrite`` is False.

    Example:
        >>> export.save(supernet, supernet.space.min_subnet(), "out/small", tokenizer=tokenizer)
        >>> model = AutoModelForSequenceClassification.from_pretrained("out/small",
        ...                                                             trust_remote_code=True)
    """
    out_dir = Path(out_dir)
    _check_inputs(supernet, subnet, out_dir, overwrite, latency)
    if isinstance(sparsity, str):
        if sparsity != "2:4":
            raise ValueError(f"sparsity {sparsity!r} is not supported: use '2:4' or None")
        sparsity = SparsityConfig()
    if sparsity is not None and not isinstance(sparsity, SparsityConfig):
        raise TypeError(f"sparsity must be '2:4', a SparsityConfig or None, not {sparsity!r}")
    model = extract(supernet, subnet)
    with supernet.using(subnet):
        diff = compare(model, supernet, vocab_size=model.config.vocab_size)
    check = check_diff("supernet", diff, DENSE_ATOL)
    sparse_info = None
    if sparsity is not None:
        sparse_info = _sparsify(model, supernet, subnet, sparsity, finetune_data)
    manifest = _manifest(supernet, subnet, model, check, sparse_info, latency, accuracy)
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        _write_files(tmp, model, supernet, subnet, tokenizer, sparse_info)
        if onnx:
            cpu_model = (
                model
                if next(model.parameters()).device.type == "cpu"
                else copy.deepcopy(model).cpu()
            )
            export_onnx(cpu_model, tmp / ONNX_FILE)
            manifest["onnx"] = {"file": ONNX_FILE, **check_onnx(cpu_model, tmp / ONNX_FILE)}
        manifest["files"] = {
            p.relative_to(tmp).as_posix(): sha256_file(p)
            for p in sorted(tmp.rglob("*"))
            if p.is_file()
        }
        write_json_atomic(tmp / MANIFEST_FILE, manifest)
        _usual_permissions(tmp)
    logger.info("exported %s to %s", subnet.to_json(), out_dir)
    return out_dir


def _usual_permissions(directory: Path) -> None:
    """Temporary files are private (0600 / 0700); a checkpoint gets the umask's usual modes."""
    probe = directory / ".umask-probe"
    os.close(os.open(probe, os.O_CREAT | os.O_WRONLY, 0o777))  # the umask, without changing it
    umask = 0o777 & ~stat.S_IMODE(probe.stat().st_mode)
    probe.unlink()
    directory.chmod(0o777 & ~umask)
    for path in directory.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def _write_files(
    tmp: Path,
    model: PreTrainedModel,
    supernet: Supernet,
    subnet: Subnet,
    tokenizer: Any,
    sparse_info: dict[str, Any] | None,
) -> None:
    metadata = {"format": "pt", "ofa_subnet": subnet.to_json()}
    if sparse_info is not None:
        metadata["ofa_sparsity"] = json.dumps({"pattern": "2:4", "layers": sparse_info["layers"]})
    safetensors.torch.save_model(model, str(tmp / WEIGHTS_FILE), metadata=metadata)
    write_json_atomic(tmp / CONFIG_FILE, checkpoint_config(model, supernet.space, subnet))
    write_json_atomic(tmp / SUBNET_FILE, subnet.to_dict())
    if not fits_vanilla(supernet.space, subnet):
        (tmp / MODELING_FILE).write_text(modeling_source(type(model).__name__))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(tmp))


def _manifest(
    supernet: Supernet,
    subnet: Subnet,
    model: PreTrainedModel,
    check: VerifyResult,
    sparse_info: dict[str, Any] | None,
    latency: Mapping[str, Any] | None,
    accuracy: float | Mapping[str, Any] | None,
) -> dict[str, Any]:
    teacher = supernet.space.max_subnet()
    stored = sum(p.numel() for p in model.parameters())
    nonzero = sum(int((p != 0).sum()) for p in model.parameters())
    flops = supernet.flops(subnet, batch_size=1, seq_len=128)
    vanilla = fits_vanilla(supernet.space, subnet)
    manifest = {
        "format": FORMAT,
        "version": 1,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "architecture": type(model).__name__,
        "loads_with": "transformers" if vanilla else "transformers, trust_remote_code=True",
        "subnet": subnet.to_dict(),
        "space": supernet.space.to_dict(),
        "params": stored,
        "params_nonzero": nonzero,
        "teacher_params": supernet.num_params(teacher),
        "flops": {"value": flops, "batch_size": 1, "seq_len": 128, "counts": "matmul, 2 per MAC"},
        "teacher_flops": supernet.flops(teacher, batch_size=1, seq_len=128),
        "latency": None if latency is None else dict(latency),
        "accuracy": accuracy if not isinstance(accuracy, Mapping) else dict(accuracy),
        "sparsity": sparse_info,
        "onnx": None,
        "verify": check.to_dict(),
        "versions": _versions(),
    }
    json.dumps(manifest)  # fail before writing anything if latency / accuracy are not JSON
    return manifest


def read_manifest(directory: str | os.PathLike) -> dict[str, Any]:
    """The manifest of an export, after checking it is one."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory} is not a directory; write one with export.save")
    manifest = read_json(directory / MANIFEST_FILE, what="not an ofa export")
    if manifest.get("format") != FORMAT or manifest.get("version") != 1:
        raise ValueError(f"{directory / MANIFEST_FILE} is not an ofa export manifest (version 1)")
    return manifest


def check_files(directory: str | os.PathLike, manifest: Mapping[str, Any]) -> None:
    """Raise when a file the manifest lists is missing or its sha256 differs."""
    directory = Path(directory)
    for name, digest in manifest["files"].items():
        path = directory / name
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} is missing: the export is incomplete, export it again"
            )
        if sha256_file(path) != digest:
            raise ValueError(
                f"{path} is corrupted (sha256 mismatch with manifest.json): export it again"
            )


def load(
    directory: str | os.PathLike,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    semi_structured: Literal["auto", "off"] = "auto",
) -> PreTrainedModel:
    """Load any export (vanilla or per-layer) with ofa's classes; no shipped code runs.

    Every file's sha256 is checked against the manifest first. For 2:4 exports on a CUDA device
    of compute capability >= 8.0 with ``dtype`` float16 / bfloat16, ``semi_structured="auto"``
    converts the layers whose micro-benchmark wins (the manifest's decision when it was made on
    the same device, else measured now); the converted names land in
    ``model.config.ofa_semi_structured_layers``. Elsewhere 2:4 weights run dense.

    Example:
        >>> model = export.load("out/small")
        >>> logits = model(**tokenizer("a fine film", return_tensors="pt")).logits
    """
    directory = Path(directory)
    manifest = read_manifest(directory)
    check_files(directory, manifest)
    model = build_model(read_json(directory / CONFIG_FILE, what="config"))
    safetensors.torch.load_model(model, str(directory / WEIGHTS_FILE), strict=True)
    model.to(device=device, dtype=dtype)  # type: ignore[call-arg]
    model.eval()
    sparsity = manifest.get("sparsity")
    if sparsity and semi_structured == "auto":
        model.config.ofa_semi_structured_layers = _accelerate(model, sparsity)
    return model


def _accelerate(model: nn.Module, sparsity: Mapping[str, Any]) -> list[str]:
    weight = next(model.parameters())
    if not kernels_available(weight.device) or weight.dtype not in (torch.float16, torch.bfloat16):
        say_dense_once(f"{weight.device.type} ({weight.dtype})")
        return []
    recorded = sparsity.get("kernels") or {}
    if recorded.get("device") == torch.cuda.get_device_name(weight.device):
        decisions = recorded["layers"]
    else:
        decisions = choose_semi_structured(model, sparsity["layers"])
    winners = [name for name, d in decisions.items() if d["use"]]
    logger.info("2:4 kernels on %d of %d layers", len(winners), len(sparsity["layers"]))
    return to_semi_structured_(model, winners)
