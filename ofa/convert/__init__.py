"""Converters: one adapter per architecture family, chosen by the model's class."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from torch import nn

from ofa.convert.bert import SUPPORTED_CLASSES as BERT_CLASSES
from ofa.convert.bert import BertFamily
from ofa.convert.cnn import CnnFamily
from ofa.groups import UnitGroup

__all__ = ["FAMILIES", "ModelFamily", "family_for", "family_named", "supported_names"]


class ModelFamily(Protocol):
    """What a model family gives the core library: conversion, its space and subnet types, how
    a subnet is set, extracted and counted, its importance units, how it is saved, and what it
    trains and is evaluated on. ``search`` and ``export`` keep their own adapters of the same
    name (``search._families``, export's family modules)."""

    name: str
    space_type: type
    subnet_type: type
    calibrates_batch_norm: bool  # a subnet needs its own batch-norm statistics to be evaluated

    def supports(self, model: nn.Module) -> bool: ...
    def check_supported(self, model: nn.Module) -> None: ...
    def default_space(self, model: nn.Module) -> Any: ...
    def check_space(self, model: nn.Module, space: Any) -> None: ...
    def make_elastic_(self, model: nn.Module) -> nn.Module: ...
    def set_subnet_(self, model: nn.Module, space: Any, subnet: Any) -> None: ...
    def extract(self, model: nn.Module, space: Any, subnet: Any) -> nn.Module: ...
    def num_params(self, model: nn.Module, space: Any, subnet: Any) -> int: ...
    def flops(
        self, model: nn.Module, space: Any, subnet: Any, *args: Any, **kwargs: Any
    ) -> int: ...
    def unit_groups(self, model: nn.Module, space: Any) -> list[UnitGroup]: ...
    def hidden_is_internal(self, model: nn.Module) -> bool: ...
    def config_dict(self, model: nn.Module) -> dict[str, Any]: ...
    def build_model(self, class_name: str, config: Mapping[str, Any]) -> nn.Module: ...
    def space_from_dict(self, data: dict[str, Any]) -> Any: ...
    def subnet_from_dict(self, data: dict[str, Any]) -> Any: ...
    def check_train_data(self, train_data: Any, hidden_weight: float, theseus: bool) -> None: ...


# family name -> adapter; filled here at import time and never changed afterwards
# (BERT first: a CNN is any other model with a Conv2d)
FAMILIES: dict[str, ModelFamily] = {
    BertFamily.name: BertFamily(),
    CnnFamily.name: CnnFamily(),
}


def supported_names() -> list[str]:
    return sorted(BERT_CLASSES) + [
        "CNNs of Conv2d/BatchNorm2d/Linear (torchvision ResNet, MobileNet)"
    ]


def family_for(model: object) -> ModelFamily:
    for family in FAMILIES.values():
        if family.supports(model):  # type: ignore[arg-type]
            return family
    raise TypeError(
        f"ofa.convert does not support {type(model).__name__}; supported models: "
        f"{', '.join(supported_names())}"
    )


def family_named(name: str) -> ModelFamily:
    if name not in FAMILIES:
        raise ValueError(f"unknown model family {name!r}; known: {sorted(FAMILIES)}")
    return FAMILIES[name]
