"""What latency models and the search need to know of a model family, chosen in one place.

Each family says how to complete a target (CNNs: the image size), make example inputs, list the
layers a subnet runs as latency-table keys, compute FLOP-like features for the fitted predictor,
time the table, count FLOPs at the target's shape and list uniform subnets to seed a search.
Everything else (fitting, calibration, scoring, JSON, the study) is shared. The ``plan`` is what
a family needs beyond the search space to predict without the supernet (CNNs: their layer
units); it is stored in the latency model's JSON.
"""

from __future__ import annotations

import itertools
from dataclasses import replace
from typing import Any, Protocol, cast

import torch

from ofa.cnn_space import CnnSearchSpace, CnnSubnet
from ofa.convert import family_named
from ofa.convert.cnn import ElasticCnnGraph
from ofa.space import SearchSpace, Subnet
from ofa.supernet import Supernet
from search._cnn_layers import LayerUnit, active_units, cnn_features, cnn_layer_table, layer_units
from search._profile import layer_table
from search.latency import Inputs, LatencyTarget, example_inputs

__all__ = ["FAMILIES", "LatencyFamily", "family_of_space", "latency_family"]

TableKey = tuple[Any, ...]
AnySpace = SearchSpace | CnnSearchSpace
AnySubnet = Subnet | CnnSubnet


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


class BertLatency:
    """BERT-family encoders: token inputs; one table entry per (heads, FFN, hidden) layer."""

    name = "bert"

    def resolve_target(self, supernet: Supernet, target: LatencyTarget) -> LatencyTarget:
        if target.image_size is not None:
            raise ValueError(
                "image_size is for CNN supernets; a BERT-family target takes seq_len instead"
            )
        return target

    def inputs(self, supernet: Supernet, target: LatencyTarget) -> Inputs:
        return example_inputs(
            batch_size=target.batch_size,
            seq_len=target.seq_len,
            vocab_size=int(supernet.config.vocab_size),
        )

    def flops(self, supernet: Supernet, subnet: Subnet, target: LatencyTarget) -> int:
        return supernet.flops(subnet, batch_size=target.batch_size, seq_len=target.seq_len)

    def make_plan(self, supernet: Supernet, target: LatencyTarget) -> None:
        return None  # the subnet alone says everything

    def plan_to_json(self, plan: None) -> None:
        return None

    def plan_from_json(self, data: Any) -> None:
        return None

    def table_keys(self, plan: None, subnet: Subnet) -> list[TableKey]:
        return [(h, f, subnet.hidden_size) for h, f in zip(subnet.num_heads, subnet.ffn_dims)]

    def calibration_group(self, subnet: Subnet) -> int:
        return subnet.hidden_size  # embeddings and pooler scale with the hidden width

    def features(self, plan: None, subnet: Subnet) -> list[float]:
        """FLOP-like terms of a subnet at a fixed input shape (the shape scales every term)."""
        d = subnet.hidden_size
        heads, ffn = subnet.num_heads, subnet.ffn_dims
        return [
            float(sum(h * d for h in heads)),  # Q, K, V, O projections
            float(sum(heads)),  # attention scores and softmax (T x T per head)
            float(sum(f * d for f in ffn)),  # FFN matmuls
            float(sum(ffn)),  # GELU
            float(subnet.depth * d),  # LayerNorms, residual adds
            float(subnet.depth),  # per-layer launch overhead
            float(d),  # embeddings, pooler
            1.0,
        ]

    def layer_table(
        self,
        supernet: Supernet,
        target: LatencyTarget,
        plan: None,
        *,
        warmup: int,
        rounds: int,
        progress: bool,
    ) -> dict[TableKey, float]:
        return dict(layer_table(supernet, target, warmup=warmup, rounds=rounds, progress=progress))

    def uniform_subnets(self, space: SearchSpace) -> list[Subnet]:
        return space.uniform_subnets()

    def contains(self, big: Subnet, small: Subnet) -> bool:
        """Layer by layer (in kept order): fewer layers, no more heads or FFN width in each,
        no wider residual stream. Latency does not depend on which layer index is kept."""
        if small.depth > big.depth or small.hidden_size > big.hidden_size:
            return False
        return all(
            hs <= hb and fs <= fb
            for hs, hb, fs, fb in zip(small.num_heads, big.num_heads, small.ffn_dims, big.ffn_dims)
        )


class CnnLatency:
    """CNNs: image inputs; one table entry per conv / linear unit shape, width and kernel."""

    name = "cnn"

    def resolve_target(self, supernet: Supernet, target: LatencyTarget) -> LatencyTarget:
        if target.image_size is None:
            return replace(target, image_size=_space(supernet).image_size)
        return target

    def inputs(self, supernet: Supernet, target: LatencyTarget) -> Inputs:
        assert target.image_size is not None, "resolve_target fills the image size in"
        generator = torch.Generator().manual_seed(0)
        shape = (target.batch_size, _graph(supernet).input_channels(), *target.image_size)
        return torch.randn(shape, generator=generator)

    def flops(self, supernet: Supernet, subnet: CnnSubnet, target: LatencyTarget) -> int:
        return supernet.flops(
            subnet,  # type: ignore[arg-type]  # Supernet's signatures name BERT's types
            batch_size=target.batch_size,
            image_size=target.image_size,
        )

    def make_plan(self, supernet: Supernet, target: LatencyTarget) -> list[LayerUnit]:
        assert target.image_size is not None
        units, _ = layer_units(_graph(supernet), _space(supernet), target.image_size)
        return units

    def plan_to_json(self, plan: list[LayerUnit]) -> list[dict[str, Any]]:
        return [unit.to_dict() for unit in plan]

    def plan_from_json(self, data: Any) -> list[LayerUnit]:
        if not isinstance(data, list) or not data:
            raise ValueError("a CNN latency model needs its layer units ('plan'): profile again")
        return [LayerUnit.from_dict(unit) for unit in data]

    def table_keys(self, plan: list[LayerUnit], subnet: CnnSubnet) -> list[TableKey]:
        return [(unit.shape, *sizes) for unit, *sizes in active_units(plan, subnet)]

    def calibration_group(self, subnet: CnnSubnet) -> int:
        return 0  # one ratio: what units timed alone miss (adds, pools) scales with the work

    def features(self, plan: list[LayerUnit], subnet: CnnSubnet) -> list[float]:
        return cnn_features(plan, subnet)

    def layer_table(
        self,
        supernet: Supernet,
        target: LatencyTarget,
        plan: list[LayerUnit],
        *,
        warmup: int,
        rounds: int,
        progress: bool,
    ) -> dict[TableKey, float]:
        assert target.image_size is not None
        _, builders = layer_units(_graph(supernet), _space(supernet), target.image_size)
        table = cnn_layer_table(
            plan,
            builders,
            _space(supernet),
            target,
            warmup=warmup,
            rounds=rounds,
            progress=progress,
        )
        return dict(table)

    def uniform_subnets(self, space: CnnSearchSpace) -> list[CnnSubnet]:
        """Every width fraction with the shallowest / deepest stages and smallest / largest
        kernels: subnets that grow together in every dimension."""
        fractions = sorted({w / c[-1] for c in space.channel_choices for w in c})
        ends = (0, -1)
        subnets = []
        for fraction, depth, kernel in itertools.product(fractions, ends, ends):
            scaled = space.scaled(fraction)
            subnets.append(
                replace(
                    scaled,
                    depths=tuple(c[depth] for c in space.depth_choices),
                    kernel_sizes=tuple(c[kernel] for c in space.kernel_choices),
                )
            )
        return list(dict.fromkeys(subnets))

    def contains(self, big: CnnSubnet, small: CnnSubnet) -> bool:
        pairs = [
            *zip(small.widths, big.widths),
            *zip(small.depths, big.depths),
            *zip(small.kernel_sizes, big.kernel_sizes),
        ]
        return all(s <= b for s, b in pairs)


def _graph(supernet: Supernet) -> ElasticCnnGraph:
    return cast(ElasticCnnGraph, supernet.model)


def _space(supernet: Supernet) -> CnnSearchSpace:
    return cast(CnnSearchSpace, supernet.space)


# family name -> adapter; filled at import time, never changed afterwards
FAMILIES: dict[str, LatencyFamily] = {"bert": BertLatency(), "cnn": CnnLatency()}


def latency_family(name: str) -> LatencyFamily:
    if name not in FAMILIES:
        raise ValueError(f"unknown model family {name!r}; known: {sorted(FAMILIES)}")
    return FAMILIES[name]


def family_of_space(space: AnySpace) -> str:
    return "cnn" if isinstance(space, CnnSearchSpace) else "bert"


def space_from_dict(family: str, data: dict[str, Any]) -> AnySpace:
    return family_named(family).space_from_dict(data)


def subnet_from_dict(family: str, data: dict[str, Any]) -> AnySubnet:
    return family_named(family).subnet_from_dict(data)
