"""ONNX export of an exported model: dynamic batch and sequence axes, checked with onnxruntime."""

from __future__ import annotations

import importlib.util
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["export_onnx", "check_onnx", "ONNX_FILE"]

logger = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
_INPUTS = ("input_ids", "attention_mask")
_OPSET = 17


class _Wrapper(nn.Module):
    """Positional inputs and one tensor out, as the TorchScript exporter wants."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        outputs = self.model(input_ids=input_ids, attention_mask=attention_mask)
        logits = getattr(outputs, "logits", None)
        return logits if logits is not None else outputs.last_hidden_state


def _output_name(model: nn.Module) -> str:
    return "logits" if hasattr(model, "classifier") else "last_hidden_state"


def sample_inputs(
    vocab_size: int, *, batch_size: int = 2, seq_len: int = 8, seed: int = 0
) -> dict[str, Tensor]:
    """Token ids and an attention mask with padding at the end of every row but the first."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(vocab_size, (batch_size, seq_len), generator=generator)
    attention_mask = torch.ones(batch_size, seq_len, dtype=torch.long)
    for row in range(1, batch_size):
        attention_mask[row, max(1, seq_len - 2 * row) :] = 0
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def export_onnx(model: Any, path: str | os.PathLike) -> Path:
    """Write ``model`` (a transformers encoder, eval mode) as ONNX with dynamic batch and length.

    Uses the TorchScript exporter (the dynamo one needs onnxscript, which is not a dependency).
    """
    path = Path(path)
    wrapper = _Wrapper(model).eval()  # export traces in the module's own mode: dropout off
    inputs = sample_inputs(model.config.vocab_size)
    output = _output_name(model)
    axes: dict[str, dict[int, str]] = {name: {0: "batch", 1: "sequence"} for name in _INPUTS}
    axes[output] = {0: "batch"} if output == "logits" else {0: "batch", 1: "sequence"}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about python bools are expected
        torch.onnx.export(
            wrapper,
            (inputs["input_ids"], inputs["attention_mask"]),
            str(path),
            dynamo=False,
            input_names=list(_INPUTS),
            output_names=[output],
            dynamic_axes=axes,
            opset_version=_OPSET,
        )
    return path


def check_onnx(model: Any, path: str | os.PathLike, *, atol: float = 1e-4) -> dict[str, Any]:
    """Run the ONNX file with onnxruntime on two input shapes and compare with ``model``.

    Returns ``{"checked": bool, "max_abs_diff": float | None, "atol": atol}``; ``checked`` is
    False (and the check skipped) when onnxruntime is not installed.

    Raises:
        ValueError: the outputs differ by more than ``atol``.
    """
    if importlib.util.find_spec("onnxruntime") is None:
        logger.warning("onnxruntime is not installed: %s was written but not checked", path)
        return {"checked": False, "max_abs_diff": None, "atol": atol}
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    vocab_size: int = model.config.vocab_size
    for batch_size, seq_len in ((1, 5), (3, 13)):  # other shapes than the traced (2, 8)
        inputs = sample_inputs(vocab_size, batch_size=batch_size, seq_len=seq_len)
        got = session.run(None, {k: v.numpy() for k, v in inputs.items()})[0]
        with torch.no_grad():
            want = _Wrapper(model).eval()(**inputs).float().cpu().numpy()
        worst = max(worst, float(abs(got - want).max()))
    if worst > atol:
        raise ValueError(f"ONNX outputs differ from the model's by {worst:.2e} > {atol:.0e}")
    return {"checked": True, "max_abs_diff": worst, "atol": atol}
