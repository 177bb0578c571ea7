"""Distillation losses, usable for any student / teacher pair.

- logits: KL divergence at temperature ``T`` scaled by ``T**2`` (Hinton et al.), or MSE;
- hidden states: MSE between mapped layers, with the student layers matched to teacher layers
  either evenly spaced or dynamically (each student layer to the teacher layer of least loss,
  as NNI's ``DynamicLayerwiseDistiller``), through a learned linear adaptor where the widths
  differ (as NNI's ``Adaptive1dLayerwiseDistiller``);
- the hard-label cross-entropy with weight ``alpha``.

``total = alpha * CE + (1 - alpha) * logit_loss + hidden_weight * hidden_loss``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ofa._json import JsonMixin

__all__ = [
    "DistillConfig",
    "HiddenAdaptor",
    "kl_logit_loss",
    "mse_logit_loss",
    "evenly_spaced_map",
    "hidden_loss",
    "distillation_loss",
]

LogitLoss = Literal["kl", "mse"]
LayerMapping = Literal["evenly_spaced", "dynamic"]


@dataclass(frozen=True, kw_only=True)
class DistillConfig(JsonMixin):
    """How a student learns from a teacher.

    Attributes:
        logit_loss: ``"kl"`` (KL at ``temperature``, times ``temperature**2``) or ``"mse"``.
        temperature: softening of both distributions for ``"kl"``.
        alpha: weight of the hard-label cross-entropy; the logit loss gets ``1 - alpha``.
        hidden_weight: weight of the hidden-state MSE (0 switches it off).
        layer_mapping: ``"evenly_spaced"`` or ``"dynamic"`` (least-loss teacher layer).
    """

    logit_loss: LogitLoss = "kl"
    temperature: float = 1.0
    alpha: float = 0.0
    hidden_weight: float = 0.0
    layer_mapping: LayerMapping = "evenly_spaced"
    version: int = 1

    def __post_init__(self) -> None:
        if self.logit_loss not in ("kl", "mse"):
            raise ValueError(f"logit_loss must be 'kl' or 'mse', got {self.logit_loss!r}")
        if self.layer_mapping not in ("evenly_spaced", "dynamic"):
            raise ValueError(
                f"layer_mapping must be 'evenly_spaced' or 'dynamic', got {self.layer_mapping!r}"
            )
        if not self.temperature > 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")
        if not 0 <= self.alpha <= 1:
            raise ValueError(f"alpha is a weight in [0, 1], got {self.alpha}")
        if self.hidden_weight < 0:
            raise ValueError(f"hidden_weight must be >= 0, got {self.hidden_weight}")
        if self.version != 1:
            raise ValueError(f"DistillConfig version {self.version} is not supported")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DistillConfig:
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown DistillConfig fields {sorted(unknown)}")
        return cls(**data)


def kl_logit_loss(student: Tensor, teacher: Tensor, *, temperature: float = 1.0) -> Tensor:
    """``T**2 * KL(softmax(teacher / T) || softmax(student / T))``, averaged over the batch."""
    log_p = F.log_softmax(student.float() / temperature, dim=-1)
    q = F.softmax(teacher.float().detach() / temperature, dim=-1)
    return F.kl_div(log_p, q, reduction="batchmean") * temperature**2


def mse_logit_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """Mean squared difference of the raw logits."""
    return F.mse_loss(student.float(), teacher.float().detach())


def evenly_spaced_map(num_student: int, num_teacher: int) -> tuple[int, ...]:
    """Teacher layer for each student layer, spread evenly and ending at the last layer.

    Example:
        >>> evenly_spaced_map(3, 6)
        (1, 3, 5)
    """
    if not 1 <= num_student <= num_teacher:
        raise ValueError(
            f"cannot map {num_student} student layers onto {num_teacher} teacher layers"
        )
    return tuple(math.ceil((i + 1) * num_teacher / num_student) - 1 for i in range(num_student))


class HiddenAdaptor(nn.Module):
    """A learned linear map from student hidden states to the teacher's width.

    It holds one ``(teacher_dim, max_student_dim)`` matrix, starts as the identity on the leading
    coordinates, and reads as many input columns as the student state has, so one adaptor serves
    every hidden width of a supernet.
    """

    def __init__(self, max_student_dim: int, teacher_dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(max_student_dim, teacher_dim)
        with torch.no_grad():
            self.proj.weight.copy_(torch.eye(teacher_dim, max_student_dim))
            self.proj.bias.zero_()

    def forward(self, hidden: Tensor) -> Tensor:
        width = hidden.shape[-1]
        if width > self.proj.in_features:
            raise ValueError(
                f"student width {width} exceeds the adaptor's {self.proj.in_features}"
            )
        return F.linear(hidden, self.proj.weight[:, :width], self.proj.bias)


def _masked_mse(student: Tensor, teacher: Tensor, mask: Tensor | None) -> Tensor:
    error = (student.float() - teacher.float().detach()).pow(2).mean(-1)  # (B, T)
    if mask is None:
        return error.mean()
    mask = mask.to(error.dtype)
    return (error * mask).sum() / mask.sum().clamp_min(1)


def hidden_loss(
    student_states: Sequence[Tensor],
    teacher_states: Sequence[Tensor],
    *,
    mapping: LayerMapping | Sequence[int] = "evenly_spaced",
    adaptor: nn.Module | None = None,
    attention_mask: Tensor | None = None,
) -> Tensor:
    """MSE between student layer outputs and their teacher layers, averaged over student layers.

    ``student_states`` / ``teacher_states`` are the outputs of the encoder layers (not the
    embeddings), e.g. ``outputs.hidden_states[1:]``. ``mapping`` is a rule or an explicit teacher
    layer index per student layer. The adaptor maps student states to the teacher's width.
    """
    if not student_states or not teacher_states:
        raise ValueError("hidden_loss needs at least one student and one teacher layer")
    projected = [adaptor(s) if adaptor is not None else s for s in student_states]
    for state, target in zip(projected, teacher_states):
        if state.shape[-1] != target.shape[-1]:
            raise ValueError(
                f"student width {state.shape[-1]} != teacher width {target.shape[-1]}: pass an adaptor"
            )
    if mapping == "dynamic":
        losses = [
            torch.stack([_masked_mse(s, t, attention_mask) for t in teacher_states]).min()
            for s in projected
        ]
        return torch.stack(losses).mean()
    if mapping == "evenly_spaced":
        mapping = evenly_spaced_map(len(projected), len(teacher_states))
    if len(mapping) != len(projected):
        raise ValueError(f"mapping has {len(mapping)} entries for {len(projected)} student layers")
    losses = [
        _masked_mse(s, teacher_states[j], attention_mask) for s, j in zip(projected, mapping)
    ]
    return torch.stack(losses).mean()


def distillation_loss(
    student: Any,
    teacher: Any,
    labels: Tensor | None,
    config: DistillConfig,
    *,
    adaptor: nn.Module | None = None,
    attention_mask: Tensor | None = None,
    mapping: Sequence[int] | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """The combined loss of a student against a teacher, and its parts (as floats).

    ``student`` and ``teacher`` are model outputs with ``.logits`` (and ``.hidden_states`` when
    ``config.hidden_weight > 0``); ``teacher`` may be ``None`` for hard labels only
    (``alpha`` must then be 1). ``mapping`` overrides the evenly spaced layer map.

    Example:
        >>> loss, parts = distillation_loss(student_out, teacher_out, batch["labels"],
        ...                                 DistillConfig(temperature=2.0, alpha=0.5))
    """
    parts: dict[str, float] = {}
    total = student.logits.new_zeros((), dtype=torch.float32)
    if config.alpha > 0:
        if labels is None:
            raise ValueError("alpha > 0 needs labels in the batch")
        ce = F.cross_entropy(student.logits.float(), labels)
        total = total + config.alpha * ce
        parts["ce"] = float(ce.detach())
    if teacher is None:
        if config.alpha < 1:
            raise ValueError("without a teacher, set alpha=1 (hard labels only)")
        return total, parts
    if config.alpha < 1:
        if config.logit_loss == "kl":
            logit = kl_logit_loss(student.logits, teacher.logits, temperature=config.temperature)
        else:
            logit = mse_logit_loss(student.logits, teacher.logits)
        total = total + (1 - config.alpha) * logit
        parts["logit"] = float(logit.detach())
    if config.hidden_weight > 0:
        rule: LayerMapping | Sequence[int] = config.layer_mapping
        if mapping is not None and config.layer_mapping == "evenly_spaced":
            rule = mapping
        hidden = hidden_loss(
            student.hidden_states[1:],
            teacher.hidden_states[1:],
            mapping=rule,
            adaptor=adaptor,
            attention_mask=attention_mask,
        )
        total = total + config.hidden_weight * hidden
        parts["hidden"] = float(hidden.detach())
    parts["loss"] = float(total.detach())
    return total, parts
