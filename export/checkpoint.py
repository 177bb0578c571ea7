"""Checkpoint directories: save a subnet (weights, config, tokenizer, manifest), load one back.

A BERT-family directory holds ``model.safetensors`` (the subnet JSON in its metadata),
``config.json``, ``subnet.json``, the tokenizer files when a tokenizer is given,
``modeling_ofa.py`` when the subnet needs per-layer widths, ``model.onnx`` when asked, and
``manifest.json`` (subnet, params, FLOPs, latency and accuracy if known, sparsity, ONNX check,
verification, versions and the sha256 of every other file). It is written to a temporary
directory and renamed into place, so a crash leaves the target absent (or the previous
complete export).

CNN supernets (family ``"cnn"``) export a plain graph instead: see :mod:`export.cnn` for their
files. What differs per family lives in one exporter object (:class:`export.bert.BertExport`,
:class:`export.cnn.CnnExport`), registered per family in :mod:`export._families`; the manifest, the atomic
directory and the sha256 of every file are shared.
"""

from __future__ import annotations

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
from transformers import PreTrainedModel

from export._families import export_adapter
from export.config import ExportConfig
from export.extraction import WEIGHTS_FILE
from ofa._config import settings_from
from ofa._io import atomic_dir, check_replaceable, read_json, sha256_file, write_json_atomic
from ofa.families import SubnetLike, family_named
from ofa.families.cnn_graph import CnnGraph
from ofa.supernet import Supernet

__all__ = ["save", "load", "read_manifest", "check_files", "WEIGHTS_FILE", "MANIFEST_FILE"]

logger = logging.getLogger(__name__)

FORMAT = "ofa-export"
MANIFEST_FILE = "manifest.json"


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
    subnet: SubnetLike,
    out_dir: Path,
    overwrite: bool,
    latency: Mapping[str, Any] | None,
) -> None:
    if not isinstance(supernet, Supernet):
        raise TypeError(f"export.save takes an ofa.Supernet, got {type(supernet).__name__}")
    subnet_type = family_named(supernet.family_name).subnet_type
    if not isinstance(subnet, subnet_type):
        raise TypeError(
            f"subnet must be an ofa.{subnet_type.__name__} (the supernet's family is "
            f"{supernet.family_name!r}), got {type(subnet).__name__}"
        )
    space: Any = supernet.space  # the family's search space
    space.check(subnet)
    check_replaceable(out_dir, overwrite=overwrite, foreign=_not_an_export, what="an export")
    if latency is not None and (not isinstance(latency, Mapping) or "device" not in latency):
        raise ValueError(
            "latency must be a mapping that names its device, e.g. "
            '{"ms": 4.1, "device": "cpu (2 threads)", "batch_size": 1, "seq_len": 128}'
        )


def _not_an_export(directory: Path) -> str | None:
    """None when ``directory`` holds only what an earlier export wrote (its manifest's files)."""
    try:
        manifest = read_json(directory / MANIFEST_FILE, what="export")
    except (FileNotFoundError, ValueError):
        return f"no valid {MANIFEST_FILE}"
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        return f"{MANIFEST_FILE} is not an ofa export's"
    ours = {MANIFEST_FILE, *manifest.get("files", {})}
    others = sorted(
        p.relative_to(directory).as_posix()
        for p in directory.rglob("*")
        if p.is_file() and p.relative_to(directory).as_posix() not in ours
    )
    if others:
        return f"it also holds {', '.join(others[:3])}" + (", ..." if len(others) > 3 else "")
    return None


def save(
    supernet: Supernet,
    subnet: SubnetLike,
    out_dir: str | os.PathLike,
    *,
    config: ExportConfig | None = None,
    overwrite: bool = False,
    tokenizer: Any = None,
    latency: Mapping[str, Any] | None = None,
    accuracy: float | Mapping[str, Any] | None = None,
    finetune_data: Iterable[Mapping[str, torch.Tensor]] | None = None,
    calibration_data: Iterable[Any] | None = None,
    **settings: Any,
) -> Path:
    """Export ``subnet`` of ``supernet`` as a deployable checkpoint directory.

    BERT-family supernets give a transformers checkpoint; CNN supernets (family ``"cnn"``) give
    ``model.safetensors`` + ``architecture.json`` of a plain :class:`CnnGraph` and a
    ``cnn_model.py`` that rebuilds it with torch and safetensors alone.

    Args:
        supernet: the trained supernet.
        subnet: the subnet to export (must be in ``supernet.space``).
        out_dir: the directory to create.
        config: what is written besides the weights (2:4 sparsity, ONNX, torch.export, the
            FLOPs' sequence length): :class:`export.ExportConfig`.
        overwrite: replace an existing ``out_dir``.
        tokenizer: a transformers tokenizer to save beside the model (BERT only).
        latency: measured latency, a mapping naming its ``device`` (stored in the manifest).
        accuracy: measured accuracy, a number or a mapping (stored in the manifest).
        finetune_data: batches of model inputs for the 2:4 recovery fine-tune (BERT only).
        calibration_data: image batches (tensors, ``(images, labels)`` or dicts with
            ``pixel_values``) to recompute the CNN subnet's batch-norm statistics before saving,
            as :func:`ofa.calibrate_bn_` takes them. Without it a CNN export keeps the max
            subnet's statistics (a warning says so).
        **settings: the former keyword form of ``config`` (``onnx=True``, ``sparsity="2:4"``...),
            kept for one release with a ``DeprecationWarning``.

    Raises:
        ValueError: subnet outside the space, bad sparsity layers, outputs that differ, an
            option the supernet's family does not take (2:4 or a tokenizer for a CNN).
        FileExistsError: ``out_dir`` exists and ``overwrite`` is False, or it holds anything
            an earlier export did not write (nothing is then deleted).

    Example:
        >>> export.save(supernet, supernet.space.min_subnet(), "out/small", tokenizer=tokenizer,
        ...             config=export.ExportConfig(onnx=True))
        >>> model = AutoModelForSequenceClassification.from_pretrained("out/small",
        ...                                                             trust_remote_code=True)
        >>> export.save(cnn_supernet, subnet, "out/cnn", calibration_data=images.batches(64))
    """
    config = settings_from(
        ExportConfig, config, settings, where="export.save", name="ExportConfig"
    )
    out_dir = Path(out_dir)
    _check_inputs(supernet, subnet, out_dir, overwrite, latency)
    exporter = export_adapter(supernet.family_name).exporter(
        supernet,
        subnet,
        sparsity=config.sparsity,
        onnx=config.onnx,
        torch_export=config.torch_export,
        tokenizer=tokenizer,
        finetune_data=finetune_data,
        calibration_data=calibration_data,
        seq_len=config.seq_len,
        default_seq_len=_flops_seq_len(None, latency),
    )
    manifest = _manifest(supernet, subnet, exporter, latency, accuracy)
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        manifest.update(exporter.write(tmp))
        manifest["files"] = {
            p.relative_to(tmp).as_posix(): sha256_file(p)
            for p in sorted(tmp.rglob("*"))
            if p.is_file()
        }
        write_json_atomic(tmp / MANIFEST_FILE, manifest)
        _usual_permissions(tmp)
    logger.info("exported %s to %s", subnet.to_json(), out_dir)
    return out_dir


def _flops_seq_len(seq_len: int | None, latency: Mapping[str, Any] | None) -> int | None:
    """``seq_len``, else the latency's measured length, else None (the default)."""
    if seq_len is None and latency is not None:
        seq_len = latency.get("seq_len")
    if seq_len is None:
        return None
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1:
        raise ValueError(f"seq_len must be a positive integer, got {seq_len!r}")
    return seq_len


def _usual_permissions(directory: Path) -> None:
    """Temporary files are private (0600 / 0700); a checkpoint gets the umask's usual modes."""
    probe = directory / ".umask-probe"
    os.close(os.open(probe, os.O_CREAT | os.O_WRONLY, 0o777))  # the umask, without changing it
    umask = 0o777 & ~stat.S_IMODE(probe.stat().st_mode)
    probe.unlink()
    directory.chmod(0o777 & ~umask)
    for path in directory.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def _manifest(
    supernet: Supernet,
    subnet: SubnetLike,
    exporter: Any,  # the family's exporter: model, manifest_fields(), write(tmp)
    latency: Mapping[str, Any] | None,
    accuracy: float | Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The fields every family's manifest has, then the family's own (architecture, FLOPs...)."""
    model = exporter.model
    manifest = {
        "format": FORMAT,
        "version": 1,
        "family": supernet.family_name,  # the family's adapter loads and verifies it
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "subnet": subnet.to_dict(),
        "space": supernet.space.to_dict(),
        "params": sum(p.numel() for p in model.parameters()),
        "params_nonzero": sum(int((p != 0).sum()) for p in model.parameters()),
        "latency": None if latency is None else dict(latency),
        "accuracy": accuracy if not isinstance(accuracy, Mapping) else dict(accuracy),
        "sparsity": None,
        "onnx": None,
        "versions": _versions(),
        **exporter.manifest_fields(),
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


def export_family(manifest: Mapping[str, Any]) -> str:
    """The family an export's manifest names (exports from before CNNs are ``"bert"``)."""
    family = manifest.get("family", "bert")
    family_named(family)  # ValueError for an unknown family
    return str(family)


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
) -> PreTrainedModel | CnnGraph:
    """Load any export (vanilla, per-layer or CNN) with ofa's classes; no shipped code runs.

    Every file's sha256 is checked against the manifest first. A CNN export comes back as the
    plain :class:`CnnGraph` it was saved from, in eval mode. For 2:4 exports on a CUDA device
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
    return export_adapter(export_family(manifest)).load(
        directory, manifest, device=device, dtype=dtype, semi_structured=semi_structured
    )
