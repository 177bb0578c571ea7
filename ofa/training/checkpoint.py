"""Training checkpoints: safetensors for every tensor, JSON for the rest, written atomically.

A checkpoint directory holds the supernet weights, the adaptor, the AdamW state (one tensor per
parameter and statistic), the RNG states and ``state.json`` (step, phase, scheduler, config).
Nothing is pickled.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch
from torch import nn

from ofa._io import atomic_dir, read_json, recover_replaced, sha256_file, write_json_atomic

__all__ = ["save_checkpoint", "load_checkpoint", "CHECKPOINT"]

CHECKPOINT = "checkpoint"
_FORMAT = "ofa-train-checkpoint"


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], Any]:
    state = optimizer.state_dict()
    tensors = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _optimizer_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, tensor in tensors.items():
        _, index, key = name.split(".", 2)
        state.setdefault(int(index), {})[key] = tensor
    for index, values in meta["scalars"].items():
        state.setdefault(int(index), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


def _rng_tensors(generator: torch.Generator) -> dict[str, torch.Tensor]:
    tensors = {"torch": torch.get_rng_state(), "sampler": generator.get_state()}
    if torch.cuda.is_available():
        tensors["cuda"] = torch.cuda.get_rng_state()
    return tensors


def save_checkpoint(
    directory: str | os.PathLike,
    *,
    model: nn.Module,
    adaptor: nn.Module | None,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    generator: torch.Generator,
    state: dict[str, Any],
) -> Path:
    """Write everything needed to continue training exactly, replacing ``directory`` atomically."""
    directory = Path(directory)
    tensors, optimizer_meta = _optimizer_tensors(optimizer)
    with atomic_dir(directory) as tmp:
        safetensors.torch.save_model(model, str(tmp / "model.safetensors"))
        if adaptor is not None:
            safetensors.torch.save_model(adaptor, str(tmp / "adaptor.safetensors"))
        safetensors.torch.save_file(tensors, str(tmp / "optimizer.safetensors"))
        safetensors.torch.save_file(_rng_tensors(generator), str(tmp / "rng.safetensors"))
        meta = {
            "format": _FORMAT,
            "version": 1,
            "optimizer": optimizer_meta,
            "scheduler": {"last_epoch": scheduler.last_epoch},
            **state,
            "sha256": {path.name: sha256_file(path) for path in sorted(tmp.glob("*.safetensors"))},
        }
        write_json_atomic(tmp / "state.json", meta)
    return directory


def _fix(directory: Path) -> str:
    return f"delete {directory} to start over, or restore the file"


def _check_files(directory: Path, meta: dict[str, Any]) -> None:
    """Every file's sha256 against ``state.json`` (checkpoints from before it carry none)."""
    for name, digest in (meta.get("sha256") or {}).items():
        path = directory / name
        if not path.is_file():
            raise ValueError(f"checkpoint file {path} is missing: {_fix(directory)}")
        if sha256_file(path) != digest:
            raise ValueError(
                f"checkpoint file {path} is corrupted (sha256 differs from state.json): "
                f"{_fix(directory)}"
            )


@contextlib.contextmanager
def _readable(path: Path) -> Iterator[None]:
    """Turn an unreadable safetensors file into one line naming it and the fix."""
    try:
        yield
    except (safetensors.SafetensorError, OSError) as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ValueError(
            f"checkpoint file {path} cannot be read ({first}): {_fix(path.parent)}"
        ) from None


def load_checkpoint(
    directory: str | os.PathLike,
    *,
    model: nn.Module,
    adaptor: nn.Module | None,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    generator: torch.Generator,
) -> dict[str, Any]:
    """Restore what :func:`save_checkpoint` wrote; returns its ``state`` JSON."""
    directory = Path(directory)
    recover_replaced(directory)  # a save killed mid-replacement moved the complete one aside
    meta = read_json(directory / "state.json", what="not a training checkpoint")
    if meta.get("format") != _FORMAT or meta.get("version") != 1:
        raise ValueError(
            f"{directory} is not an ofa training checkpoint (format/version mismatch)"
        )
    _check_files(directory, meta)
    device = str(next(model.parameters()).device)
    with _readable(directory / "model.safetensors"):
        safetensors.torch.load_model(model, str(directory / "model.safetensors"), device=device)
    if adaptor is not None:
        path = directory / "adaptor.safetensors"
        if not path.exists():
            raise ValueError(
                f"{directory} has no adaptor but this run uses one: same config needed"
            )
        with _readable(path):
            safetensors.torch.load_model(adaptor, str(path), device=device)
    with _readable(directory / "optimizer.safetensors"):
        tensors = safetensors.torch.load_file(
            str(directory / "optimizer.safetensors"), device=device
        )
    optimizer.load_state_dict(_optimizer_state(tensors, meta["optimizer"]))
    scheduler.last_epoch = int(meta["scheduler"]["last_epoch"])
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]  # type: ignore[attr-defined]
    with _readable(directory / "rng.safetensors"):
        rng = safetensors.torch.load_file(str(directory / "rng.safetensors"))
    torch.set_rng_state(rng["torch"])
    generator.set_state(rng["sampler"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"])
    return meta
