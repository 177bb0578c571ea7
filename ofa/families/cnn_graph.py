"""A CNN as plain data: a graph of known layers and ops, and the module that runs it.

The same architecture JSON describes a converted supernet (so it loads without the class of the
model it came from) and an exported subnet (so it loads without any elastic code). Only the
layers and ops listed here can appear, and nothing is ever imported by name.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "FUNCTIONS",
    "LAYER_TYPES",
    "CnnGraph",
    "GraphNode",
    "build_layer",
    "graph_from_dict",
    "graph_to_dict",
    "layer_spec",
]

_ARCH_FORMAT = "ofa-cnn-graph"

# layer type -> (class, constructor fields); plain torch classes only
LAYER_TYPES: dict[str, tuple[type[nn.Module], tuple[str, ...]]] = {
    "Conv2d": (
        nn.Conv2d,
        ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups"),
    ),
    "BatchNorm2d": (nn.BatchNorm2d, ("num_features", "eps", "momentum", "affine")),
    "Linear": (nn.Linear, ("in_features", "out_features")),
    "ReLU": (nn.ReLU, ("inplace",)),
    "ReLU6": (nn.ReLU6, ("inplace",)),
    "LeakyReLU": (nn.LeakyReLU, ("negative_slope", "inplace")),
    "Hardswish": (nn.Hardswish, ("inplace",)),
    "Hardsigmoid": (nn.Hardsigmoid, ("inplace",)),
    "SiLU": (nn.SiLU, ("inplace",)),
    "GELU": (nn.GELU, ("approximate",)),
    "Sigmoid": (nn.Sigmoid, ()),
    "Tanh": (nn.Tanh, ()),
    "Identity": (nn.Identity, ()),
    "Dropout": (nn.Dropout, ("p", "inplace")),
    "MaxPool2d": (nn.MaxPool2d, ("kernel_size", "stride", "padding", "dilation", "ceil_mode")),
    "AvgPool2d": (
        nn.AvgPool2d,
        ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad"),
    ),
    "AdaptiveAvgPool2d": (nn.AdaptiveAvgPool2d, ("output_size",)),
    "Flatten": (nn.Flatten, ("start_dim", "end_dim")),
}

# functional op -> how it runs; arguments other than the input tensors live in GraphNode.args
FUNCTIONS: dict[str, Any] = {
    "add": lambda a, b: a + b,
    "mul": lambda a, b: a * b,
    "add_scalar": lambda a, *, value: a + value,
    "mul_scalar": lambda a, *, value: a * value,
    "flatten": lambda a, *, start_dim=0, end_dim=-1: torch.flatten(a, start_dim, end_dim),
    "mean": lambda a, *, dim, keepdim=False: torch.mean(a, dim, keepdim=keepdim),
    "adaptive_avg_pool2d": lambda a, *, output_size: F.adaptive_avg_pool2d(a, output_size),
    "relu": lambda a: F.relu(a),
    "relu6": lambda a: F.relu6(a),
    "hardswish": lambda a: F.hardswish(a),
    "hardsigmoid": lambda a: F.hardsigmoid(a),
    "sigmoid": lambda a: torch.sigmoid(a),
    "silu": lambda a: F.silu(a),
    "gelu": lambda a: F.gelu(a),
    "tanh": lambda a: torch.tanh(a),
    "identity": lambda a: a,
}


@dataclass(frozen=True, kw_only=True)
class GraphNode:
    """One value of the graph: the graph input, a layer call or a functional op.

    Attributes:
        name: unique name of the value this node produces.
        op: ``"input"``, ``"layer"`` (calls the submodule ``target``) or a key of ``FUNCTIONS``.
        inputs: names of the values it reads, in order.
        target: dotted path of the submodule a ``"layer"`` node calls.
        args: keyword arguments of a functional op (JSON values).
        scope: dotted path of the module whose forward made this node (``""`` at top level).
    """

    name: str
    op: str
    inputs: tuple[str, ...] = ()
    target: str = ""
    args: Mapping[str, Any] = field(default_factory=dict)
    scope: str = ""

    @property
    def owner(self) -> str:
        """The module path this node belongs to: the layer it calls, else where it was made."""
        return self.target if self.op == "layer" else self.scope

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "op": self.op, "inputs": list(self.inputs)}
        if self.target:
            data["target"] = self.target
        if self.args:
            data["args"] = dict(self.args)
        if self.scope:
            data["scope"] = self.scope
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GraphNode:
        op = data["op"]
        if op not in ("input", "layer") and op not in FUNCTIONS:
            raise ValueError(f"unknown graph op {op!r}; known: input, layer, {sorted(FUNCTIONS)}")
        args = {k: tuple(v) if isinstance(v, list) else v for k, v in data.get("args", {}).items()}
        return cls(
            name=data["name"],
            op=op,
            inputs=tuple(data.get("inputs", ())),
            target=data.get("target", ""),
            args=args,
            scope=data.get("scope", ""),
        )


def layer_spec(module: nn.Module) -> dict[str, Any]:
    """The JSON that rebuilds ``module`` (an instance of a type in ``LAYER_TYPES``)."""
    for type_name, (cls, fields) in LAYER_TYPES.items():
        if isinstance(module, cls):
            spec: dict[str, Any] = {"type": type_name}
            for name in fields:
                value = getattr(module, name)
                spec[name] = list(value) if isinstance(value, tuple) else value
            if type_name in ("Conv2d", "Linear"):
                spec["bias"] = module.bias is not None
            if type_name == "BatchNorm2d":
                spec["track_running_stats"] = module.track_running_stats
            return spec
    raise TypeError(f"{type(module).__name__} is not a layer type a CNN graph can hold")


def build_layer(spec: Mapping[str, Any]) -> nn.Module:
    """A fresh plain layer from :func:`layer_spec`'s JSON."""
    type_name = spec.get("type")
    if type_name not in LAYER_TYPES:
        raise ValueError(f"unknown layer type {type_name!r}; known: {sorted(LAYER_TYPES)}")
    cls, _ = LAYER_TYPES[type_name]
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in spec.items() if k != "type"}
    return cls(**kwargs)


def _attach(root: nn.Module, path: str, module: nn.Module) -> None:
    """Put ``module`` at dotted ``path``, creating empty container modules on the way."""
    *parents, leaf = path.split(".")
    parent = root
    for part in parents:
        child = parent._modules.get(part)
        if child is None:
            child = nn.Module()
            parent.add_module(part, child)
        parent = child
    parent.add_module(leaf, module)


def run_graph(
    root: nn.Module,
    nodes: tuple[GraphNode, ...],
    x: Tensor,
    *,
    skipped: frozenset[str] = frozenset(),
    alias: Mapping[str, str] | None = None,
) -> Tensor:
    """Evaluate ``nodes`` on input ``x``; ``skipped`` nodes are left out and their values read
    through ``alias`` (a skipped block's output is its input)."""
    alias = alias or {}
    values: dict[str, Tensor] = {}
    result = x
    for node in nodes:
        if node.name in skipped:
            continue
        if node.op == "input":
            result = x
        else:
            inputs = [values[alias.get(name, name)] for name in node.inputs]
            if node.op == "layer":
                result = root.get_submodule(node.target)(inputs[0])
            else:
                result = FUNCTIONS[node.op](*inputs, **node.args)
        values[node.name] = result
    return result


class CnnGraph(nn.Module):
    """A plain CNN that runs a graph of known layers; the last node is the output.

    Parameter names are the dotted paths of the model the graph was traced from, so its
    ``state_dict`` keys are that model's. ``labels`` is accepted and ignored so that a batch dict
    ``{"pixel_values": ..., "labels": ...}`` can be passed as ``**batch``.

    Example:
        >>> graph = CnnGraph.from_dict(json.loads(text))   # an architecture JSON
        >>> logits = graph(torch.randn(1, 3, 32, 32))
    """

    def __init__(self, nodes: tuple[GraphNode, ...], layers: Mapping[str, nn.Module]) -> None:
        super().__init__()
        self.nodes = tuple(nodes)
        for path, layer in layers.items():
            _attach(self, path, layer)

    def forward(self, pixel_values: Tensor, labels: Tensor | None = None) -> Tensor:
        return run_graph(self, self.nodes, pixel_values)

    def layers(self) -> dict[str, nn.Module]:
        """Dotted path to the layer of every ``"layer"`` node."""
        return {n.target: self.get_submodule(n.target) for n in self.nodes if n.op == "layer"}

    def input_channels(self) -> int:
        """Channels of the image the graph reads: the first conv (or norm) fed from the input."""
        reached = {node.name for node in self.nodes if node.op == "input"}
        for node in self.nodes:
            if reached.isdisjoint(node.inputs):
                continue
            if node.op != "layer":
                reached.add(node.name)  # e.g. a scaling op before the first conv
                continue
            layer = self.get_submodule(node.target)
            if isinstance(layer, nn.Conv2d):
                return int(layer.in_channels)
            if isinstance(layer, nn.BatchNorm2d):
                return int(layer.num_features)
            reached.add(node.name)
        raise ValueError("cannot tell the image channels: no Conv2d reads the graph's input")

    def to_dict(self) -> dict[str, Any]:
        return graph_to_dict(self.nodes, self.layers())

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CnnGraph:
        nodes, layers = graph_from_dict(data)
        return cls(nodes, layers)


def graph_to_dict(nodes: tuple[GraphNode, ...], layers: Mapping[str, nn.Module]) -> dict[str, Any]:
    """Architecture JSON: the nodes and one layer spec per called submodule."""
    return {
        "format": _ARCH_FORMAT,
        "version": 1,
        "nodes": [node.to_dict() for node in nodes],
        "layers": {path: layer_spec(layer) for path, layer in layers.items()},
    }


def graph_from_dict(data: Mapping[str, Any]) -> tuple[tuple[GraphNode, ...], dict[str, nn.Module]]:
    """Nodes and freshly initialised plain layers from :func:`graph_to_dict`'s JSON."""
    if data.get("format") != _ARCH_FORMAT or data.get("version") != 1:
        raise ValueError(f"not an {_ARCH_FORMAT} version 1 architecture (format/version mismatch)")
    nodes = tuple(GraphNode.from_dict(node) for node in data["nodes"])
    layers = {path: build_layer(spec) for path, spec in data["layers"].items()}
    missing = sorted({n.target for n in nodes if n.op == "layer"} - set(layers))
    if missing:
        raise ValueError(f"architecture calls layers with no spec: {missing[:3]}")
    return nodes, layers
