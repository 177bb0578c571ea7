"""Supernet training: progressive shrinking with distillation (see :func:`train_`)."""

from __future__ import annotations

from ofa.data import pad_collate
from ofa.training.budgets import BudgetShapes, budget_shapes, filled_for, width_multiplier_for
from ofa.training.config import (
    PhaseConfig,
    TheseusConfig,
    TrainConfig,
    default_cnn_phases,
    default_phases,
)
from ofa.training.loop import TrainResult, plan_phases, train, train_

__all__ = [
    "BudgetShapes",
    "budget_shapes",
    "filled_for",
    "width_multiplier_for",
    "PhaseConfig",
    "TheseusConfig",
    "TrainConfig",
    "TrainResult",
    "default_cnn_phases",
    "default_phases",
    "pad_collate",
    "plan_phases",
    "train",
    "train_",
]
