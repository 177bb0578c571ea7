"""ofa: once-for-all supernets for BERT-family encoders, decoder-only LMs and CNNs."""

from __future__ import annotations

from ofa import data, importance
from ofa.calibrate import calibrate_bn_
from ofa.cnn_space import CnnSearchSpace, CnnSubnet
from ofa.decoder_space import DecoderSearchSpace, DecoderSubnet
from ofa.distill import DistillConfig
from ofa.evaluation import evaluate, perplexity
from ofa.finetuning import FinetuneConfig, finetune
from ofa.reorder import reorder_
from ofa.space import SearchSpace, Subnet
from ofa.supernet import Supernet, convert, load_supernet, set_subnet_
from ofa.training import (
    BudgetShapes,
    PhaseConfig,
    TheseusConfig,
    TrainConfig,
    budget_shapes,
    default_cnn_phases,
    default_phases,
    filled_for,
    train,
    train_,
)

__all__ = [
    "BudgetShapes",
    "CnnSearchSpace",
    "CnnSubnet",
    "DecoderSearchSpace",
    "DecoderSubnet",
    "DistillConfig",
    "FinetuneConfig",
    "PhaseConfig",
    "SearchSpace",
    "Subnet",
    "Supernet",
    "TheseusConfig",
    "TrainConfig",
    "budget_shapes",
    "filled_for",
    "calibrate_bn_",
    "convert",
    "data",
    "default_cnn_phases",
    "default_phases",
    "evaluate",
    "perplexity",
    "finetune",
    "importance",
    "load_supernet",
    "reorder_",
    "set_subnet_",
    "train",
    "train_",
]
__version__ = "0.1.0"
