"""Converters: one adapter per architecture family, chosen by the model's class."""

from __future__ import annotations

from ofa.convert.bert import SUPPORTED_CLASSES as BERT_CLASSES
from ofa.convert.bert import BertFamily

__all__ = ["FAMILIES", "family_for", "family_named", "supported_names"]

# family name -> adapter; filled here at import time and never changed afterwards
FAMILIES: dict[str, BertFamily] = {BertFamily.name: BertFamily()}


def supported_names() -> list[str]:
    return sorted(BERT_CLASSES)


def family_for(model: object) -> BertFamily:
    for family in FAMILIES.values():
        if family.supports(model):
            return family
    raise TypeError(
        f"ofa.convert does not support {type(model).__name__}; supported models: "
        f"{', '.join(supported_names())}"
    )


def family_named(name: str) -> BertFamily:
    if name not in FAMILIES:
        raise ValueError(f"unknown model family {name!r}; known: {sorted(FAMILIES)}")
    return FAMILIES[name]
