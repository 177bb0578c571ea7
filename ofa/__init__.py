"""ofa: once-for-all supernets for BERT-family transformers and CNNs."""

from __future__ import annotations

from ofa import importance
from ofa.calibrate import calibrate_bn_
from ofa.cnn_space import CnnSearchSpace, CnnSubnet
from ofa.reorder import reorder_
from ofa.space import SearchSpace, Subnet
from ofa.supernet import Supernet, convert, load_supernet, set_subnet_

__all__ = [
    "CnnSearchSpace",
    "CnnSubnet",
    "SearchSpace",
    "Subnet",
    "Supernet",
    "calibrate_bn_",
    "convert",
    "importance",
    "load_supernet",
    "reorder_",
    "set_subnet_",
]
__version__ = "0.1.0"
