"""The runtime a model is deployed with, for timing: eager PyTorch, torch.compile, ONNX Runtime.

A latency is only true for the runtime it was measured in: ONNX Runtime ran the MiniLM shape
at 13.9 ms where eager PyTorch took 22.4 ms on the same core. The runtime is therefore part of
every :class:`search.LatencyTarget`, and a latency model profiled for one is refused for another.

- ``eager``: the module as it is, under ``torch.inference_mode``.
- ``compile``: ``torch.compile(model)`` (inductor; needs a C++ compiler on CPU); the warm-up
  calls compile it, timing starts after.
- ``onnxruntime``: the model exported to ONNX (TorchScript exporter, opset 17) into a temporary
  file and run by an ``InferenceSession`` with ``intra_op_num_threads`` set to the target's
  threads; the CUDA provider on a CUDA target (``pip install onnxruntime-gpu``).
"""

from __future__ import annotations

import importlib.util
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["RUNTIMES", "check_runtime", "runtime_call"]

RUNTIMES = ("eager", "compile", "onnxruntime")


def check_runtime(runtime: str, device: str) -> None:
    """Refuse (ValueError, one line) a runtime that is unknown or not installed here."""
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}: use one of {', '.join(RUNTIMES)}")
    if runtime == "onnxruntime":
        if (
            importlib.util.find_spec("onnxruntime") is None
            or importlib.util.find_spec("onnx") is None
        ):
            raise ValueError(
                "runtime 'onnxruntime' needs onnx and onnxruntime: pip install onnx onnxruntime"
            )
        if torch.device(device).type == "cuda":
            import onnxruntime

            if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
                raise ValueError(
                    "runtime 'onnxruntime' on cuda needs its CUDA provider: pip install "
                    "onnxruntime-gpu"
                )


class _Positional(nn.Module):
    """Keyword inputs as positional ones and the first output tensor, as ONNX export wants."""

    def __init__(self, model: nn.Module, names: list[str]) -> None:
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        if self.names:
            out = self.model(**dict(zip(self.names, args)))
        else:
            out = self.model(*args)
        if isinstance(out, torch.Tensor):
            return out
        logits = getattr(out, "logits", None)
        return logits if logits is not None else out[0]


def _onnx_call(
    model: nn.Module,
    inputs: dict[str, torch.Tensor] | torch.Tensor,
    device: torch.device,
    threads: int,
) -> Callable[[], Any]:
    import onnxruntime

    names = [] if isinstance(inputs, torch.Tensor) else list(inputs)
    tensors = [inputs] if isinstance(inputs, torch.Tensor) else [inputs[n] for n in names]
    input_names = names or ["images"]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer warnings about python bools are expected
            torch.onnx.export(
                _Positional(model, names).eval(),
                tuple(t.cpu() for t in tensors),
                str(path),
                dynamo=False,
                input_names=input_names,
                opset_version=17,
            )
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        providers = (
            ["CUDAExecutionProvider", "CPUExecutionProvider"]
            if device.type == "cuda"
            else ["CPUExecutionProvider"]
        )
        # the session holds the model in memory: the file may go once it is created
        session = onnxruntime.InferenceSession(str(path), options, providers=providers)
    feeds = {n: t.cpu().numpy() for n, t in zip(input_names, tensors)}
    return lambda: session.run(None, feeds)


def runtime_call(
    runtime: str,
    model: nn.Module,
    inputs: dict[str, torch.Tensor] | torch.Tensor,
    device: torch.device,
    threads: int,
) -> Callable[[], Any]:
    """A zero-argument call that runs ``model`` on ``inputs`` in ``runtime`` (already on the
    target's device and dtype)."""
    if runtime == "eager":
        if isinstance(inputs, torch.Tensor):
            return lambda: model(inputs)
        return lambda: model(**inputs)
    if runtime == "compile":
        compiled = torch.compile(model)
        if isinstance(inputs, torch.Tensor):
            return lambda: compiled(inputs)
        return lambda: compiled(**inputs)
    if runtime == "onnxruntime":
        return _onnx_call(model, inputs, device, threads)
    raise ValueError(f"unknown runtime {runtime!r}: use one of {', '.join(RUNTIMES)}")
