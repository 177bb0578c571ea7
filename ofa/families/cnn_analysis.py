"""Structure of a CNN graph: coupled channel groups, skippable blocks and stages, shapes.

Channel groups are found by propagating channel identities through the graph: a conv or linear
starts a new group, a depthwise conv, batch norm, activation or pool passes its input's group
on, and an add or multiply joins the groups of its operands (residual adds, squeeze-excitation).
Groups that touch the image input, the model output, a grouped conv or a spatial flatten keep
their full width.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from ofa.elastic.conv import elastic_kernel_sizes
from ofa.families.cnn_graph import GraphNode

__all__ = ["Block", "ChannelGroup", "CnnStructure", "Stage", "analyse", "spatial_sizes"]

_PASS_THROUGH = {
    "relu", "relu6", "hardswish", "hardsigmoid", "sigmoid", "silu", "gelu", "tanh", "identity",
    "add_scalar", "mul_scalar",
}  # fmt: skip
_ACTIVATIONS = _PASS_THROUGH - {"add_scalar", "mul_scalar", "identity"}


@dataclass(frozen=True)
class ChannelGroup:
    """Channels that must keep the same width and order: one unit group of the supernet."""

    name: str
    size: int
    fixed: bool
    producers: tuple[str, ...]  # convs / linears whose output rows are these channels
    consumers: tuple[str, ...]  # convs / linears whose input columns are these channels
    depthwise: tuple[str, ...]  # depthwise convs running over these channels
    norms: tuple[str, ...]  # batch norms over these channels


@dataclass(frozen=True)
class Block:
    """A module whose output is ``act(input + f(input))``: dropping it leaves its input."""

    path: str
    nodes: frozenset[str]
    input: str
    output: str


@dataclass(frozen=True)
class Stage:
    """Consecutive children of one container: a head then identity blocks; depth keeps a prefix."""

    name: str
    blocks: tuple[Block, ...]  # the droppable blocks, in order (the head is not listed)


@dataclass(frozen=True)
class CnnStructure:
    groups: tuple[ChannelGroup, ...]
    value_group: Mapping[str, int]  # value name -> index into groups
    stages: tuple[Stage, ...]
    kernel_convs: tuple[str, ...]  # convs whose kernel can shrink

    def group(self, name: str) -> ChannelGroup:
        return next(g for g in self.groups if g.name == name)


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, key: str) -> str:
        self.parent.setdefault(key, key)
        while self.parent[key] != key:
            self.parent[key] = self.parent[self.parent[key]]
            key = self.parent[key]
        return key

    def union(self, a: str, b: str) -> None:
        root_a, root_b = self.find(a), self.find(b)
        if root_a != root_b:
            self.parent[root_b] = root_a


def _is_depthwise(conv: nn.Conv2d) -> bool:
    return conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels


def _is_global(node: GraphNode, layer: nn.Module | None) -> bool:
    """Does this node pool the whole spatial extent (its output is 1 x 1 or flat)?"""
    if isinstance(layer, nn.AdaptiveAvgPool2d):
        return layer.output_size in (1, (1, 1), [1, 1])
    if node.op == "adaptive_avg_pool2d":
        return node.args.get("output_size") in (1, (1, 1))
    if node.op == "mean":
        dims = node.args.get("dim")
        return tuple(sorted(dims if isinstance(dims, tuple) else (dims,))) in ((2, 3), (-2, -1))
    return False


def _channel_keys(
    nodes: tuple[GraphNode, ...], layers: Mapping[str, nn.Module]
) -> tuple[dict[str, str], _UnionFind, set[str], dict[str, int]]:
    """Channel key per value, joined keys, keys that must stay full, and each key's width."""
    keys: dict[str, str] = {}
    sets, fixed, width = _UnionFind(), set(), {}
    flat: set[str] = set()  # values whose spatial extent is 1 x 1 or gone
    for node in nodes:
        layer = layers.get(node.target) if node.op == "layer" else None
        source = keys[node.inputs[0]] if node.inputs else ""
        if node.op == "input":
            keys[node.name] = "input"
            fixed.add("input")
        elif isinstance(layer, nn.Conv2d) and not _is_depthwise(layer):
            keys[node.name] = node.target
            width[node.target], width[source] = layer.out_channels, layer.in_channels
            if layer.groups > 1:
                fixed.update((node.target, source))
        elif isinstance(layer, nn.Linear):
            keys[node.name] = node.target
            width[node.target], width[source] = layer.out_features, layer.in_features
        elif isinstance(layer, nn.Flatten) or node.op == "flatten":
            start = (
                layer.start_dim if isinstance(layer, nn.Flatten) else node.args.get("start_dim", 0)
            )
            if node.inputs[0] in flat and start == 1:
                keys[node.name] = source
            else:  # channels x height x width features: no channel slicing through this
                keys[node.name] = f"{node.name}:flat"
                fixed.update((source, keys[node.name]))
            flat.add(node.name)
        elif node.op in ("add", "mul"):
            keys[node.name] = source
            sets.union(source, keys[node.inputs[1]])
        else:  # depthwise conv, batch norm, activation, pool, dropout: channels pass through
            keys[node.name] = source
        if node.op in ("add", "mul"):
            is_flat = all(name in flat for name in node.inputs)
        else:
            is_flat = bool(node.inputs) and node.inputs[0] in flat or _is_global(node, layer)
        if is_flat:
            flat.add(node.name)
    fixed.add(keys[nodes[-1].name])
    return keys, sets, fixed, width


def _channel_groups(
    nodes: tuple[GraphNode, ...], layers: Mapping[str, nn.Module]
) -> tuple[tuple[ChannelGroup, ...], dict[str, int]]:
    keys, sets, fixed, width = _channel_keys(nodes, layers)
    order: list[str] = []
    for node in nodes:
        root = sets.find(keys[node.name])
        if root not in order:
            order.append(root)
    members: dict[str, dict[str, list[str]]] = {
        root: {"producers": [], "consumers": [], "depthwise": [], "norms": []} for root in order
    }
    for node in nodes:
        if node.op != "layer":
            continue
        layer, root = layers[node.target], sets.find(keys[node.name])
        source = sets.find(keys[node.inputs[0]])
        if isinstance(layer, nn.BatchNorm2d):
            kind, target_root, extra = "norms", root, None
        elif isinstance(layer, nn.Conv2d) and _is_depthwise(layer):
            kind, target_root, extra = "depthwise", root, None
        elif isinstance(layer, (nn.Conv2d, nn.Linear)):
            kind, target_root, extra = "producers", root, source
        else:
            continue
        if node.target not in members[target_root][kind]:
            members[target_root][kind].append(node.target)
        if extra is not None and node.target not in members[extra]["consumers"]:
            members[extra]["consumers"].append(node.target)
    fixed_roots = {sets.find(k) for k in fixed}
    groups = []
    for root in order:
        parts = members[root]
        size = next((width[k] for k in width if sets.find(k) == root), None)
        if size is None:  # only pooling / activations: take a batch norm's or depthwise width
            size = _width_of(layers, parts)
        name = parts["producers"][0] if parts["producers"] else root
        groups.append(
            ChannelGroup(
                name=name,
                size=int(size),
                fixed=root in fixed_roots or size < 1,
                producers=tuple(parts["producers"]),
                consumers=tuple(parts["consumers"]),
                depthwise=tuple(parts["depthwise"]),
                norms=tuple(parts["norms"]),
            )
        )
    index = {root: i for i, root in enumerate(order)}
    return tuple(groups), {n.name: index[sets.find(keys[n.name])] for n in nodes}


def _width_of(layers: Mapping[str, nn.Module], parts: Mapping[str, list[str]]) -> int:
    for path in parts["norms"] + parts["depthwise"]:
        layer: Any = layers[path]
        return int(layer.num_features if isinstance(layer, nn.BatchNorm2d) else layer.out_channels)
    return 0


# ---- blocks and stages -------------------------------------------------------------------------
def _in_scope(node: GraphNode, path: str) -> bool:
    owner = node.owner
    return owner == path or owner.startswith(path + ".")


def _block(
    nodes: tuple[GraphNode, ...], path: str, layers: Mapping[str, nn.Module]
) -> Block | None:
    """The block at ``path`` when it has one input, one output and an identity shortcut."""
    inside = [n for n in nodes if _in_scope(n, path)]
    names = {n.name for n in inside}
    inputs = {i for n in inside for i in n.inputs if i not in names}
    used_outside = {i for n in nodes if n.name not in names for i in n.inputs if i in names}
    if nodes[-1].name in names:
        used_outside.add(nodes[-1].name)
    if len(inputs) != 1 or len(used_outside) != 1 or not inside:
        return None
    (source,), (result,) = inputs, used_outside
    by_name = {n.name: n for n in inside}
    last = by_name[result]
    layer = layers.get(last.target) if last.op == "layer" else None
    if last.op in _ACTIVATIONS or type(layer).__name__ in _ACTIVATION_LAYERS:
        last = by_name.get(last.inputs[0], last)  # a post-activation residual block
    if last.op != "add" or source not in last.inputs:
        return None
    return Block(path=path, nodes=frozenset(names), input=source, output=result)


_ACTIVATION_LAYERS = {"ReLU", "ReLU6", "LeakyReLU", "Hardswish", "SiLU", "GELU", "Identity"}


def _children(nodes: tuple[GraphNode, ...]) -> dict[str, list[int]]:
    """Container path -> indices of its numbered children (``layer1.0``, ``features.3``)."""
    found: dict[str, set[int]] = {}
    for node in nodes:
        parts = node.owner.split(".") if node.owner else []
        for depth in range(1, len(parts)):
            if parts[depth].isdigit():
                found.setdefault(".".join(parts[:depth]), set()).add(int(parts[depth]))
        if parts and parts[0].isdigit():
            found.setdefault("", set()).add(int(parts[0]))
    return {parent: sorted(indices) for parent, indices in found.items()}


def _stages(nodes: tuple[GraphNode, ...], layers: Mapping[str, nn.Module]) -> tuple[Stage, ...]:
    stages = []
    for parent, indices in _children(nodes).items():
        head: str | None = None
        run: list[Block] = []
        previous_output: str | None = None
        for index in indices:
            path = f"{parent}.{index}" if parent else str(index)
            block = _block(nodes, path, layers)
            if block is not None and head is not None and block.input == previous_output:
                run.append(block)
            else:
                if run and head is not None:
                    stages.append(Stage(name=head, blocks=tuple(run)))
                head, run = path, []
            outputs = _outputs(nodes, path)
            previous_output = next(iter(outputs)) if len(outputs) == 1 else None
        if run and head is not None:
            stages.append(Stage(name=head, blocks=tuple(run)))
    return tuple(stages)


def _outputs(nodes: tuple[GraphNode, ...], path: str) -> set[str]:
    names = {n.name for n in nodes if _in_scope(n, path)}
    used = {i for n in nodes if n.name not in names for i in n.inputs if i in names}
    return used | ({nodes[-1].name} & names)


def analyse(nodes: tuple[GraphNode, ...], layers: Mapping[str, nn.Module]) -> CnnStructure:
    """Channel groups, droppable stages and shrinkable kernels of a traced CNN."""
    groups, value_group = _channel_groups(nodes, layers)
    convs = {
        n.target: layer
        for n in nodes
        if n.op == "layer" and isinstance(layer := layers[n.target], nn.Conv2d)
    }
    kernel_convs = tuple(
        path
        for path, conv in convs.items()
        if len(elastic_kernel_sizes(conv)) > 1 and (conv.groups == 1 or _is_depthwise(conv))
    )
    return CnnStructure(
        groups=groups,
        value_group=value_group,
        stages=_stages(nodes, layers),
        kernel_convs=tuple(dict.fromkeys(kernel_convs)),
    )


# ---- shapes --------------------------------------------------------------------------------------
def _pooled(size: int, kernel: int, stride: int, padding: int, dilation: int, ceil: bool) -> int:
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    out = -(-span // stride) + 1 if ceil else span // stride + 1
    if ceil and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def _pair(value: Any) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)  # type: ignore[return-value]


def spatial_sizes(
    nodes: tuple[GraphNode, ...], layers: Mapping[str, nn.Module], image_size: tuple[int, int]
) -> dict[str, tuple[int, int] | None]:
    """Height and width of every value for an input of ``image_size``; ``None`` once flat."""
    sizes: dict[str, tuple[int, int] | None] = {}
    for node in nodes:
        layer = layers.get(node.target) if node.op == "layer" else None
        source = sizes.get(node.inputs[0]) if node.inputs else image_size
        if node.op == "input":
            sizes[node.name] = image_size
        elif source is None or isinstance(layer, (nn.Linear, nn.Flatten)) or node.op == "flatten":
            sizes[node.name] = None
        elif isinstance(layer, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
            kernel, stride = _pair(layer.kernel_size), _pair(layer.stride or layer.kernel_size)
            padding = _pair(layer.padding)
            dilation = _pair(getattr(layer, "dilation", 1))
            ceil = bool(getattr(layer, "ceil_mode", False))
            sizes[node.name] = tuple(  # type: ignore[assignment]
                _pooled(source[i], kernel[i], stride[i], padding[i], dilation[i], ceil)
                for i in (0, 1)
            )
        elif isinstance(layer, nn.AdaptiveAvgPool2d) or node.op == "adaptive_avg_pool2d":
            target = layer.output_size if layer is not None else node.args["output_size"]
            out = _pair(target)
            sizes[node.name] = (out[0] or source[0], out[1] or source[1])
        elif node.op == "mean":
            keep = node.args.get("keepdim", False)
            sizes[node.name] = (1, 1) if keep else None
        elif node.op in ("add", "mul"):
            shapes = [sizes[i] for i in node.inputs]
            sizes[node.name] = max(shapes, key=lambda s: (s or (0, 0))[0] * (s or (0, 0))[1])
        else:
            sizes[node.name] = source
    return sizes
