"""The toy family's ``export`` adapter: the extracted :class:`ToyMLP` as ``model.safetensors``
plus ``toy_config.json`` and ``subnet.json``; loads back with the toy's own class."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import nn

from export import VerifyResult
from ofa.supernet import Supernet
from tests.toy_family.ofa_toy import NAME, ToyFamily, ToyMLP, ToySubnet

__all__ = ["ToyExport", "ToyExportFamily", "compare"]

WEIGHTS, CONFIG, SUBNET = "model.safetensors", "toy_config.json", "subnet.json"
ATOL = 1e-5


def compare(model: nn.Module, reference: nn.Module, in_shape: tuple[int, ...]) -> float:
    """Largest absolute output difference of two models on two seeded random image batches."""
    worst = 0.0
    modes = [(m, m.training) for m in (model, reference)]
    model.eval()
    reference.eval()
    try:
        with torch.no_grad():
            for seed, batch_size in enumerate((2, 5)):
                generator = torch.Generator().manual_seed(seed)
                images = torch.randn((batch_size, *in_shape), generator=generator)
                worst = max(worst, float((model(images) - reference(images)).abs().max()))
    finally:
        for module, mode in modes:
            module.train(mode)
    return worst


def _checked(diff: float) -> VerifyResult:
    if diff > ATOL:
        raise ValueError(f"the toy export differs from the supernet by {diff:.2e} > {ATOL:.0e}")
    return VerifyResult(reference="supernet", max_abs_diff=diff, atol=ATOL, passed=True)


def _against_supernet(model: nn.Module, supernet: Supernet, subnet: ToySubnet) -> VerifyResult:
    with supernet.using(subnet):
        return _checked(compare(model, supernet, supernet.space.in_shape))


def _build(directory: Path) -> ToyMLP:
    config = json.loads((directory / CONFIG).read_text())
    model = ToyFamily().build_model(ToyMLP.__name__, config)
    safetensors.torch.load_model(model, str(directory / WEIGHTS), strict=True)
    return model.eval()


class ToyExport:
    """One toy subnet on its way to a checkpoint: extracted and checked against the supernet."""

    def __init__(self, supernet: Supernet, subnet: ToySubnet) -> None:
        self.supernet, self.subnet = supernet, subnet
        self.model = supernet.extract(subnet).eval()
        self.check = _against_supernet(self.model, supernet, subnet)

    def manifest_fields(self) -> dict[str, Any]:
        return {
            "family": NAME,
            "architecture": type(self.model).__name__,
            "loads_with": "export.load (the toy family registered)",
            "flops": {"value": self.supernet.flops(self.subnet, batch_size=1), "batch_size": 1},
            "verify": self.check.to_dict(),
        }

    def write(self, tmp: Path) -> dict[str, Any]:
        metadata = {"format": "pt", "ofa_family": NAME, "ofa_subnet": self.subnet.to_json()}
        safetensors.torch.save_model(self.model, str(tmp / WEIGHTS), metadata=metadata)
        config = ToyFamily().config_dict(self.model)
        (tmp / CONFIG).write_text(json.dumps(config, indent=2))
        (tmp / SUBNET).write_text(json.dumps(self.subnet.to_dict(), indent=2))
        written = _against_supernet(_build(tmp), self.supernet, self.subnet)
        return {"verify": written.to_dict()}


class ToyExportFamily:
    """The ``export.ExportFamily`` adapter of the toy MLP (no 2:4, ONNX, tokenizer...)."""

    name = NAME

    def exporter(
        self,
        supernet: Any,
        subnet: Any,
        *,
        sparsity: Any,
        onnx: bool,
        torch_export: bool,
        tokenizer: Any,
        finetune_data: Any,
        calibration_data: Any,
        seq_len: int | None,
        default_seq_len: int | None,
    ) -> ToyExport:
        given = {
            "sparsity": sparsity,
            "onnx": onnx or None,
            "torch_export": torch_export or None,
            "tokenizer": tokenizer,
            "finetune_data": finetune_data,
            "calibration_data": calibration_data,
            "seq_len": seq_len,
        }
        refused = sorted(name for name, value in given.items() if value is not None)
        if refused:
            raise ValueError(f"a toy MLP export takes none of {refused}")
        return ToyExport(supernet, subnet)

    def load(
        self,
        directory: Path,
        manifest: Mapping[str, Any],
        *,
        device: str | torch.device,
        dtype: torch.dtype | None,
        semi_structured: str,
    ) -> nn.Module:
        return _build(directory).to(device=device, dtype=dtype)

    def verify(
        self, model: Any, supernet: Any, subnet: Any, manifest: Mapping[str, Any], directory: Path
    ) -> VerifyResult:
        return _against_supernet(model, supernet, subnet)
