"""Comparing an export with the supernet: the outputs, the bound, the result (family-neutral)."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from export.onnx import sample_inputs
from ofa.space import Subnet
from ofa.supernet import Supernet

__all__ = ["DENSE_ATOL", "VerifyResult", "check_diff", "compare", "masked_supernet"]

DENSE_ATOL = 1e-5


@dataclass(frozen=True, kw_only=True)
class VerifyResult:
    """What :func:`verify` compared and how far apart the outputs were.

    Attributes:
        reference: ``"supernet"``; ``"masked supernet"`` for 2:4 exports (the supernet with the
            same weights zeroed); ``"masked supernet before fine-tune"`` when the 2:4 export was
            fine-tuned afterwards (then the difference is reported, not bounded);
            ``"calibrated extracted model"`` for CNN exports whose batch-norm statistics were
            recalibrated (the extracted subnet with the export's statistics).
        max_abs_diff: largest absolute difference of the main output (logits or last hidden state).
        atol: the bound it was held to (``None`` when unbounded).
        passed: True when within ``atol`` (and, for 2:4, every sparse layer is 2:4).
    """

    reference: Literal[
        "supernet",
        "masked supernet",
        "masked supernet before fine-tune",
        "calibrated extracted model",
    ]
    max_abs_diff: float
    atol: float | None
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _main(outputs: Any) -> Tensor:
    logits = getattr(outputs, "logits", None)
    return logits if logits is not None else outputs.last_hidden_state


@contextlib.contextmanager
def _eval(*modules: nn.Module) -> Iterator[None]:
    # every submodule's own flag: module.train(mode) would overwrite the children's
    modes = [(m, m.training) for module in modules for m in module.modules()]
    for module in modules:
        module.eval()
    try:
        yield
    finally:
        for module, mode in modes:
            module.training = mode


def compare(model: nn.Module, reference: nn.Module, *, vocab_size: int) -> float:
    """Largest absolute difference of the two models' main outputs on two padded batches."""
    device = next(model.parameters()).device
    ref_device = next(reference.parameters()).device
    worst = 0.0
    with _eval(model, reference), torch.no_grad():
        for seed, (batch_size, seq_len) in enumerate(((2, 9), (3, 16))):
            inputs = sample_inputs(vocab_size, batch_size=batch_size, seq_len=seq_len, seed=seed)
            got = _main(model(**{k: v.to(device) for k, v in inputs.items()})).float().cpu()
            want = _main(reference(**{k: v.to(ref_device) for k, v in inputs.items()}))
            worst = max(worst, float((got - want.float().cpu()).abs().max()))
    return worst


def masked_supernet(supernet: Supernet, subnet: Subnet, masks: dict[str, Tensor]) -> Supernet:
    """A copy of ``supernet`` whose ``subnet`` weights are zeroed where the export's ``masks`` are.

    ``masks`` map the exported model's Linear names (layer i = the subnet's i-th kept layer) to
    boolean masks of the exported (sliced) weight shapes.
    """
    masked = copy.deepcopy(supernet)
    layer_key = "encoder.layer."
    modules = dict(masked.model.named_modules())
    with torch.no_grad():
        for name, mask in masks.items():
            source = name
            prefix, found, rest = name.partition(layer_key)
            if found:
                index, _, tail = rest.partition(".")
                source = f"{prefix}{layer_key}{subnet.layers[int(index)]}.{tail}"
            weight = modules[source].weight
            rows, cols = mask.shape
            weight[:rows, :cols].mul_(mask.to(weight.device))
    return masked


def check_diff(reference: Any, diff: float, atol: float) -> VerifyResult:
    """A passed :class:`VerifyResult`, or ``ValueError`` when ``diff`` exceeds ``atol``."""
    if diff > atol:
        raise ValueError(
            f"exported outputs differ from the {reference}'s by {diff:.2e} > {atol:.0e}: the export "
            "does not compute the subnet"
        )
    return VerifyResult(reference=reference, max_abs_diff=diff, atol=atol, passed=True)
