"""Converters: one adapter per architecture family, chosen by the model's class."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from torch import nn

from ofa._registry import Registry
from ofa.families._classifier import ClassifierHooks
from ofa.families.bert import BertFamily
from ofa.families.cnn import CnnFamily
from ofa.families.decoder import DecoderFamily
from ofa.groups import UnitGroup

__all__ = [
    "FAMILIES",
    "ClassifierHooks",
    "ModelFamily",
    "SpaceLike",
    "SubnetLike",
    "family_for",
    "family_named",
    "register_family",
    "space_family",
    "supported_names",
]


@runtime_checkable
class SpaceLike(Protocol):
    """What every family's search space offers (``ofa.SearchSpace``, ``ofa.CnnSearchSpace``...):
    frozen JSON data with a largest and a smallest subnet and a membership check."""

    def max_subnet(self) -> Any: ...
    def min_subnet(self) -> Any: ...
    def check(self, subnet: Any) -> None: ...
    def to_dict(self) -> dict[str, Any]: ...


@runtime_checkable
class SubnetLike(Protocol):
    """What every family's subnet offers: frozen, hashable JSON data."""

    def to_dict(self) -> dict[str, Any]: ...
    def to_json(self) -> str: ...
    def __hash__(self) -> int: ...


class ModelFamily(Protocol):
    """What a model family gives the core library: conversion, its space and subnet types, how
    a subnet is set, extracted and counted, its importance units, how it is saved, and what it
    trains and is evaluated on. ``search`` and ``export`` keep their own adapters of the same
    name (``search._families``, export's family modules)."""

    name: str
    space_type: type
    subnet_type: type
    calibrates_batch_norm: bool  # a subnet needs its own batch-norm statistics to be evaluated
    phase_dimensions: tuple[str, ...]  # the PhaseConfig dimensions its phases may open

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
    def phase_space(self, phase: Any, space: Any) -> Any:
        """The part of ``space`` a training phase (an ``ofa.PhaseConfig``) samples from."""
        ...

    def multiplier_subnets(self, phase: Any, space: Any) -> list[Any]:
        """The uniform subnets of the phase's ``width_multipliers`` (or a one-line refusal)."""
        ...

    def contains(self, big: Any, small: Any) -> bool:
        """Every dimension of ``small`` is at most ``big``'s (layer by layer in kept order), so
        it has no more FLOPs and cannot be slower."""
        ...

    # a subnet is a causal language model: ofa.perplexity applies (ClassifierHooks: False)
    language_model: bool

    def loss_inputs(
        self, student: Any, teacher: Any, labels: Any, inputs: dict[str, Any]
    ) -> tuple[Any, Any, Any]:
        """What the distillation loss compares: (student outputs, teacher outputs, labels),
        each output with ``.logits`` (one row per target). See :class:`ClassifierHooks`."""
        ...

    def score(self, model: nn.Module, data: Any, batch_size: int) -> float:
        """What :func:`ofa.evaluate` reports for a model of this family; higher is better."""
        ...


# family name -> adapter, in the order ofa.convert tries them (BERT first: a CNN is any other
# model with a Conv2d); the built-in families, then any added with register_family
FAMILIES: Registry[ModelFamily] = Registry(
    "model family",
    (
        BertFamily(),
        DecoderFamily(),
        CnnFamily(),
    ),
)


def register_family(family: ModelFamily, *, before: str | None = None) -> ModelFamily:
    """Add ``family`` to the converters :func:`ofa.convert` tries (in order; ``before`` puts it
    ahead of a named family, e.g. ahead of ``"cnn"``, which takes any model with a Conv2d).

    A family is its own module: this adapter (see :class:`ModelFamily`), and one adapter per
    package that needs one (``search.register_family``, ``export.register_family``).
    """
    return FAMILIES.register(family, before=before)


def supported_names() -> list[str]:
    """What each registered family converts, as its adapter describes it (``supported``)."""
    return [
        name
        for family in FAMILIES.values()
        for name in getattr(family, "supported", (f"{family.name} models",))
    ]


def family_for(model: object) -> ModelFamily:
    for family in FAMILIES.values():
        if family.supports(model):  # type: ignore[arg-type]
            return family
    raise TypeError(
        f"ofa.convert does not support {type(model).__name__}; supported models: "
        f"{', '.join(supported_names())}"
    )


def space_family(space_or_subnet: object) -> ModelFamily:
    """The family whose search space or subnet type ``space_or_subnet`` is."""
    for family in FAMILIES.values():
        if isinstance(space_or_subnet, (family.space_type, family.subnet_type)):
            return family
    raise TypeError(
        f"no model family owns a {type(space_or_subnet).__name__}: give the search space "
        f"(or subnet) of a supernet; known families: {sorted(FAMILIES)}"
    )


def family_named(name: str) -> ModelFamily:
    return FAMILIES.named(name)
