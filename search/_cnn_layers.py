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
    ``block``-th droppable block of stage ``stage`` runs only while that stage keeps it. A
    unit whose input (or output) joins several channel groups (a concatenation) lists them in
    ``in_parts`` as ``(group, share)`` pairs with ``in_fixed`` channels that never shrink, and
    the widths its table entries were timed at in ``in_choices``; a subnet's width there is
    timed as the nearest of those.
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
    in_parts: tuple[tuple[int, float], ...] = ()
    in_fixed: int = 0
    in_choices: tuple[int, ...] = ()
    out_parts: tuple[tuple[int, float], ...] = ()
    out_fixed: int = 0
    out_choices: tuple[int, ...] = ()

    @property
    def in_pixels(self) -> int:
        return self.in_size[0] * self.in_size[1]

    @property
    def out_pixels(self) -> int:
        return self.out_size[0] * self.out_size[1]

    def to_dict(self) -> dict[str, Any]:
        data = {**asdict(self), "in_size": list(self.in_size), "out_size": list(self.out_size)}
        for side in ("in", "out"):  # single-group units keep the fields they always had
            if not data[f"{side}_parts"]:
                for key in ("parts", "fixed", "choices"):
                    data.pop(f"{side}_{key}")
            else:
                data[f"{side}_parts"] = [list(p) for p in data[f"{side}_parts"]]
                data[f"{side}_choices"] = list(data[f"{side}_choices"])
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LayerUnit:
        known = set(cls.__dataclass_fields__)
        optional = {
            f"{side}_{key}" for side in ("in", "out") for key in ("parts", "fixed", "choices")
        }
        if not known - optional <= set(data) <= known:
            raise ValueError(f"a CNN latency unit needs exactly the fields {sorted(known)}")
        sizes = {
            name: (int(data[name][0]), int(data[name][1])) for name in ("in_size", "out_size")
        }
        parts = {
            f"{side}_parts": tuple((int(g), float(c)) for g, c in data.get(f"{side}_parts", ()))
            for side in ("in", "out")
        }
        choices = {
            f"{side}_choices": tuple(int(c) for c in data.get(f"{side}_choices", ()))
            for side in ("in", "out")
        }
        return cls(**{**data, **sizes, **parts, **choices})

    def _side(self, subnet: CnnSubnet, side: str) -> int:
        parts: tuple[tuple[int, float], ...] = getattr(self, f"{side}_parts")
        if parts:
            fixed: int = getattr(self, f"{side}_fixed")
            return fixed + round(sum(share * subnet.widths[g] for g, share in parts))
        group: int = getattr(self, f"{side}_group")
        return subnet.widths[group] if group >= 0 else getattr(self, f"{side}_width")

    def widths(self, subnet: CnnSubnet) -> tuple[int, int, int]:
        """(input width, output width, kernel size) this unit runs at in ``subnet``."""
        in_width = self._side(subnet, "in")
        out_width = self._side(subnet, "out")
        if self.kind == "depthwise":
            out_width = in_width
        kernel = (
            subnet.kernel_sizes[self.kernel_conv] if self.kernel_conv >= 0 else self.kernel_size
        )
        return in_width, out_width, kernel

    def timed_widths(self, subnet: CnnSubnet) -> tuple[int, int, int]:
        """:meth:`widths` with the widths of joined groups at the nearest timed width."""
        in_width, out_width, kernel = self.widths(subnet)
        if self.in_parts:
            in_width = min(self.in_choices, key=lambda c: abs(c - in_width))
        if self.out_parts:
            out_width = min(self.out_choices, key=lambda c: abs(c - out_width))
        if self.kind == "depthwise":
            out_width = in_width
        return in_width, out_width, kernel

    def choices(self, space: CnnSearchSpace) -> Iterable[tuple[int, int, int]]:
        """Every (input width, output width, kernel size) the unit can take in ``space``."""

        def options(
            index: int, choices: tuple[tuple[int, ...], ...], full: int
        ) -> tuple[int, ...]:
            return choices[index] if index >= 0 else (full,)

        ins = self.in_choices or options(self.in_group, space.channel_choices, self.in_width)
        outs = self.out_choices or options(self.out_group, space.channel_choices, self.out_width)
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
        pixels = f" {size[0]}x{size[1]}" if size is not None else ""  # channels-last positions
        return f"linear bias{int(layer.bias is not None)}{pixels}{fused}"
    assert isinstance(layer, nn.Conv2d) and size is not None
    groups = "" if kind == "depthwise" else f" g{layer.groups}"
    if kind != "depthwise" and layer.groups > 1:  # shrinks by whole groups of this width
        groups += f"/{layer.in_channels // layer.groups}"
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
        source = node.inputs[0]
        ins = _side(structure, space, source, group_index)
        outs = _side(structure, space, source if kind == "depthwise" else node.name, group_index)
        full_kernel = layer.kernel_size[0] if isinstance(layer, nn.Conv2d) else 1
        units.append(
            LayerUnit(
                shape=shape,
                kind=kind,
                in_group=ins[0],
                in_width=ins[1],
                out_group=outs[0],
                out_width=outs[1],
                groups=layer.groups if isinstance(layer, nn.Conv2d) else 1,
                kernel_conv=kernel_index.get(node.target, -1),
                kernel_size=full_kernel,
                stage=block_of.get(node.name, (-1, 0))[0],
                block=block_of.get(node.name, (-1, 0))[1],
                in_size=in_size or (1, 1),
                out_size=out_size or (1, 1),
                in_parts=ins[2],
                in_fixed=ins[3],
                in_choices=ins[4],
                out_parts=outs[2],
                out_fixed=outs[3],
                out_choices=outs[4],
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


_MAX_TIMED_WIDTHS = 6


def _side(
    structure: Any, space: CnnSearchSpace, value: str, group_index: dict[str, int]
) -> tuple[int, int, tuple[tuple[int, float], ...], int, tuple[int, ...]]:
    """(group, full width, parts, fixed channels, timed widths) of one side of a unit."""
    counts = structure.group_counts(value)
    full = structure.full_width(value)
    elastic = {
        g: c for g, c in counts.items() if g >= 0 and structure.groups[g].name in group_index
    }
    fixed = full - round(sum(c * structure.groups[g].size for g, c in elastic.items()))
    if not elastic:
        return -1, full, (), 0, ()
    if len(elastic) == 1 and fixed == 0 and next(iter(elastic.values())) == 1:
        return group_index[structure.groups[next(iter(elastic))].name], full, (), 0, ()
    parts = tuple((group_index[structure.groups[g].name], float(c)) for g, c in elastic.items())
    # timed at the widths uniform subnets give it: one fraction of every group at a time
    choices = set()
    chosen = [space.channel_choices[i] for i, _ in parts]
    fractions = sorted({w / c[-1] for c in chosen for w in c})
    for fraction in fractions:
        width = fixed + sum(
            share * min(c, key=lambda w: abs(w - fraction * c[-1]))
            for (_, share), c in zip(parts, chosen)
        )
        choices.add(round(width))
    choices.add(full)
    ordered = sorted(choices)
    if len(ordered) > _MAX_TIMED_WIDTHS:
        step = (len(ordered) - 1) / (_MAX_TIMED_WIDTHS - 1)
        ordered = sorted({ordered[round(i * step)] for i in range(_MAX_TIMED_WIDTHS)})
    smallest = fixed + round(sum(share * c[0] for (_, share), c in zip(parts, chosen)))
    if smallest not in ordered:
        ordered = sorted({smallest, *ordered})
    return -1, full, parts, fixed, tuple(ordered)


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
                    groups=in_width
                    if kind == "depthwise"
                    else 1
                    if layer.groups == 1
                    else in_width // (layer.in_channels // layer.groups),
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
    units: Iterable[LayerUnit], subnet: CnnSubnet, *, timed: bool = False
) -> Iterable[tuple[LayerUnit, int, int, int]]:
    """Each unit ``subnet`` runs, with its (input width, output width, kernel size); with
    ``timed``, the widths of its latency-table entry."""
    for unit in units:
        if unit.stage >= 0 and unit.block >= subnet.depths[unit.stage] - 1:
            continue  # inside a block the stage drops
        yield (unit, *(unit.timed_widths(subnet) if timed else unit.widths(subnet)))


def cnn_features(units: Iterable[LayerUnit], subnet: CnnSubnet) -> list[float]:
    """FLOP-like terms of a CNN subnet at the profiled input shape."""
    dense = depthwise = linear = outputs = inputs = count = 0.0
    for unit, in_width, out_width, kernel in active_units(units, subnet):
        if unit.kind == "linear":
            linear += in_width * out_width * unit.in_pixels
        elif unit.kind == "depthwise":
            depthwise += out_width * kernel * kernel * unit.out_pixels
        else:
            per_group = unit.in_width // unit.groups if unit.groups > 1 else in_width
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
    size = {u.shape: u.in_size for u in units}
    linear = {u.shape: u.kind == "linear" for u in units}
    keys = dict.fromkeys((unit.shape, *choice) for unit in units for choice in unit.choices(space))
    table = {}
    generator = torch.Generator().manual_seed(0)
    for key in tqdm(keys, desc="profile layers", disable=not progress):
        shape, in_width, out_width, kernel = key
        module = builders[shape](in_width, out_width, kernel)
        if linear[shape]:  # (batch, in) or channels-last (batch, height, width, in)
            pixels = () if size[shape] == (1, 1) else size[shape]
            inputs = torch.randn(target.batch_size, *pixels, in_width, generator=generator)
        else:
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
            memory_format="contiguous" if linear[shape] else target.memory_format,
        )
        table[key] = result.median_ms
    return table
