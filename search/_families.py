"""What latency models and the search need to know of a model family, chosen in one place.

Each family says how to complete a target (CNNs: the image size), make example inputs, list the
layers a subnet runs as latency-table keys, compute FLOP-like features for the fitted predictor,
time the table, count FLOPs at the target's shape and list uniform subnets to seed a search.
Everything else (fitting, calibration, scoring, JSON, the study) is shared. The ``plan`` is what
a family needs beyond the search space to predict without the supernet (CNNs: their layer
units); it is stored in the latency model's JSON.
"""

from __future__ import annotations

from typing import Any, Protocol

import optuna

from ofa._registry import Registry
from ofa.families import SpaceLike, SubnetLike, family_named
from ofa.supernet import Supernet
from search._family_bert import BertLatency
from search._family_cnn import CnnLatency
from search._family_decoder import DecoderLatency
from search.latency import Inputs, LatencyTarget

__all__ = [
    "FAMILIES",
    "LatencyFamily",
    "family_of",
    "family_of_space",
    "latency_family",
    "register_family",
]

TableKey = tuple[Any, ...]


class LatencyFamily(Protocol):
    name: str

    def resolve_target(self, supernet: Supernet, target: LatencyTarget) -> LatencyTarget: ...

    def inputs(self, supernet: Supernet, target: LatencyTarget) -> Inputs: ...

    def flops(self, supernet: Supernet, subnet: Any, target: LatencyTarget) -> int: ...

    def make_plan(self, supernet: Supernet, target: LatencyTarget) -> Any: ...

    def plan_to_json(self, plan: Any) -> Any: ...

    def plan_from_json(self, data: Any) -> Any: ...

    def table_keys(self, plan: Any, subnet: Any) -> list[TableKey]: ...

    def calibration_group(self, subnet: Any) -> int: ...

    def features(self, plan: Any, subnet: Any) -> list[float]: ...

    def layer_table(
        self,
        supernet: Supernet,
        target: LatencyTarget,
        plan: Any,
        *,
        warmup: int,
        rounds: int,
        progress: bool,
    ) -> dict[TableKey, float]: ...

    def uniform_subnets(self, space: Any) -> list[Any]: ...

    def contains(self, big: Any, small: Any) -> bool:
        """Every dimension of ``small`` is at most ``big``'s, so it cannot be slower."""
        ...

    def owns(self, space_or_subnet: Any) -> bool:
        """``space_or_subnet`` is this family's search space or subnet type."""
        ...

    def complete_target(self, space: Any, target: LatencyTarget) -> LatencyTarget: ...

    def suggest(self, trial: optuna.trial.Trial, space: Any) -> Any:
        """A subnet from the trial, one categorical parameter per elastic choice of ``space``."""
        ...

    def params(self, subnet: Any, space: Any) -> dict[str, Any]:
        """Trial parameters that :meth:`suggest` maps back to ``subnet`` (for enqueueing)."""
        ...

    csv_names: tuple[str, ...]

    def csv_columns(self, subnet: Any) -> dict[str, Any]: ...


# family name -> adapter: the built-in families, then any added with register_family
FAMILIES: Registry[LatencyFamily] = Registry(
    "search adapter", (BertLatency(), DecoderLatency(), CnnLatency())
)


def register_family(family: LatencyFamily) -> LatencyFamily:
    """Make ``family`` the search adapter (latency features, inputs, trial parameters) for
    supernets of ``family.name`` (the name of its ``ofa.families`` adapter)."""
    return FAMILIES.register(family)


def latency_family(name: str) -> LatencyFamily:
    return FAMILIES.named(name)


def family_of(space_or_subnet: Any) -> LatencyFamily:
    """The adapter whose search space or subnet type ``space_or_subnet`` is."""
    for family in FAMILIES.values():
        if family.owns(space_or_subnet):
            return family
    raise ValueError(
        f"no model family owns a {type(space_or_subnet).__name__}; known: {sorted(FAMILIES)}"
    )


def family_of_space(space: SpaceLike) -> str:
    return family_of(space).name


def space_from_dict(family: str, data: dict[str, Any]) -> SpaceLike:
    return family_named(family).space_from_dict(data)


def subnet_from_dict(family: str, data: dict[str, Any]) -> SubnetLike:
    return family_named(family).subnet_from_dict(data)
