"""The elastic CNN graph: a traced CNN whose layers shrink to a subnet's channels and depth.

:class:`ElasticCnnGraph` holds the model's own layers made elastic and the structure that
:mod:`ofa.families.cnn_analysis` found. :func:`active_state` turns a subnet's width per channel
group into what each layer and op runs: leading slices where a value's active channels are a
prefix, index lists where they are not (concatenations, splits, shuffles).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ofa.elastic.batchnorm import ElasticBatchNorm2d
from ofa.elastic.conv import ElasticConv2d
from ofa.elastic.layernorm import ElasticLayerNorm
from ofa.elastic.linear import ElasticLinear
from ofa.families.cnn_analysis import CnnStructure, Elasticity, _elasticity, analyse
from ofa.families.cnn_graph import ChannelLayerNorm, CnnGraph, GraphNode, run_program

__all__ = ["ActiveState", "ElasticChannelLayerNorm", "ElasticCnnGraph", "active_state"]


class ElasticChannelLayerNorm(ElasticLayerNorm, ChannelLayerNorm):
    """A LayerNorm over the channels of ``(N, C, H, W)`` (ConvNeXt's ``LayerNorm2d``), elastic
    as :class:`~ofa.elastic.layernorm.ElasticLayerNorm`."""

    def forward(self, x: Tensor) -> Tensor:
        return self._normalise(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    def extract_for(self, width: int) -> nn.LayerNorm:
        return self._extract(ChannelLayerNorm, width)


def make_elastic(layer: nn.Module) -> nn.Module:
    """The elastic version of a plain layer (sharing its parameters); others as they are."""
    if isinstance(layer, (ElasticConv2d, ElasticBatchNorm2d, ElasticLinear, ElasticLayerNorm)):
        return layer
    if isinstance(layer, nn.Conv2d):
        return ElasticConv2d.from_dense(layer)
    if isinstance(layer, nn.BatchNorm2d):
        return ElasticBatchNorm2d.from_dense(layer)
    if isinstance(layer, nn.Linear):
        return ElasticLinear.from_dense(layer)
    if isinstance(layer, ChannelLayerNorm):
        return ElasticChannelLayerNorm.from_dense(layer)
    if isinstance(layer, nn.LayerNorm):
        return ElasticLayerNorm.from_dense(layer)
    return layer


class ElasticCnnGraph(CnnGraph):
    """A traced CNN whose convs, norms and linears are elastic and whose blocks can drop.

    ``active_skipped`` names the graph nodes of dropped blocks; ``active_alias`` maps a dropped
    block's output to the value that replaces it (its input); ``active_overrides`` holds the
    arguments of channel slices, permutations and parameter reads for the active subnet.
    """

    active_skipped: frozenset[str]
    active_alias: dict[str, str]
    active_overrides: dict[str, dict[str, Any]]

    def __init__(
        self,
        nodes: tuple[GraphNode, ...],
        layers: Mapping[str, nn.Module],
        params: Mapping[str, Tensor] | None = None,
        *,
        shapes: Mapping[str, tuple[int, ...]] | None = None,
    ) -> None:
        elastic = {path: make_elastic(layer) for path, layer in layers.items()}
        super().__init__(nodes, elastic, params)
        self.structure: CnnStructure = analyse(
            self.nodes, self.layers(), self.params(), shapes=shapes
        )
        self.active_skipped = frozenset()
        self.active_alias = {}
        self.active_overrides = {}

    def elasticity(self, space: Any = None) -> Elasticity:
        """What of this supernet can shrink (with ``space``: what that space lets shrink), and
        why the rest cannot: see :func:`ofa.families.cnn.elasticity`."""
        multiple = space.width_multiple if space is not None else 8
        return _elasticity(self.structure, space, multiple)

    def forward(self, pixel_values: Tensor, labels: Tensor | None = None) -> Tensor:
        # set_subnet and `using` assign new skips, aliases and overrides, so a step of training
        # on one subnet compiles its graph once, and the steps that follow reuse it
        program = self._program(self.active_skipped, self.active_alias, self.active_overrides)
        return run_program(self, program, pixel_values)


@dataclass
class ActiveState:
    """What every layer and op of an :class:`ElasticCnnGraph` runs for one subnet."""

    layers: dict[str, dict[str, Any]]  # layer path -> active_* attributes
    overrides: dict[str, dict[str, Any]]  # node -> args
    structure: CnnStructure
    piece_widths: list[int]
    ranges: dict[str, list[tuple[int, int]]]

    def width(self, value: str) -> int:
        """Active elements along the channel axis of ``value``."""
        if value not in self.ranges:
            self.ranges[value] = self.structure.ranges(value, self.piece_widths)
        return sum(b - a for a, b in self.ranges[value])


def _index(ranges: list[tuple[int, int]], full: int, device: torch.device) -> Tensor | None:
    """``None`` for a leading slice, else the index of the active elements."""
    if not ranges or (len(ranges) == 1 and ranges[0][0] == 0):
        return None
    return torch.cat([torch.arange(a, b, device=device) for a, b in ranges])


def _positions(ranges: list[tuple[int, int]]) -> list[int]:
    return [i for a, b in ranges for i in range(a, b)]


def active_state(model: ElasticCnnGraph, widths: list[int] | tuple[int, ...]) -> ActiveState:
    """The active attributes of every layer and the args of every channel op for one width per
    channel group (in ``model.structure.groups`` order)."""
    structure = model.structure
    piece_widths = structure.piece_widths(widths)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    ranges: dict[str, list[tuple[int, int]]] = {}

    def of(value: str) -> list[tuple[int, int]]:
        if value not in ranges:
            ranges[value] = structure.ranges(value, piece_widths)
        return ranges[value]

    def count(value: str) -> int:
        return sum(b - a for a, b in of(value))

    def index(value: str) -> Tensor | None:
        return _index(of(value), structure.full_width(value), device)

    layers: dict[str, dict[str, Any]] = {}
    overrides: dict[str, dict[str, Any]] = {}
    for node in model.nodes:
        if node.op == "layer":
            layer = model.get_submodule(node.target)
            source = node.inputs[0]
            if isinstance(layer, ElasticConv2d):
                rows = source if layer.is_depthwise else node.name
                state = {"active_out_channels": count(rows), "active_out_index": index(rows)}
                if not layer.is_depthwise:
                    state["active_in_index"] = index(source) if layer.groups == 1 else None
                layers[node.target] = state
            elif isinstance(layer, ElasticLinear):
                layers[node.target] = {
                    "active_out_features": count(node.name),
                    "active_out_index": index(node.name),
                    "active_in_index": index(source),
                }
            elif isinstance(layer, (ElasticBatchNorm2d, ElasticLayerNorm)):
                layers[node.target] = {"active_index": index(source)}
        elif node.op == "slice_channels":
            active = of(node.inputs[0])
            start, stop = int(node.args["start"]), int(node.args["stop"])

            def before(limit: int, active: list[tuple[int, int]] = active) -> int:
                return sum(max(0, min(b, limit) - a) for a, b in active)

            overrides[node.name] = {**node.args, "start": before(start), "stop": before(stop)}
        elif node.op == "select_channels":
            rank = {p: i for i, p in enumerate(_positions(of(node.inputs[0])))}
            indices = node.args["indices"]
            chosen = tuple(rank[indices[j]] for j in _positions(of(node.name)))
            overrides[node.name] = {**node.args, "indices": chosen}
        elif node.op == "param":
            follows = structure.param_follows.get(node.name)
            if follows is not None:
                overrides[node.name] = {
                    "index": torch.tensor(_positions(of(follows)), device=device)
                }
    return ActiveState(
        layers=layers,
        overrides=overrides,
        structure=structure,
        piece_widths=piece_widths,
        ranges=ranges,
    )
