"""A CNN as plain data: a graph of known layers and ops, and the module that runs it.

The same architecture JSON describes a converted supernet (so it loads without the class of the
model it came from) and an exported subnet (so it loads without any elastic code). Only the
layers and ops listed here can appear, and nothing is ever imported by name.
"""

from __future__ import annotations

import functools
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
    "ChannelLayerNorm",
    "CnnGraph",
    "GraphNode",
    "build_layer",
    "graph_from_dict",
    "graph_to_dict",
    "layer_spec",
]

_ARCH_FORMAT = "ofa-cnn-graph"


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of an ``(N, C, H, W)`` tensor (ConvNeXt's ``LayerNorm2d``)."""

    def forward(self, x: Tensor) -> Tensor:
        x = F.layer_norm(
            x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps
        )
        return x.permute(0, 3, 1, 2)


# layer type -> (class, constructor fields); plain torch classes only
LAYER_TYPES: dict[str, tuple[type[nn.Module], tuple[str, ...]]] = {
    "Conv2d": (
        nn.Conv2d,
        ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups"),
    ),
    "BatchNorm2d": (nn.BatchNorm2d, ("num_features", "eps", "momentum", "affine")),
    "ChannelLayerNorm": (ChannelLayerNorm, ("normalized_shape", "eps", "elementwise_affine")),
    "LayerNorm": (nn.LayerNorm, ("normalized_shape", "eps", "elementwise_affine")),
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
    "Mish": (nn.Mish, ("inplace",)),
    "ELU": (nn.ELU, ("alpha", "inplace")),
    "Hardtanh": (nn.Hardtanh, ("min_val", "max_val", "inplace")),
    "Softmax": (nn.Softmax, ("dim",)),
    "LogSoftmax": (nn.LogSoftmax, ("dim",)),
    "Dropout": (nn.Dropout, ("p", "inplace")),
    "Dropout2d": (nn.Dropout2d, ("p", "inplace")),
    "MaxPool2d": (nn.MaxPool2d, ("kernel_size", "stride", "padding", "dilation", "ceil_mode")),
    "AvgPool2d": (
        nn.AvgPool2d,
        ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad"),
    ),
    "AdaptiveAvgPool2d": (nn.AdaptiveAvgPool2d, ("output_size",)),
    "AdaptiveMaxPool2d": (nn.AdaptiveMaxPool2d, ("output_size",)),
    "Flatten": (nn.Flatten, ("start_dim", "end_dim")),
}


def _index(indices: Any, device: torch.device) -> Tensor:
    if isinstance(indices, Tensor):
        return indices.to(device)
    return torch.tensor(list(indices), dtype=torch.long, device=device)


def _drop_path(a: Tensor, *, p: float, mode: str = "row", training: bool = False) -> Tensor:
    """Stochastic depth (as torchvision.ops.stochastic_depth): identity unless training."""
    if not training or p == 0.0:
        return a
    survival = 1.0 - p
    size = [a.shape[0]] + [1] * (a.dim() - 1) if mode == "row" else [1] * a.dim()
    noise = torch.empty(size, dtype=a.dtype, device=a.device).bernoulli_(survival)
    if survival > 0.0:
        noise.div_(survival)
    return a * noise


def _dropout(
    a: Tensor, *, p: float = 0.5, kind: str = "dropout", training: bool = False
) -> Tensor:
    if kind == "dropout2d":
        return F.dropout2d(a, p, training)
    return F.dropout(a, p, training)


# functional op -> how it runs; arguments other than the input tensors live in GraphNode.args
FUNCTIONS: dict[str, Any] = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
    "add_scalar": lambda a, *, value: a + value,
    "sub_scalar": lambda a, *, value: a - value,
    "rsub_scalar": lambda a, *, value: value - a,
    "mul_scalar": lambda a, *, value: a * value,
    "div_scalar": lambda a, *, value: a / value,
    "cat": lambda *a, dim=1: torch.cat(a, dim),
    "slice_channels": lambda a, *, start, stop, dim=1: a.narrow(dim, start, stop - start),
    "select_channels": lambda a, *, indices, dim=1: a.index_select(dim, _index(indices, a.device)),
    "flatten": lambda a, *, start_dim=0, end_dim=-1: torch.flatten(a, start_dim, end_dim),
    "unflatten_channels": lambda a: a.reshape(a.shape[0], a.shape[1], 1, 1),
    "permute": lambda a, *, dims: a.permute(*dims),
    "mean": lambda a, *, dim, keepdim=False: torch.mean(a, dim, keepdim=keepdim),
    "adaptive_avg_pool2d": lambda a, *, output_size: F.adaptive_avg_pool2d(a, output_size),
    "adaptive_max_pool2d": lambda a, *, output_size: F.adaptive_max_pool2d(a, output_size),
    "max_pool2d": lambda a, *, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False: (
        F.max_pool2d(a, kernel_size, stride, padding, dilation, ceil_mode=ceil_mode)
    ),
    "avg_pool2d": lambda a, *, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True: (
        F.avg_pool2d(a, kernel_size, stride, padding, ceil_mode, count_include_pad)
    ),
    "dropout": _dropout,
    "drop_path": _drop_path,
    "relu": lambda a: F.relu(a),
    "relu6": lambda a: F.relu6(a),
    "leaky_relu": lambda a, *, negative_slope=0.01: F.leaky_relu(a, negative_slope),
    "elu": lambda a, *, alpha=1.0: F.elu(a, alpha),
    "hardtanh": lambda a, *, min_val=-1.0, max_val=1.0: F.hardtanh(a, min_val, max_val),
    "hardswish": lambda a: F.hardswish(a),
    "hardsigmoid": lambda a: F.hardsigmoid(a),
    "sigmoid": lambda a: torch.sigmoid(a),
    "silu": lambda a: F.silu(a),
    "mish": lambda a: F.mish(a),
    "gelu": lambda a, *, approximate="none": F.gelu(a, approximate=approximate),
    "tanh": lambda a: torch.tanh(a),
    "softmax": lambda a, *, dim: torch.softmax(a, dim),
    "log_softmax": lambda a, *, dim: torch.log_softmax(a, dim),
    "identity": lambda a: a,
}
_TRAINING_OPS = ("dropout", "drop_path")  # they read the graph's training flag


@dataclass(frozen=True, kw_only=True)
class GraphNode:
    """One value of the graph: the graph input, a layer call or a functional op.

    Attributes:
        name: unique name of the value this node produces.
        op: ``"input"``, ``"layer"`` (calls the submodule ``target``), ``"param"`` (reads the
            parameter or buffer ``target``) or a key of ``FUNCTIONS``.
        inputs: names of the values it reads, in order.
        target: dotted path of the submodule a ``"layer"`` node calls or the tensor a
            ``"param"`` node reads.
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

    def with_inputs(
        self, inputs: tuple[str, ...], args: Mapping[str, Any] | None = None
    ) -> GraphNode:
        """The same node reading ``inputs`` (and with ``args`` instead of its own, if given)."""
        return GraphNode(
            name=self.name,
            op=self.op,
            inputs=inputs,
            target=self.target,
            args=self.args if args is None else args,
            scope=self.scope,
        )

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
        if op not in ("input", "layer", "param") and op not in FUNCTIONS:
            raise ValueError(
                f"unknown graph op {op!r}; known: input, layer, param, {sorted(FUNCTIONS)}"
            )
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
            if type_name in ("Conv2d", "Linear", "LayerNorm", "ChannelLayerNorm"):
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


def _attach(root: nn.Module, path: str, module: nn.Module | Tensor) -> None:
    """Put ``module`` (or a parameter / buffer) at dotted ``path``, creating empty container
    modules on the way; a name that is also an attribute of its parent (a model's ``layers``
    beside :meth:`CnnGraph.layers`) goes straight into the parent's tables."""
    *parents, leaf = path.split(".")
    parent = root
    for part in parents:
        child = parent._modules.get(part)
        if child is None:
            child = nn.Module()
            parent._modules[part] = child
        parent = child
    if isinstance(module, nn.Parameter):
        parent._parameters[leaf] = module
    elif isinstance(module, Tensor):
        parent._buffers[leaf] = module
    else:
        parent._modules[leaf] = module


def _module_along(root: nn.Module, parts: tuple[str, ...]) -> nn.Module:
    module = root
    for part in parts:
        module = module._modules[part]  # type: ignore[assignment]
    return module


def _tensor_along(root: nn.Module, parts: tuple[str, ...]) -> Tensor:
    *parents, leaf = parts
    owner = _module_along(root, tuple(parents))
    if leaf in owner._parameters:
        return owner._parameters[leaf]  # type: ignore[return-value]
    return owner._buffers[leaf]  # type: ignore[return-value]


def _parts(path: str) -> tuple[str, ...]:
    return tuple(path.split(".")) if path else ()


def _module_at(root: nn.Module, path: str) -> nn.Module:
    return _module_along(root, _parts(path))


def _tensor_at(root: nn.Module, path: str) -> Tensor:
    return _tensor_along(root, _parts(path))


# one step of a compiled graph: op, value name, layer or tensor path (split), function, the
# keys of the values it reads, its args, and the keys it reads last (dropped after it runs)
_Step = tuple[str, str, tuple[str, ...], Any, tuple[str, ...], Mapping[str, Any], tuple[str, ...]]


def compile_graph(
    nodes: tuple[GraphNode, ...],
    *,
    skipped: frozenset[str] = frozenset(),
    alias: Mapping[str, str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[_Step, ...]:
    """``nodes`` as the steps :func:`run_program` runs: skipped nodes left out, inputs read
    through ``alias`` (a skipped block's output is its input), ``overrides`` in place of the
    args of the nodes it names, and each value dropped after the last step that reads it, so
    that its memory is reused (kept to the end, a ResNet-18's activations made each call
    allocate afresh: 5-13% slower than the same network written as a module)."""
    alias = alias or {}
    overrides = overrides or {}
    live = [node for node in nodes if node.name not in skipped]
    reads = [tuple(alias.get(name, name) for name in node.inputs) for node in live]
    last_read = {key: position for position, keys in enumerate(reads) for key in keys}
    steps: list[_Step] = []
    for position, (node, keys) in enumerate(zip(live, reads)):
        args = overrides.get(node.name, node.args)
        if node.op in _TRAINING_OPS:
            function = FUNCTIONS[node.op]
        else:
            function = FUNCTIONS.get(node.op)
            if function is not None and args:
                function = functools.partial(function, **args)
        free = tuple(dict.fromkeys(k for k in keys if last_read[k] == position))
        steps.append((node.op, node.name, _parts(node.target), function, keys, args, free))
    return tuple(steps)


def run_program(root: nn.Module, steps: tuple[_Step, ...], x: Tensor) -> Tensor:
    """Run the steps of :func:`compile_graph` on input ``x``; layers and tensors are looked up
    in ``root`` on every call, so a layer swapped in after compiling (a quantized one) runs."""
    values: dict[str, Tensor] = {}
    result = x
    for op, name, path, function, keys, args, free in steps:
        if op == "layer":
            result = _module_along(root, path)(values[keys[0]])
        elif op == "input":
            result = x
        elif op == "param":
            result = _tensor_along(root, path)
            if args.get("index") is not None:
                result = result.index_select(0, _index(args["index"], result.device))
        elif op in _TRAINING_OPS:
            result = function(*[values[k] for k in keys], **args, training=root.training)
        else:
            result = function(*[values[k] for k in keys])
        for key in free:
            del values[key]
        values[name] = result
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

    def __init__(
        self,
        nodes: tuple[GraphNode, ...],
        layers: Mapping[str, nn.Module],
        params: Mapping[str, Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.nodes = tuple(nodes)
        for path, layer in layers.items():
            _attach(self, path, layer)
        for path, tensor in (params or {}).items():
            _attach(self, path, tensor)

    def forward(self, pixel_values: Tensor, labels: Tensor | None = None) -> Tensor:
        return run_program(self, self._program(), pixel_values)

    def _program(
        self,
        skipped: frozenset[str] = frozenset(),
        alias: Mapping[str, str] | None = None,
        overrides: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> tuple[_Step, ...]:
        """The compiled steps for these nodes, skips, aliases and overrides, compiled again only
        when one of them is another object (they are replaced, never changed in place); a graph
        interpreter's per-node cost made small exports 3-7% slower than native models at
        batch 1."""
        key = (self.nodes, skipped, alias, overrides)
        cached = self.__dict__.get("_compiled")
        if cached is None or any(a is not b for a, b in zip(cached[0], key)):
            steps = compile_graph(self.nodes, skipped=skipped, alias=alias, overrides=overrides)
            cached = (key, steps)
            self.__dict__["_compiled"] = cached
        return cached[1]

    def __getstate__(self) -> dict[str, Any]:
        # the compiled steps hold lambdas, which do not pickle; they are rebuilt on first use
        state = self.__dict__.copy()
        state.pop("_compiled", None)
        return state

    def get_submodule(self, target: str) -> nn.Module:
        """The layer at dotted ``target`` (also where its name is an attribute of this class)."""
        return _module_at(self, target)

    def layers(self) -> dict[str, nn.Module]:
        """Dotted path to the layer of every ``"layer"`` node."""
        return {n.target: self.get_submodule(n.target) for n in self.nodes if n.op == "layer"}

    def params(self) -> dict[str, Tensor]:
        """Dotted path to the tensor of every ``"param"`` node (parameters read in forward)."""
        return {n.target: _tensor_at(self, n.target) for n in self.nodes if n.op == "param"}

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
        return graph_to_dict(self.nodes, self.layers(), self.params())

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CnnGraph:
        nodes, layers, params = graph_from_dict(data)
        return cls(nodes, layers, params)


def graph_to_dict(
    nodes: tuple[GraphNode, ...],
    layers: Mapping[str, nn.Module],
    params: Mapping[str, Tensor] | None = None,
) -> dict[str, Any]:
    """Architecture JSON: the nodes, one layer spec per called submodule and the shape of each
    tensor that ``"param"`` nodes read."""
    data: dict[str, Any] = {
        "format": _ARCH_FORMAT,
        "version": 1,
        "nodes": [node.to_dict() for node in nodes],
        "layers": {path: layer_spec(layer) for path, layer in layers.items()},
    }
    if params:
        data["params"] = {
            path: {
                "shape": list(tensor.shape),
                "kind": "parameter" if isinstance(tensor, nn.Parameter) else "buffer",
            }
            for path, tensor in params.items()
        }
    return data


def graph_from_dict(
    data: Mapping[str, Any],
) -> tuple[tuple[GraphNode, ...], dict[str, nn.Module], dict[str, Tensor]]:
    """Nodes, freshly initialised plain layers and zero tensors from :func:`graph_to_dict`'s
    JSON (load the state dict to fill them)."""
    if data.get("format") != _ARCH_FORMAT or data.get("version") != 1:
        raise ValueError(f"not an {_ARCH_FORMAT} version 1 architecture (format/version mismatch)")
    nodes = tuple(GraphNode.from_dict(node) for node in data["nodes"])
    layers = {path: build_layer(spec) for path, spec in data["layers"].items()}
    missing = sorted({n.target for n in nodes if n.op == "layer"} - set(layers))
    if missing:
        raise ValueError(f"architecture calls layers with no spec: {missing[:3]}")
    params: dict[str, Tensor] = {}
    for path, spec in data.get("params", {}).items():
        zeros = torch.zeros([int(n) for n in spec["shape"]])
        params[path] = nn.Parameter(zeros) if spec.get("kind") == "parameter" else zeros
    missing = sorted({n.target for n in nodes if n.op == "param"} - set(params))
    if missing:
        raise ValueError(f"architecture reads tensors with no spec: {missing[:3]}")
    return nodes, layers, params
