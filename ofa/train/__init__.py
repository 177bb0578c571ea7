"""Supernet training: progressive shrinking with distillation (see :func:`train`)."""

from __future__ import annotations

from ofa.train.config import PhaseConfig, TheseusConfig, TrainConfig, default_phases
from ofa.train.loop import TrainResult, plan_phases, train

__all__ = [
    "PhaseConfig",
    "TheseusConfig",
    "TrainConfig",
    "TrainResult",
    "default_phases",
    "plan_phases",
    "train",
]
