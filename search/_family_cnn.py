"""The search's adapter of CNNs: image inputs, one latency-table entry per conv / linear unit
shape, width and kernel, Optuna parameters per channel group, stage and kernel."""

from __future__ import annotations

import itertools
from dataclasses import replace
from typing import Any, cast

import optuna
import torch

from ofa.cnn_space import CnnSearchSpace, CnnSubnet
from ofa.families.cnn import CnnFamily, ElasticCnnGraph
from ofa.supernet import Supernet
from search._cnn_layers import LayerUnit, active_units, cnn_features, cnn_layer_table, layer_units
from search.latency import Inputs, LatencyTarget

__all__ = ["CnnLatency"]

TableKey = tuple[Any, ...]
_PARAMS = (
    ("width", "channel_choices"),
    ("depth", "depth_choices"),
    ("kernel", "kernel_choices"),
)


class CnnLatency:
    """CNNs: image inputs; one table entry per conv / linear unit shape, width and kernel."""

    name = "cnn"

    def resolve_target(self, supernet: Supernet, target: LatencyTarget) -> LatencyTarget:
        if target.phase != "prefill":
            raise ValueError(
                f"phase {target.phase!r} is for causal LMs; a CNN has none (leave it at prefill)"
            )
        return self.complete_target(_space(supernet), target)

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
        return [(unit.shape, *sizes) for unit, *sizes in active_units(plan, subnet, timed=True)]

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

    contains = staticmethod(CnnFamily.contains)

    def owns(self, space_or_subnet: Any) -> bool:
        return isinstance(space_or_subnet, (CnnSearchSpace, CnnSubnet))

    def complete_target(self, space: CnnSearchSpace, target: LatencyTarget) -> LatencyTarget:
        """A target without an image size means the search space's."""
        if target.image_size is None:
            return replace(target, image_size=space.image_size)
        return target

    def suggest(self, trial: optuna.trial.Trial, space: CnnSearchSpace) -> CnnSubnet:
        """A width per channel group (``width_i``), a depth per stage (``depth_i``) and a
        kernel per kernel-elastic conv (``kernel_i``), in the space's order; a block the depth
        drops ignores its values."""
        values = [
            tuple(
                int(trial.suggest_categorical(f"{prefix}_{i}", list(options)))
                for i, options in enumerate(getattr(space, choices))
            )
            for prefix, choices in _PARAMS
        ]
        return CnnSubnet(widths=values[0], depths=values[1], kernel_sizes=values[2])

    def params(self, subnet: CnnSubnet, space: CnnSearchSpace) -> dict[str, Any]:
        chosen = (subnet.widths, subnet.depths, subnet.kernel_sizes)
        return {
            f"{prefix}_{i}": value
            for (prefix, _), values in zip(_PARAMS, chosen)
            for i, value in enumerate(values)
        }

    csv_names = ("widths", "depths", "kernel_sizes")

    def csv_columns(self, subnet: CnnSubnet) -> dict[str, Any]:
        return {name: " ".join(map(str, getattr(subnet, name))) for name in self.csv_names}


def _graph(supernet: Supernet) -> ElasticCnnGraph:
    return cast(ElasticCnnGraph, supernet.model)


def _space(supernet: Supernet) -> CnnSearchSpace:
    return cast(CnnSearchSpace, supernet.space)
