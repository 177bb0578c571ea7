"""Measured latency: one model, or several interleaved, on a named device, dtype and input shape.

Every figure carries where it was measured (device name, dtype, batch size, sequence length or
image size, torch version, threads), so a number is never read without its conditions.
"""

from __future__ import annotations

import contextlib
import copy
import platform
import statistics
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from torch import nn

from ofa.supernet import Supernet
from search.runtimes import check_runtime, runtime_call

__all__ = [
    "LatencyResult",
    "LatencyTarget",
    "compare_latency",
    "device_name",
    "example_inputs",
    "measure_latency",
]

DType = Literal["float32", "float16", "bfloat16"]
_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}

PHASES = ("prefill", "decode")
MEMORY_FORMATS = ("contiguous", "channels_last")


class BoundInputs:
    """Inputs that depend on the model they feed (a KV cache filled by that model): a timed
    call is made by :meth:`bind` instead of passing tensors."""

    batch_size: int
    seq_len: int

    def bind(
        self, model: nn.Module, device: torch.device, dtype: torch.dtype
    ) -> Callable[[], Any]:
        raise NotImplementedError


Inputs = Mapping[str, torch.Tensor] | torch.Tensor | BoundInputs


def device_name(device: str | torch.device) -> str:
    """A human name of the device: the GPU's product name, or the CPU model and core count."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    return f"CPU {cpu}"


def _dtype(name: str) -> torch.dtype:
    if name not in _DTYPES:
        raise ValueError(f"unknown dtype {name!r}: use one of {sorted(_DTYPES)}")
    return _DTYPES[name]


@dataclass(frozen=True, kw_only=True)
class LatencyTarget:
    """Where and on what a latency is measured: device, dtype, input shape and CPU threads.

    Attributes:
        device: a torch device string (``"cpu"``, ``"cuda"``, ``"cuda:1"``).
        dtype: ``"float32"``, ``"float16"`` or ``"bfloat16"``.
        batch_size: sequences (or images) per forward pass.
        seq_len: tokens per sequence (BERT-family models; CNNs ignore it).
        num_threads: torch intra-op threads on CPU (fixed while measuring).
        image_size: (height, width) of a CNN's input; ``None`` for BERT-family models. Profiling
            or measuring a CNN fills it in from the search space's ``image_size`` when unset;
            the input channels come from the model.
        runtime: what runs the model: ``"eager"`` PyTorch, ``"compile"`` (torch.compile) or
            ``"onnxruntime"`` (see :mod:`search.runtimes`).
        phase: what a causal LM's latency is of: ``"prefill"``, a prompt of ``seq_len``
            tokens as ``generate`` runs it first, or ``"decode"``, one new token per sequence
            with ``seq_len`` tokens already in the KV cache (ms per generated token).
        memory_format: how a CNN's weights and images are laid out while it runs:
            ``"contiguous"`` (NCHW, PyTorch's default) or ``"channels_last"`` (NHWC, what
            ``model.to(memory_format=torch.channels_last)`` gives). On CPU channels-last
            convolutions are faster, most of all at narrow widths: time the format you will
            deploy in.
    """

    device: str = "cpu"
    dtype: DType = "float32"
    batch_size: int = 1
    seq_len: int = 128
    num_threads: int = 2
    image_size: tuple[int, int] | None = None
    runtime: str = "eager"
    phase: str = "prefill"
    memory_format: str = "contiguous"
    version: int = 1

    def __post_init__(self) -> None:
        _dtype(self.dtype)
        if self.image_size is not None:
            size: Any = self.image_size
            try:
                pair = (int(size),) * 2 if isinstance(size, int) else tuple(int(v) for v in size)
            except (TypeError, ValueError):
                pair = ()
            if len(pair) != 2 or min(pair) < 1:
                raise ValueError(
                    f"image_size {size!r} must be a positive int or (height, width) of them"
                )
            object.__setattr__(self, "image_size", pair)
        try:
            kind = torch.device(self.device).type
        except RuntimeError:
            kind = None
        if kind not in ("cpu", "cuda"):
            raise ValueError(f"unknown device {self.device!r}: use cpu, cuda or cuda:N")
        if self.batch_size < 1 or self.seq_len < 1 or self.num_threads < 1:
            raise ValueError("batch_size, seq_len and num_threads must be positive")
        if torch.device(self.device).type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {self.device!r} asked for, but CUDA is not available here")
        check_runtime(self.runtime, self.device)
        if self.phase not in PHASES:
            raise ValueError(f"unknown phase {self.phase!r}: use one of {', '.join(PHASES)}")
        if self.memory_format not in MEMORY_FORMATS:
            raise ValueError(
                f"unknown memory_format {self.memory_format!r}: use contiguous or channels_last"
            )
        if self.memory_format == "channels_last" and self.runtime == "onnxruntime":
            raise ValueError(
                "onnxruntime picks its own layout: time channels_last in eager or compile"
            )
        if self.phase == "decode" and self.runtime != "eager":
            raise ValueError(
                f"decode latency is measured in eager PyTorch (a KV cache step), not "
                f"{self.runtime}: use --runtime eager, or time the prefill"
            )

    def describe(self) -> str:
        shape = (
            f"image {self.image_size[0]}x{self.image_size[1]}"
            if self.image_size is not None
            else f"decode at context {self.seq_len}"
            if self.phase == "decode"
            else f"seq {self.seq_len}"
        )
        return (
            f"{self.device} {self.dtype} batch {self.batch_size} {shape}"
            + (f" {self.num_threads} threads" if torch.device(self.device).type == "cpu" else "")
            + ("" if self.runtime == "eager" else f" {self.runtime}")
            + (" channels_last" if self.memory_format == "channels_last" else "")
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.runtime == "eager":  # eager targets keep the JSON they always had
            del data["runtime"]
        if self.phase == "prefill":  # and so do prefill (and encoder, CNN) targets
            del data["phase"]
        if self.memory_format == "contiguous":  # and contiguous ones
            del data["memory_format"]
        if self.image_size is None:  # BERT targets keep the JSON they always had
            del data["image_size"]
        else:
            data["image_size"] = list(self.image_size)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatencyTarget:
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown LatencyTarget fields {sorted(unknown)}")
        return cls(**data)


@dataclass(frozen=True, kw_only=True)
class LatencyResult:
    """Median and spread of repeated timings of one forward pass, in milliseconds.

    ``seq_len`` is the inputs' second dimension for token inputs; image inputs ``(B, C, H, W)``
    record ``seq_len`` 0 and their ``image_size`` instead.
    """

    median_ms: float
    iqr_ms: float
    min_ms: float
    max_ms: float
    times_ms: tuple[float, ...]
    device: str
    device_name: str
    dtype: str
    batch_size: int
    seq_len: int
    num_threads: int
    torch_version: str
    image_size: tuple[int, int] | None = None

    @property
    def relative_spread(self) -> float:
        """Interquartile range over the median: the noise of this measurement."""
        return self.iqr_ms / self.median_ms if self.median_ms > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def example_inputs(
    *, batch_size: int, seq_len: int, vocab_size: int, device: str = "cpu", seed: int = 0
) -> dict[str, torch.Tensor]:
    """Random token ids and a full attention mask of the given shape."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(vocab_size, (batch_size, seq_len), generator=generator)
    mask = torch.ones(batch_size, seq_len, dtype=torch.long)
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device)}


def _shape(inputs: Inputs) -> tuple[int, int, tuple[int, int] | None]:
    """Batch size, sequence length and image size (images: ``(B, C, H, W)``) of the inputs."""
    if isinstance(inputs, BoundInputs):
        return inputs.batch_size, inputs.seq_len, None
    tensor = inputs if isinstance(inputs, torch.Tensor) else next(iter(inputs.values()))
    if tensor.dim() == 4:
        return int(tensor.shape[0]), 0, (int(tensor.shape[2]), int(tensor.shape[3]))
    return int(tensor.shape[0]), int(tensor.shape[1]) if tensor.dim() > 1 else 1, None


def _tensors(inputs: torch.Tensor | Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
    return [inputs] if isinstance(inputs, torch.Tensor) else list(inputs.values())


@contextlib.contextmanager
def _threads(count: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _prepare(
    model: nn.Module,
    inputs: Inputs,
    device: torch.device,
    dtype: torch.dtype,
    runtime: str = "eager",
    threads: int = 1,
    *,
    memory_format: str = "contiguous",
) -> Callable[[], Any]:
    """The model on ``device``/``dtype`` (a copy if it has to move, or to change its layout to
    ``memory_format``) and a call that runs it in ``runtime`` (see :mod:`search.runtimes`)."""
    channels_last = memory_format == "channels_last"
    if channels_last and (
        isinstance(inputs, BoundInputs)
        or not any(t.dim() == 4 for t in _tensors(inputs) if t.is_floating_point())
    ):
        raise ValueError(
            "memory_format='channels_last' lays out images (B, C, H, W): these inputs hold "
            "none, so time this model contiguous"
        )
    first = next(model.parameters(), None)
    if first is not None and (first.device != device or first.dtype != dtype):
        model = copy.deepcopy(model).to(device=device, dtype=dtype)
    elif channels_last:
        model = copy.deepcopy(model)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.eval()
    if isinstance(inputs, BoundInputs):
        return inputs.bind(model, device, dtype)

    def move(tensor: torch.Tensor) -> torch.Tensor:
        # floating inputs (hidden states, images) in the model's dtype; token ids stay ints
        cast = dtype if tensor.is_floating_point() else tensor.dtype
        moved = tensor.to(device=device, dtype=cast)
        if channels_last and moved.dim() == 4:
            moved = moved.contiguous(memory_format=torch.channels_last)
        return moved

    moved: Any = (
        move(inputs)
        if isinstance(inputs, torch.Tensor)
        else {k: move(v) for k, v in inputs.items()}
    )
    return runtime_call(runtime, model, moved, device, threads)


def _timer(device: torch.device, num_threads: int = 0) -> Callable[[Callable[[], Any]], float]:
    """Times one call in ms: CUDA events with synchronisation on GPU; on CPU with one thread,
    the CPU time of the calling thread (torch runs every op in it, so on a quiet machine it
    equals the wall time, and on a busy one it leaves out the time slices other jobs took:
    measured 15.5 ms both ways where the wall clock said 47); otherwise perf_counter."""
    if device.type == "cuda":

        def cuda_time(call: Callable[[], Any]) -> float:
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize(device)
            start.record()
            call()
            end.record()
            torch.cuda.synchronize(device)
            return float(start.elapsed_time(end))

        return cuda_time

    if num_threads == 1 and hasattr(time, "thread_time"):

        def thread_time(call: Callable[[], Any]) -> float:
            begin = time.thread_time()
            call()
            return (time.thread_time() - begin) * 1000.0

        return thread_time

    def wall_time(call: Callable[[], Any]) -> float:
        begin = time.perf_counter()
        call()
        return (time.perf_counter() - begin) * 1000.0

    return wall_time


def _result(times: list[float], inputs: Inputs, target: LatencyTarget) -> LatencyResult:
    ordered = sorted(times)
    quartiles = statistics.quantiles(ordered, n=4) if len(ordered) > 1 else [ordered[0]] * 3
    batch_size, seq_len, image_size = _shape(inputs)
    return LatencyResult(
        median_ms=statistics.median(ordered),
        iqr_ms=quartiles[2] - quartiles[0],
        min_ms=ordered[0],
        max_ms=ordered[-1],
        times_ms=tuple(times),
        device=target.device,
        device_name=device_name(target.device),
        dtype=target.dtype,
        batch_size=batch_size,
        seq_len=seq_len,
        num_threads=target.num_threads,
        torch_version=torch.__version__,
        image_size=image_size,
    )


def _check_counts(warmup: int, rounds: int) -> None:
    if warmup < 0 or rounds < 1:
        raise ValueError(f"warmup={warmup} and rounds={rounds}: need warmup >= 0 and rounds >= 1")


def measure_latency(
    model: nn.Module,
    example_inputs: Inputs,
    *,
    device: str = "cpu",
    dtype: DType = "float32",
    warmup: int = 3,
    rounds: int = 10,
    num_threads: int = 2,
    repeats: int = 1,
    runtime: str = "eager",
    memory_format: str = "contiguous",
) -> LatencyResult:
    """Time ``model(**example_inputs)`` on a device: warmup, then ``rounds`` timed calls.

    With ``repeats`` > 1 each round is the fastest of that many back-to-back calls (a low
    quantile that bursts of interference from other jobs seldom reach). The model is copied
    when it has to move to ``device``/``dtype``; the given one is unchanged. To compare models,
    use :func:`search.timing.measure_paired`, which also bounds the spread.

    Example:
        >>> inputs = example_inputs(batch_size=1, seq_len=128, vocab_size=30522)
        >>> result = measure_latency(bert, inputs, device="cpu", rounds=10)
        >>> result.median_ms, result.relative_spread
    """
    _check_counts(warmup, rounds)
    target = LatencyTarget(
        device=device,
        dtype=dtype,
        num_threads=num_threads,
        runtime=runtime,
        memory_format=memory_format,
    )
    torch_device = torch.device(device)
    time_one = _timer(torch_device, num_threads)
    with _threads(num_threads), torch.inference_mode():
        call = _prepare(
            model,
            example_inputs,
            torch_device,
            _dtype(dtype),
            runtime,
            num_threads,
            memory_format=memory_format,
        )
        for _ in range(warmup):
            call()
        times = [min(time_one(call) for _ in range(max(1, repeats))) for _ in range(rounds)]
    return _result(times, example_inputs, target)


def compare_latency(
    models: Mapping[str, nn.Module],
    example_inputs: Inputs,
    *,
    device: str = "cpu",
    dtype: DType = "float32",
    warmup: int = 3,
    rounds: int = 10,
    num_threads: int = 2,
) -> dict[str, LatencyResult]:
    """Time several models interleaved (one call of each per round, order rotating).

    Drift of a shared machine then hits every candidate alike, so their ratios are fair.

    Example:
        >>> results = compare_latency({"big": big, "small": small}, inputs, rounds=20)
        >>> results["small"].median_ms / results["big"].median_ms
    """
    _check_counts(warmup, rounds)
    if not models:
        raise ValueError("compare_latency needs at least one model")
    target = LatencyTarget(device=device, dtype=dtype, num_threads=num_threads)
    torch_device = torch.device(device)
    time_one = _timer(torch_device, num_threads)
    names = list(models)
    times: dict[str, list[float]] = {name: [] for name in names}
    with _threads(num_threads), torch.inference_mode():
        calls = {
            n: _prepare(models[n], example_inputs, torch_device, _dtype(dtype)) for n in names
        }
        for _ in range(warmup):
            for name in names:
                calls[name]()
        for round_index in range(rounds):
            shift = round_index % len(names)
            for name in names[shift:] + names[:shift]:
                times[name].append(time_one(calls[name]))
    return {name: _result(times[name], example_inputs, target) for name in names}


def check_fits(supernet: Supernet, target: LatencyTarget) -> None:
    """Refuse a sequence length the model has no position embeddings for."""
    config = getattr(supernet, "config", None)
    positions = getattr(config, "max_position_embeddings", None)
    if positions is None:
        return
    if getattr(config, "model_type", "") in ("roberta", "xlm-roberta"):
        positions -= int(config.pad_token_id) + 1  # positions start after the padding index
    if target.seq_len > positions:
        raise ValueError(
            f"seq_len {target.seq_len} exceeds the model's max_position_embeddings "
            f"({positions} usable positions): pass --seq-len {positions} or less"
        )
