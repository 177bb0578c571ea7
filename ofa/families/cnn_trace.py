"""Trace a CNN with torch.fx into a :class:`~ofa.families.cnn_graph.CnnGraph` node list.

Layers of the types in ``LAYER_TYPES`` are leaves; user modules and torchvision blocks are traced
through. Any other op stops the conversion with an error naming the op and the module it is in.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from ofa.families.cnn_graph import LAYER_TYPES, GraphNode

__all__ = ["UnsupportedOpError", "trace_cnn"]

_LEAF_CLASSES = tuple(cls for cls, _ in LAYER_TYPES.values())

# fx call_function targets and call_method names -> graph op
_FUNCTION_OPS: dict[Any, str] = {
    operator.add: "add",
    operator.iadd: "add",
    torch.add: "add",
    operator.mul: "mul",
    operator.imul: "mul",
    torch.mul: "mul",
    torch.flatten: "flatten",
    torch.mean: "mean",
    F.adaptive_avg_pool2d: "adaptive_avg_pool2d",
    F.relu: "relu",
    torch.relu: "relu",
    F.relu6: "relu6",
    F.hardswish: "hardswish",
    F.hardsigmoid: "hardsigmoid",
    torch.sigmoid: "sigmoid",
    F.sigmoid: "sigmoid",
    F.silu: "silu",
    F.gelu: "gelu",
    torch.tanh: "tanh",
}
_METHOD_OPS = {
    "add": "add",
    "add_": "add",
    "mul": "mul",
    "mul_": "mul",
    "flatten": "flatten",
    "mean": "mean",
    "relu": "relu",
    "relu_": "relu",
    "sigmoid": "sigmoid",
    "tanh": "tanh",
}
# positional parameters after the input tensor, by op
_PARAMETERS = {
    "flatten": ("start_dim", "end_dim"),
    "mean": ("dim", "keepdim"),
    "adaptive_avg_pool2d": ("output_size",),
}
_IGNORED_KWARGS = ("inplace", "alpha")


class UnsupportedOpError(TypeError):
    """The model uses an op or layer that a CNN supernet cannot run."""


class _Tracer(fx.Tracer):
    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        if type(module) in _LEAF_CLASSES or isinstance(module, (nn.Conv2d, nn.BatchNorm2d)):
            return True
        if isinstance(module, (nn.Sequential, nn.ModuleList, nn.ModuleDict)):
            return False
        if type(module).__module__.startswith("torch.nn"):
            raise UnsupportedOpError(
                f"layer nn.{type(module).__name__} at {qualified_name!r} is not supported in a CNN "
                f"supernet; supported layers: {', '.join(sorted(LAYER_TYPES))}"
            )
        return False


def _scope(node: fx.Node, *, exclude_leaf: bool) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    paths = [value[0] if isinstance(value, tuple) else key for key, value in stack.items()]
    if exclude_leaf and paths and node.op == "call_module" and paths[-1] == node.target:
        paths = paths[:-1]
    return paths[-1] if paths else ""


def _unsupported(node: fx.Node, what: str, hint: str = "") -> UnsupportedOpError:
    scope = _scope(node, exclude_leaf=False)
    where = f"module {scope!r}" if scope else "the model's top-level forward"
    message = f"{what} (graph node {node.name!r}) in {where} is not supported"
    return UnsupportedOpError(message + (f": {hint}" if hint else ""))


def _op_name(node: fx.Node) -> str:
    if node.op == "call_method":
        return f"Tensor.{node.target}"
    target: Callable[..., Any] = node.target  # type: ignore[assignment]
    return f"{getattr(target, '__module__', None) or 'builtins'}.{getattr(target, '__name__', target)}"


def _convert_function(node: fx.Node, op: str, names: dict[fx.Node, str]) -> GraphNode:
    tensors = [a for a in node.args if isinstance(a, fx.Node)]
    rest: list[Any] = [a for a in node.args if not isinstance(a, fx.Node)]
    scope = _scope(node, exclude_leaf=False)
    if op in ("add", "mul"):
        if len(tensors) == 2 and not rest and not node.kwargs:
            return GraphNode(
                name=node.name, op=op, inputs=tuple(names[t] for t in tensors), scope=scope
            )
        if len(tensors) == 1 and len(rest) == 1 and isinstance(rest[0], (int, float)):
            inputs = (names[tensors[0]],)
            scalar = {"value": rest[0]}
            return GraphNode(
                name=node.name, op=f"{op}_scalar", inputs=inputs, args=scalar, scope=scope
            )
        raise _unsupported(
            node,
            f"{_op_name(node)} with arguments {node.args}",
            "add or multiply two tensors, or a tensor and a number",
        )
    if len(tensors) != 1 or node.args[0] is not tensors[0]:
        raise _unsupported(node, _op_name(node), "the op must take one tensor as first argument")
    params = _PARAMETERS.get(op, ())
    if len(rest) > len(params):
        raise _unsupported(node, f"{_op_name(node)} with arguments {node.args}")
    args: dict[str, Any] = dict(zip(params, rest))
    for key, value in node.kwargs.items():
        if key in _IGNORED_KWARGS:
            continue
        if key not in params:
            raise _unsupported(node, f"{_op_name(node)} with keyword {key!r}")
        args[key] = value
    args = {k: tuple(v) if isinstance(v, list) else v for k, v in args.items()}  # JSON-like
    return GraphNode(name=node.name, op=op, inputs=(names[tensors[0]],), args=args, scope=scope)


def trace_cnn(model: nn.Module) -> tuple[tuple[GraphNode, ...], dict[str, nn.Module]]:
    """Trace ``model`` into graph nodes plus the layers they call (the model's own modules).

    Raises:
        UnsupportedOpError: an op or layer has no place in a CNN supernet; the message names the
            op and the module whose forward uses it.
    """
    try:
        graph = _Tracer().trace(model)
    except UnsupportedOpError:
        raise
    except Exception as error:  # fx reports data-dependent control flow this way
        raise UnsupportedOpError(
            f"{type(model).__name__} could not be traced with torch.fx ({error}); CNN supernets "
            "need a forward without data-dependent control flow"
        ) from error
    names: dict[fx.Node, str] = {}
    nodes: list[GraphNode] = []
    layers: dict[str, nn.Module] = {}
    result: GraphNode | None = None
    for node in graph.nodes:
        names[node] = node.name
        if node.op == "placeholder":
            if any(n.op == "input" for n in nodes):
                raise _unsupported(
                    node,
                    f"a second forward argument {node.name!r}",
                    "a CNN supernet takes one image tensor",
                )
            nodes.append(GraphNode(name=node.name, op="input"))
        elif node.op == "call_module":
            module = model.get_submodule(str(node.target))
            layers[str(node.target)] = module
            source = node.args[0] if node.args else None
            if len(node.args) != 1 or node.kwargs or not isinstance(source, fx.Node):
                raise _unsupported(node, f"calling {node.target!r} with extra arguments")
            nodes.append(
                GraphNode(
                    name=node.name,
                    op="layer",
                    inputs=(names[source],),
                    target=str(node.target),
                    scope=_scope(node, exclude_leaf=True),
                )
            )
        elif node.op in ("call_function", "call_method"):
            key = node.target if node.op == "call_function" else None
            op = _FUNCTION_OPS.get(key) if key is not None else _METHOD_OPS.get(str(node.target))
            if op is None:
                raise _unsupported(
                    node,
                    _op_name(node),
                    "rewrite it with supported layers or ops "
                    f"({', '.join(sorted(set(_FUNCTION_OPS.values())))})",
                )
            nodes.append(_convert_function(node, op, names))
        elif node.op == "output":
            value = node.args[0]
            if not isinstance(value, fx.Node):
                raise _unsupported(
                    node,
                    "returning more than one tensor",
                    "a CNN supernet returns one tensor of logits or features",
                )
            result = next(n for n in nodes if n.name == names[value])
        else:
            raise _unsupported(
                node,
                f"reading attribute {node.target!r} directly in forward",
                "use parameters only through layers",
            )
    if result is None or not any(n.op == "input" for n in nodes):
        raise UnsupportedOpError(f"{type(model).__name__} has no input or no output to trace")
    nodes = [n for n in nodes if n.name != result.name] + [result]  # the output node comes last
    return _prune_dead(tuple(nodes)), layers


def _prune_dead(nodes: tuple[GraphNode, ...]) -> tuple[GraphNode, ...]:
    """Drop nodes the output does not depend on (fx keeps unused calls)."""
    needed = {nodes[-1].name}
    for node in reversed(nodes):
        if node.name in needed:
            needed.update(node.inputs)
    return tuple(n for n in nodes if n.name in needed or n.op == "input")
