"""2:4 (semi-structured) sparsity: magnitude masks, a masked recovery fine-tune, GPU kernels.

Weights are stored dense with their zeros (safetensors refuses sparse layouts). At load on a
CUDA device of compute capability >= 8.0 a layer becomes ``to_sparse_semi_structured`` only where
a micro-benchmark on that device shows it faster than dense; on CPU every layer runs dense.
"""

from __future__ import annotations

import fnmatch
import functools
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ofa._json import JsonMixin

__all__ = [
    "SparsityConfig",
    "select_layers",
    "select_linears",
    "mask_2_4",
    "apply_2_4_",
    "is_2_4",
    "finetune_masked_",
    "choose_semi_structured",
    "to_semi_structured_",
]

logger = logging.getLogger(__name__)

# The fp16/bf16 kernels' smallest tile (CUTLASS: 32 rows, 64 columns; cuSPARSELt takes 16x16):
# a weight of (out_features, in_features) must be a multiple of it in both dimensions.
KERNEL_ROWS, KERNEL_COLS = 32, 64
_ENCODER_LINEARS = (
    "*encoder.layer.*.attention.self.query",
    "*encoder.layer.*.attention.self.key",
    "*encoder.layer.*.attention.self.value",
    "*encoder.layer.*.attention.output.dense",
    "*encoder.layer.*.intermediate.dense",
    "*encoder.layer.*.output.dense",
)


@dataclass(frozen=True, kw_only=True)
class SparsityConfig(JsonMixin):
    """How to make an exported model 2:4 sparse.

    Attributes:
        pattern: only ``"2:4"`` (two zeros in every four consecutive input weights).
        layers: ``fnmatch`` patterns over module names; ``None`` takes every encoder Linear whose
            shape the kernels can take (others stay dense, listed in the manifest). Named
            patterns are strict: a matched layer the kernels cannot take is an error.
        finetune_steps: steps of the recovery fine-tune (distillation from the dense subnet with
            the masks fixed); 0 skips it.
        learning_rate: AdamW learning rate of the fine-tune.
        temperature: softening of the logit distillation loss.
        seed: seed of the fine-tune.

    Example:
        >>> config = export.ExportConfig(sparsity=SparsityConfig(finetune_steps=200))
        >>> export.save(supernet, subnet, "out/", config=config, finetune_data=batches)
    """

    pattern: Literal["2:4"] = "2:4"
    layers: tuple[str, ...] | None = None
    finetune_steps: int = 0
    learning_rate: float = 3e-5
    temperature: float = 2.0
    seed: int = 0
    version: int = 1

    def __post_init__(self) -> None:
        if self.pattern != "2:4":
            raise ValueError(f"sparsity pattern {self.pattern!r} is not supported: use '2:4'")
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(str(p) for p in self.layers))
            if not self.layers:
                raise ValueError("layers is empty: give patterns, or None for the encoder's")
        if self.finetune_steps < 0 or self.learning_rate <= 0 or self.temperature <= 0:
            raise ValueError("finetune_steps >= 0, learning_rate > 0 and temperature > 0 please")
        if self.version != 1:
            raise ValueError(f"SparsityConfig version {self.version} is not supported")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["layers"] = None if self.layers is None else list(self.layers)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SparsityConfig:
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(
                f"unknown SparsityConfig fields {sorted(unknown)}; known {sorted(known)}"
            )
        values = dict(data)
        if values.get("layers") is not None:
            values["layers"] = tuple(values["layers"])
        return cls(**values)


def kernel_takes(linear: nn.Linear) -> bool:
    out_features, in_features = linear.weight.shape
    return out_features % KERNEL_ROWS == 0 and in_features % KERNEL_COLS == 0


def select_linears(model: nn.Module, config: SparsityConfig) -> tuple[list[str], list[str]]:
    """Names of the Linear layers to sparsify, and of the default ones left dense (bad shape).

    Raises:
        ValueError: a pattern matches nothing, or a named layer's shape the kernels cannot take.
    """
    linears = {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    patterns = config.layers if config.layers is not None else _ENCODER_LINEARS
    chosen, skipped = [], []
    for pattern in patterns:
        matched = [n for n in linears if fnmatch.fnmatchcase(n, pattern)]
        if not matched and config.layers is not None:
            raise ValueError(
                f"sparsity layer pattern {pattern!r} matches no Linear layer; names look like "
                f"{next(iter(linears), '?')!r}"
            )
        for name in matched:
            if name in chosen or name in skipped:
                continue
            if kernel_takes(linears[name]):
                chosen.append(name)
            elif config.layers is not None:
                out_features, in_features = linears[name].weight.shape
                raise ValueError(
                    f"2:4 cannot take layer {name} of shape ({out_features}, {in_features}): the "
                    f"kernels need out_features % {KERNEL_ROWS} == 0 and in_features % "
                    f"{KERNEL_COLS} == 0; leave it out of SparsityConfig.layers"
                )
            else:
                skipped.append(name)
    if not chosen:
        raise ValueError(
            "no Linear layer of this subnet has a shape the 2:4 kernels take "
            f"(out % {KERNEL_ROWS}, in % {KERNEL_COLS}); export it without sparsity"
        )
    return sorted(chosen, key=list(linears).index), skipped


def mask_2_4(weight: Tensor) -> Tensor:
    """Boolean mask keeping the two largest-magnitude weights of every four consecutive inputs."""
    out_features, in_features = weight.shape
    if in_features % 4:
        raise ValueError(f"2:4 needs in_features divisible by 4, got {in_features}")
    groups = weight.detach().abs().reshape(out_features, in_features // 4, 4)
    keep = groups.topk(2, dim=-1).indices
    mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, keep, True)
    return mask.reshape(out_features, in_features)


def is_2_4(weight: Tensor) -> bool:
    """True when every four consecutive inputs of every row hold at most two nonzeros."""
    out_features, in_features = weight.shape
    if in_features % 4:
        return False
    nonzero = (weight.detach() != 0).reshape(out_features, in_features // 4, 4).sum(-1)
    return bool((nonzero <= 2).all())


def apply_2_4_(model: nn.Module, names: Iterable[str]) -> dict[str, Tensor]:
    """Zero the pruned weights of each named Linear in place; returns the masks."""
    modules = dict(model.named_modules())
    masks = {}
    with torch.no_grad():
        for name in names:
            weight = modules[name].weight
            masks[name] = mask_2_4(weight)
            weight.mul_(masks[name])
    return masks


def _main_output(outputs: Any) -> Tensor:
    logits = getattr(outputs, "logits", None)
    return logits if logits is not None else outputs.last_hidden_state


def finetune_masked_(
    student: nn.Module,
    teacher: nn.Module,
    masks: Mapping[str, Tensor],
    batches: Iterable[Mapping[str, Tensor]],
    config: SparsityConfig,
) -> list[float]:
    """Distil ``teacher`` into ``student`` for ``config.finetune_steps`` steps, masks fixed.

    The loss is the KL divergence of the logits at ``config.temperature`` (MSE of the last
    hidden state for bare encoders). Returns the loss of each step.
    """
    from ofa.distill import kl_logit_loss, mse_logit_loss

    modules = dict(student.named_modules())
    torch.manual_seed(config.seed)
    optimizer = torch.optim.AdamW(student.parameters(), lr=config.learning_rate, weight_decay=0.0)
    losses: list[float] = []
    teacher.eval()
    student.train()
    try:
        while len(losses) < config.finetune_steps:
            seen = len(losses)
            for batch in batches:
                inputs = {k: v for k, v in batch.items() if k != "labels"}
                with torch.no_grad():
                    target = _main_output(teacher(**inputs))
                output = _main_output(student(**inputs))
                if getattr(student.config, "num_labels", 0) and hasattr(student, "classifier"):
                    loss = kl_logit_loss(output, target, temperature=config.temperature)
                else:
                    loss = mse_logit_loss(output, target)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                with torch.no_grad():  # the pruned weights stay zero
                    for name, mask in masks.items():
                        modules[name].weight.mul_(mask)
                losses.append(float(loss.detach()))
                if len(losses) >= config.finetune_steps:
                    break
            if len(losses) == seen:
                raise ValueError("finetune_data yielded no batches")
    finally:
        student.eval()
    logger.info("2:4 recovery fine-tune: loss %.4f -> %.4f", losses[0], losses[-1])
    return losses


@functools.lru_cache(maxsize=None)
def say_dense_once(device_type: str) -> None:
    """Log once per device (and dtype) that 2:4 weights run as dense matrices there."""
    logger.info(
        "2:4 weights run dense on %s (the semi-structured kernels need CUDA >= 8.0)", device_type
    )


def _median_ms(fn: Any, *, repeats: int = 20) -> float:
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return sorted(times)[len(times) // 2]


def kernels_available(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 0)


def choose_semi_structured(
    model: nn.Module, names: Iterable[str], *, tokens: int = 2048, margin: float = 0.97
) -> dict[str, dict[str, float | bool]]:
    """Time each named layer dense and 2:4 on its device; a layer wins when sparse < margin*dense.

    Returns ``{name: {"dense_ms", "sparse_ms", "use": bool}}``; empty off CUDA >= 8.0.
    """
    from torch.sparse import to_sparse_semi_structured

    modules = dict(model.named_modules())
    decisions: dict[str, dict[str, float | bool]] = {}
    for name in names:
        linear = modules[name]
        weight = linear.weight.detach()
        if not kernels_available(weight.device) or weight.dtype not in (
            torch.float16,
            torch.bfloat16,
        ):
            say_dense_once(f"{weight.device.type} ({weight.dtype})")
            return {}
        x = torch.randn(tokens, weight.shape[1], device=weight.device, dtype=weight.dtype)
        sparse = to_sparse_semi_structured(weight)
        dense_ms = _median_ms(lambda: F.linear(x, weight, linear.bias))
        sparse_ms = _median_ms(lambda: F.linear(x, sparse, linear.bias))
        decisions[name] = {
            "dense_ms": dense_ms,
            "sparse_ms": sparse_ms,
            "use": sparse_ms < margin * dense_ms,
        }
    return decisions


def to_semi_structured_(model: nn.Module, names: Iterable[str]) -> list[str]:
    """Swap the named layers' weights for ``to_sparse_semi_structured`` ones (CUDA >= 8.0)."""
    from torch.sparse import to_sparse_semi_structured

    modules = dict(model.named_modules())
    converted = []
    for name in names:
        linear = modules[name]
        if not kernels_available(linear.weight.device):
            say_dense_once(linear.weight.device.type)
            return []
        linear.weight = nn.Parameter(
            to_sparse_semi_structured(linear.weight.detach()), requires_grad=False
        )
        converted.append(name)
    return converted


def sparsity_config(sparsity: SparsityConfig | str | None) -> SparsityConfig | None:
    if isinstance(sparsity, str):
        if sparsity != "2:4":
            raise ValueError(f"sparsity {sparsity!r} is not supported: use '2:4' or None")
        return SparsityConfig()
    if sparsity is not None and not isinstance(sparsity, SparsityConfig):
        raise TypeError(f"sparsity must be '2:4', a SparsityConfig or None, not {sparsity!r}")
    return sparsity


def select_layers(model: nn.Module, config: SparsityConfig) -> tuple[list[str], list[str]]:
    """The former name of :func:`select_linears` (``ofa.space.select_layers`` picks encoder
    layers; this picks Linear modules); kept for one release, with a ``DeprecationWarning``."""
    import warnings

    warnings.warn(
        "export.sparsity.select_layers is now select_linears: the old name goes in the next "
        "release",
        DeprecationWarning,
        stacklevel=2,
    )
    return select_linears(model, config)
