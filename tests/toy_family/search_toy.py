"""The toy family's ``search`` adapter: image inputs of the space's shape, one latency-table entry
per Linear shape a subnet runs, Optuna parameters for the depth and each layer's width."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import optuna
import torch
from torch import nn

from ofa.supernet import Supernet
from search import LatencyTarget, measure_latency
from tests.toy_family.ofa_toy import NAME, ToySearchSpace, ToySubnet

__all__ = ["ToyLatency"]

TableKey = tuple[Any, ...]


class ToyLatency:
    """The ``search.LatencyFamily`` adapter of the toy MLP.

    The ``plan`` is what predicting needs beyond the space: the input features and labels
    (the first layer's input width and the head's output width).
    """

    name = NAME
    csv_names = ("depth", "widths")

    # ---- targets and inputs ---------------------------------------------------------------
    def complete_target(self, space: ToySearchSpace, target: LatencyTarget) -> LatencyTarget:
        size = tuple(space.in_shape[1:])
        if target.image_size is None:
            return replace(target, image_size=size)
        if tuple(target.image_size) != size:
            raise ValueError(f"a toy MLP reads {size} images, not {target.image_size}")
        return target

    def resolve_target(self, supernet: Supernet, target: LatencyTarget) -> LatencyTarget:
        return self.complete_target(supernet.space, target)

    def inputs(self, supernet: Supernet, target: LatencyTarget) -> torch.Tensor:
        generator = torch.Generator().manual_seed(0)
        shape = (target.batch_size, *supernet.space.in_shape)
        return torch.randn(shape, generator=generator)

    def flops(self, supernet: Supernet, subnet: ToySubnet, target: LatencyTarget) -> int:
        return supernet.flops(subnet, batch_size=target.batch_size)

    # ---- the latency table and the fitted predictor ---------------------------------------
    def make_plan(self, supernet: Supernet, target: LatencyTarget) -> dict[str, int]:
        model: Any = supernet.model
        return {"in_features": math.prod(model.in_shape), "num_labels": model.num_labels}

    def plan_to_json(self, plan: dict[str, int]) -> dict[str, int]:
        return dict(plan)

    def plan_from_json(self, data: Any) -> dict[str, int]:
        if not isinstance(data, dict):
            raise ValueError("a toy latency model needs its plan: profile again")
        return {k: int(v) for k, v in data.items()}

    @staticmethod
    def _shapes(plan: dict[str, int], subnet: ToySubnet) -> list[tuple[str, int, int]]:
        sizes = [plan["in_features"], *subnet.widths]
        hidden = [("hidden", i, o) for i, o in zip(sizes, sizes[1:])]
        return [*hidden, ("head", sizes[-1], plan["num_labels"])]

    def table_keys(self, plan: dict[str, int], subnet: ToySubnet) -> list[TableKey]:
        return list(self._shapes(plan, subnet))

    def calibration_group(self, subnet: ToySubnet) -> int:
        return 0  # one ratio for what the layers timed alone miss (flatten, dispatch)

    def features(self, plan: dict[str, int], subnet: ToySubnet) -> list[float]:
        shapes = self._shapes(plan, subnet)
        return [
            float(sum(i * o for _, i, o in shapes)),  # multiply-adds
            float(sum(o for _, _, o in shapes)),  # bias and ReLU
            float(len(shapes)),  # per-layer dispatch
            1.0,
        ]

    def layer_table(
        self,
        supernet: Supernet,
        target: LatencyTarget,
        plan: dict[str, int],
        *,
        warmup: int,
        rounds: int,
        progress: bool,
    ) -> dict[TableKey, float]:
        space: ToySearchSpace = supernet.space  # type: ignore[assignment]
        keys = {
            key
            for depth in space.depths
            for first in space.widths
            for width in space.widths
            for key in self._shapes(plan, ToySubnet(widths=(first,) + (width,) * (depth - 1)))
        }
        table = {}
        for kind, width_in, width_out in sorted(keys):
            layer: nn.Module = nn.Linear(width_in, width_out)
            if kind == "hidden":
                layer = nn.Sequential(layer, nn.ReLU())
            result = measure_latency(
                layer,
                torch.randn(target.batch_size, width_in),
                device=target.device,
                dtype=target.dtype,
                warmup=warmup,
                rounds=rounds,
                num_threads=target.num_threads,
                repeats=3,
            )
            table[(kind, width_in, width_out)] = result.median_ms
        return table

    # ---- the study ------------------------------------------------------------------------
    def uniform_subnets(self, space: ToySearchSpace) -> list[ToySubnet]:
        return space.uniform_subnets()

    def contains(self, big: ToySubnet, small: ToySubnet) -> bool:
        """``small`` runs no Linear wider than ``big``'s: each kept layer at most as wide, and
        its last layer (the head's input) no wider than ``big``'s last."""
        if small.depth > big.depth or small.widths[-1] > big.widths[-1]:
            return False
        return all(s <= b for s, b in zip(small.widths, big.widths))

    def owns(self, space_or_subnet: Any) -> bool:
        return isinstance(space_or_subnet, (ToySearchSpace, ToySubnet))

    def suggest(self, trial: optuna.trial.Trial, space: ToySearchSpace) -> ToySubnet:
        """``depth`` and ``width_i`` for every layer (a fixed parameter space); the layers the
        depth drops ignore their widths."""
        depth = int(trial.suggest_categorical("depth", list(space.depths)))
        widths = [
            int(trial.suggest_categorical(f"width_{i}", list(space.widths)))
            for i in range(space.num_layers)
        ]
        return ToySubnet(widths=tuple(widths[:depth]))

    def params(self, subnet: ToySubnet, space: ToySearchSpace) -> dict[str, Any]:
        params: dict[str, Any] = {"depth": subnet.depth}
        for i in range(space.num_layers):
            params[f"width_{i}"] = subnet.widths[min(i, subnet.depth - 1)]
        return params

    def csv_columns(self, subnet: ToySubnet) -> dict[str, Any]:
        return {"depth": subnet.depth, "widths": " ".join(map(str, subnet.widths))}
