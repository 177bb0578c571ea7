"""ofa: once-for-all supernets for BERT-family transformers and CNNs."""

from __future__ import annotations

from ofa import importance
from ofa.reorder import reorder_
from ofa.space import SearchSpace, Subnet
from ofa.supernet import Supernet, convert, load_supernet, set_subnet_

__all__ = [
    "SearchSpace",
    "Subnet",
    "Supernet",
    "convert",
    "importance",
    "load_supernet",
    "reorder_",
    "set_subnet_",
]
__version__ = "0.1.0"
