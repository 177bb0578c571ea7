"""The layers of a CNN supernet as latency sees them: one unit per conv / linear call.

A unit is a conv or linear call together with the batch norm that reads only its output and the
activation that reads only that (conv + BN + ReLU runs as one step in practice). What fixes a
unit's speed besides its widths and kernel (layer type, stride, padding, input resolution, fused
BN and activation) is its ``shape`` text, so identical layers share table entries. The units are
plain JSON, stored with the latency model: a saved model predicts without the supernet.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any, cast

import torch
from torch import nn
from tqdm.auto import tqdm

from ofa.cnn_space import CnnSearchSpace, CnnSubnet
from ofa.families.cnn import ElasticCnnGraph
from ofa.families.cnn_analysis import spatial_sizes
from ofa.families.cnn_graph import FUNCTIONS, GraphNode
from search.latency import LatencyTarget, measure_latency

__all__ = ["LayerUnit", "active_units", "cnn_features", "cnn_layer_table", "layer_units"]

TableKey = tuple[str, int, int, int]  # (shape, input width, output width, kernel size)

_ACTIVATION_LAYERS = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Hardswish, nn.Hardsigmoid, nn.SiLU, nn.GELU, nn.Sigmoid,
    nn.Tanh,
)  # fmt: skip
_ACTIVATION_OPS = {"relu", "relu6", "hardswish", "hardsigmoid", "sigmoid", "silu", "gelu", "tanh"}


@dataclass(frozen=True, kw_only=True)
class LayerUnit:
    """One conv / linear call (with its fused BN and activation) of a CNN supernet.

    Widths and kernel index the search space (``-1``: fixed at the full size); a unit inside the
    ``block``-th droppable block of stage ``stage`` runs only while that stage keeps it.
    """

    shape: str
    kind: str  # "conv", "depthwise" or "linear"
    in_group: int
    in_width: int
    out_group: int
    out_width: int
    groups: int
    kernel_conv: int
    kernel_size: int
    stage: int
    block: int
    in_size: tuple[int, int]  # input (height, width); (1, 1) for a linear
    out_size: tuple[int, int]

    @property
    def in_pixels(self) -> int:
        return self.in_size[0] * self.in_size[1]

    @property
    def out_pixels(self) -> int:
        return self.out_size[0] * self.out_size[1]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "in_size": list(self.in_size), "out_size": list(self.out_size)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LayerUnit:
        known = set(cls.__dataclass_fields__)
        if set(data) != known:
            raise ValueError(f"a CNN latency unit needs exactly the fields {sorted(known)}")
        sizes = {
            name: (int(data[name][0]), int(data[name][1])) for name in ("in_size", "out_size")
        }
        return cls(**{**data, **sizes})

    def widths(self, subnet: CnnSubnet) -> tuple[int, int, int]:
        """(input width, output width, kernel size) this unit runs at in ``subnet``."""
        in_width = subnet.widths[self.in_group] if self.in_group >= 0 else self.in_width
        out_width = subnet.widths[self.out_group] if self.out_group >= 0 else self.out_width
        if self.kind == "depthwise":
            out_width = in_width
        kernel = (
            subnet.kernel_sizes[self.kernel_conv] if self.kernel_conv >= 0 else self.kernel_size
        )
        return in_width, out_width, kernel

    def choices(self, space: CnnSearchSpace) -> Iterable[tuple[int, int, int]]:
        """Every (input width, output width, kernel size) the unit can take in ``space``."""

        def options(
            index: int, choices: tuple[tuple[int, ...], ...], full: int
        ) -> tuple[int, ...]:
            return choices[index] if index >= 0 else (full,)

        ins = options(self.in_group, space.channel_choices, self.in_width)
        outs = options(self.out_group, space.channel_choices, self.out_width)
        kernels = options(self.kernel_conv, space.kernel_choices, self.kernel_size)
        for in_width in ins:
            for out_width in (in_width,) if self.kind == "depthwise" else outs:
                for kernel in kernels:
                    yield in_width, out_width, kernel


class _Op(nn.Module):
    """A functional activation of the graph as a module, to time it beside its conv."""

    def __init__(self, op: str) -> None:
        super().__init__()
        self.op = op

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return FUNCTIONS[self.op](x)


def _follower(node: GraphNode, readers: dict[str, list[GraphNode]], layers: dict, test) -> Any:
    """The node that alone reads ``node``'s output, when ``test`` accepts it."""
    found = readers.get(node.name, [])
    if len(found) != 1:
        return None
    (reader,) = found
    layer = layers.get(reader.target) if reader.op == "layer" else None
    return reader if test(reader, layer) else None


def _is_activation(node: GraphNode, layer: nn.Module | None) -> bool:
    return isinstance(layer, _ACTIVATION_LAYERS) or node.op in _ACTIVATION_OPS


def _shape_text(layer: nn.Module, kind: str, size: tuple[int, int] | None, fused: str) -> str:
    if isinstance(layer, nn.Linear):
        return f"linear bias{int(layer.bias is not None)}{fused}"
    assert isinstance(layer, nn.Conv2d) and size is not None
    groups = "" if kind == "depthwise" else f" g{layer.groups}"
    return (
        f"{kind} k{layer.kernel_size[0]} s{layer.stride[0]}x{layer.stride[1]} "
        f"p{layer.padding[0]}x{layer.padding[1]} d{layer.dilation[0]}{groups} "
        f"bias{int(layer.bias is not None)} {size[0]}x{size[1]}{fused}"
    )


Builder = Callable[[int, int, int], nn.Module]


def layer_units(
    model: ElasticCnnGraph, space: CnnSearchSpace, image_size: tuple[int, int]
) -> tuple[list[LayerUnit], dict[str, Builder]]:
    """The units of ``model`` at ``image_size``, and per shape a builder of a plain unit."""
    nodes, layers = model.nodes, model.layers()
    structure = model.structure
    sizes = spatial_sizes(nodes, layers, image_size)
    readers: dict[str, list[GraphNode]] = {}
    for node in nodes:
        for name in dict.fromkeys(node.inputs):
            readers.setdefault(name, []).append(node)
    group_index = {name: i for i, name in enumerate(space.channel_groups)}
    stage_index = {name: i for i, name in enumerate(space.stages)}
    kernel_index = {name: i for i, name in enumerate(space.kernel_convs)}
    block_of: dict[str, tuple[int, int]] = {}
    for stage in structure.stages:
        for position, block in enumerate(stage.blocks):
            for name in block.nodes:
                block_of[name] = (stage_index.get(stage.name, -1), position)
    units, builders = [], {}
    for node in nodes:
        layer = layers.get(node.target) if node.op == "layer" else None
        if not isinstance(layer, (nn.Conv2d, nn.Linear)):
            continue
        norm = _follower(node, readers, layers, lambda n, m: isinstance(m, nn.BatchNorm2d))
        act = _follower(norm or node, readers, layers, _is_activation)
        kind = (
            "linear"
            if isinstance(layer, nn.Linear)
            else "depthwise"
            if layer.groups > 1 and layer.groups == layer.in_channels == layer.out_channels
            else "conv"
        )
        fused = ("+bn" if norm else "") + (f"+{_act_name(act, layers)}" if act else "")
        in_size, out_size = sizes[node.inputs[0]], sizes[node.name]
        shape = _shape_text(layer, kind, in_size, fused)
        in_group = structure.groups[structure.value_group[node.inputs[0]]]
        out_group = structure.groups[structure.value_group[node.name]]
        full_kernel = layer.kernel_size[0] if isinstance(layer, nn.Conv2d) else 1
        units.append(
            LayerUnit(
                shape=shape,
                kind=kind,
                in_group=group_index.get(in_group.name, -1),
                in_width=in_group.size,
                out_group=group_index.get(out_group.name, -1),
                out_width=out_group.size,
                groups=layer.groups if isinstance(layer, nn.Conv2d) else 1,
                kernel_conv=kernel_index.get(node.target, -1),
                kernel_size=full_kernel,
                stage=block_of.get(node.name, (-1, 0))[0],
                block=block_of.get(node.name, (-1, 0))[1],
                in_size=in_size or (1, 1),
                out_size=out_size or (1, 1),
            )
        )
        if shape not in builders:
            builders[shape] = _builder(
                layer,
                kind,
                cast(nn.BatchNorm2d, layers[norm.target]) if norm else None,
                act,
                layers,
            )
    return units, builders


def _act_name(node: GraphNode, layers: dict) -> str:
    return type(layers[node.target]).__name__.lower() if node.op == "layer" else node.op


def _builder(
    layer: nn.Module,
    kind: str,
    norm: nn.BatchNorm2d | None,
    act: GraphNode | None,
    layers: dict,
) -> Builder:
    """A function making a plain, freshly initialised unit of a given width and kernel."""
    activation = None
    if act is not None:
        activation = copy.deepcopy(layers[act.target]) if act.op == "layer" else _Op(act.op)

    def build(in_width: int, out_width: int, kernel: int) -> nn.Module:
        parts: list[nn.Module] = []
        if isinstance(layer, nn.Linear):
            parts.append(nn.Linear(in_width, out_width, bias=layer.bias is not None))
        else:
            assert isinstance(layer, nn.Conv2d)
            stride, dilation = _pair(layer.stride), _pair(layer.dilation)
            padding = _pair(layer.padding)
            shrink = (layer.kernel_size[0] - kernel) // 2  # "same" padding shrinks with the kernel
            parts.append(
                nn.Conv2d(
                    in_width,
                    out_width,
                    kernel,
                    stride=stride,
                    padding=(padding[0] - shrink * dilation[0], padding[1] - shrink * dilation[1]),
                    dilation=dilation,
                    groups=in_width if kind == "depthwise" else layer.groups,
                    bias=layer.bias is not None,
                )
            )
        if norm is not None:
            parts.append(nn.BatchNorm2d(out_width, eps=float(norm.eps), affine=bool(norm.affine)))
        if activation is not None:
            parts.append(copy.deepcopy(activation))
        return nn.Sequential(*parts).eval()

    return build


def _pair(value: Any) -> tuple[int, int]:
    return int(value[0]), int(value[1])


def active_units(
    units: Iterable[LayerUnit], subnet: CnnSubnet
) -> Iterable[tuple[LayerUnit, int, int, int]]:
    """Each unit ``subnet`` runs, with its (input width, output width, kernel size)."""
    for unit in units:
        if unit.stage >= 0 and unit.block >= subnet.depths[unit.stage] - 1:
            continue  # inside a block the stage drops
        yield (unit, *unit.widths(subnet))


def cnn_features(units: Iterable[LayerUnit], subnet: CnnSubnet) -> list[float]:
    """FLOP-like terms of a CNN subnet at the profiled input shape."""
    dense = depthwise = linear = outputs = inputs = count = 0.0
    for unit, in_width, out_width, kernel in active_units(units, subnet):
        if unit.kind == "linear":
            linear += in_width * out_width
        elif unit.kind == "depthwise":
            depthwise += out_width * kernel * kernel * unit.out_pixels
        else:
            per_group = in_width // unit.groups
            dense += out_width * per_group * kernel * kernel * unit.out_pixels
        outputs += out_width * unit.out_pixels  # BN, activation: memory-bound per element
        inputs += in_width * unit.in_pixels
        count += 1
    return [dense, depthwise, linear, outputs, inputs, count, 1.0]


def cnn_layer_table(
    units: list[LayerUnit],
    builders: dict[str, Builder],
    space: CnnSearchSpace,
    target: LatencyTarget,
    *,
    warmup: int,
    rounds: int,
    progress: bool,
) -> dict[TableKey, float]:
    """Latency of every unit shape at every (input width, output width, kernel) it can take."""
    size = {u.shape: () if u.kind == "linear" else u.in_size for u in units}
    keys = dict.fromkeys((unit.shape, *choice) for unit in units for choice in unit.choices(space))
    table = {}
    generator = torch.Generator().manual_seed(0)
    for key in tqdm(keys, desc="profile layers", disable=not progress):
        shape, in_width, out_width, kernel = key
        module = builders[shape](in_width, out_width, kernel)
        inputs = torch.randn(target.batch_size, in_width, *size[shape], generator=generator)
        result = measure_latency(
            module,
            inputs,
            device=target.device,
            dtype=target.dtype,
            warmup=warmup,
            rounds=rounds,
            num_threads=target.num_threads,
            repeats=3,
        )
        table[key] = result.median_ms
    return table
