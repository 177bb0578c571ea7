"""Converters: one adapter per architecture family, chosen by the model's class."""

from __future__ import annotations

from ofa.convert.bert import SUPPORTED_CLASSES as BERT_CLASSES
from ofa.convert.bert import BertFamily
from ofa.convert.cnn import CnnFamily

__all__ = ["FAMILIES", "family_for", "family_named", "supported_names"]

# family name -> adapter; filled here at import time and never changed afterwards
# (BERT first: a CNN is any other model with a Conv2d)
FAMILIES: dict[str, BertFamily | CnnFamily] = {
    BertFamily.name: BertFamily(),
    CnnFamily.name: CnnFamily(),
}


def supported_names() -> list[str]:
    return sorted(BERT_CLASSES) + ["CNNs of Conv2d/BatchNorm2d/Linear (torchvision ResNet, MobileNet)"]


def family_for(model: object) -> BertFamily | CnnFamily:
    for family in FAMILIES.values():
        if family.supports(model):
            return family
    raise TypeError(
        f"ofa.convert does not support {type(model).__name__}; supported models: "
        f"{', '.join(supported_names())}"
    )


def family_named(name: str) -> BertFamily | CnnFamily:
    if name not in FAMILIES:
        raise ValueError(f"unknown model family {name!r}; known: {sorted(FAMILIES)}")
    return FAMILIES[name]
