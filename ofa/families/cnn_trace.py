"""Trace a CNN with torch.fx into a :class:`~ofa.families.cnn_graph.CnnGraph` node list.

Layers of the types in ``LAYER_TYPES`` are leaves; user modules and torchvision blocks are traced
through. The trace runs the model on a small example image at the same time (a concrete value
for every traced node), so that forward code reading shapes works as usual: ``x.view(x.size(0),
-1)``, ``b, c, h, w = x.size()``, channel shuffles, ``assert x.shape[1] == 3``. Reshapes and
permutations are recognised by what they do to the data (flatten, channel permutation,
channels-last), not by how they are written. Anything else stops the conversion with an error
naming the file and line of the model's code, what is not supported and how to rewrite it.
"""

from __future__ import annotations

import contextlib
import inspect
import linecache
import math
import operator
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import Tensor, nn

from ofa.families.cnn_graph import LAYER_TYPES, ChannelLayerNorm, GraphNode

__all__ = ["Traced", "UnsupportedOpError", "trace_cnn", "trace_graph"]

_LEAF_CLASSES = tuple(cls for cls, _ in LAYER_TYPES.values())
_HERE = os.path.dirname(os.path.abspath(__file__))
_TORCH = os.path.dirname(os.path.abspath(torch.__file__))
PROBE_SIZES = (64, 32, 224, 96, 128, 28, 299)


class UnsupportedOpError(TypeError):
    """The model uses an op or layer that a CNN supernet cannot run."""


# ---- where in the user's code ------------------------------------------------------------------
def _user_location() -> str:
    """``file:line`` of the innermost frame outside torch and this package's tracing code."""
    frame = sys._getframe(1)
    while frame is not None:
        filename = os.path.abspath(frame.f_code.co_filename)
        if not filename.startswith((_TORCH, _HERE)) and "importlib" not in filename:
            return f"{filename}:{frame.f_lineno}"
        frame = frame.f_back  # type: ignore[assignment]
    return ""


def _code_at(location: str) -> str:
    if not location:
        return ""
    filename, _, line = location.rpartition(":")
    return linecache.getline(filename, int(line)).strip()


# ---- concrete tracing ---------------------------------------------------------------------------
_SHAPE_METHODS = {"size", "dim", "numel", "ndimension", "nelement", "get_device", "is_contiguous"}
_SHAPE_ATTRIBUTES = {"shape", "ndim", "dtype", "device", "is_cuda", "requires_grad", "layout"}


def _is_metadata(node: fx.Node) -> bool:
    if node.op == "call_method":
        return node.target in _SHAPE_METHODS
    if node.op == "call_function" and node.target is getattr:
        return node.args[1] in _SHAPE_ATTRIBUTES
    return False


class _ConcreteMixin:
    """Proxy methods that Python calls implicitly, answered from the concrete value when it
    depends only on shapes (never on the data)."""

    node: fx.Node
    tracer: _Tracer

    def _static(self, what: str) -> Any:
        meta = self.node.meta
        if meta.get("data", True):
            raise self.tracer.data_dependent(what)
        return meta["value"]

    def __len__(self) -> int:
        value = self.node.meta.get("value")
        if isinstance(value, (tuple, list)):
            return len(value)
        return len(self._static("len()"))

    def __int__(self) -> int:
        return int(self._static("int()"))

    def __index__(self) -> int:
        return operator.index(self._static("an index"))

    def __float__(self) -> float:
        return float(self._static("float()"))

    def __getattr__(self, name: str) -> Any:
        return _Attribute(self, name)  # type: ignore[arg-type]


class _Proxy(_ConcreteMixin, fx.Proxy):
    pass


class _Attribute(_ConcreteMixin, fx.proxy.Attribute):
    pass


class _Tracer(fx.Tracer):
    """An fx tracer that also runs every traced op on an example input."""

    def __init__(self, example: Tensor) -> None:
        super().__init__(autowrap_modules=(math,))
        self.example = example
        self.placeholders = 0
        self.running = 0  # > 0 while an op runs on concrete values: nothing is traced then

    def getattr(self, attr: str, attr_val: Any, parameter_proxy_cache: dict) -> Any:
        if self.running:
            return attr_val
        return super().getattr(attr, attr_val, parameter_proxy_cache)

    def call_module(
        self, m: nn.Module, forward: Callable[..., Any], args: Any, kwargs: Any
    ) -> Any:
        if self.running:
            return forward(*args, **kwargs)
        return super().call_module(m, forward, args, kwargs)

    # leaves
    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        if type(module) in _LEAF_CLASSES or isinstance(
            module, (nn.Conv2d, nn.BatchNorm2d, nn.LayerNorm)
        ):
            return True
        if isinstance(module, (nn.Sequential, nn.ModuleList, nn.ModuleDict)):
            return False
        if type(module).__module__.startswith("torch.nn"):
            location = _user_location()
            raise UnsupportedOpError(
                f"{location + ': ' if location else ''}layer nn.{type(module).__name__} at "
                f"{qualified_name!r} is not supported in a CNN supernet; supported layers: "
                f"{', '.join(sorted(LAYER_TYPES))}"
            )
        return False

    # proxies that know their values
    def proxy(self, node: fx.Node) -> fx.Proxy:
        return _Proxy(node, self)

    def create_node(self, kind, target, args, kwargs, name=None, type_expr=None):  # type: ignore[no-untyped-def]
        node = super().create_node(kind, target, args, kwargs, name, type_expr)
        node.meta["location"] = _user_location()
        if kind == "output":
            return node
        if kind == "placeholder":
            self.placeholders += 1
            if self.placeholders == 1:
                value = self.example
            elif args:
                value = args[0]  # a default: the trace follows it
            else:
                raise UnsupportedOpError(
                    f"{node.meta['location'] + ': ' if node.meta['location'] else ''}"
                    f"the forward argument {str(target)!r} is not supported: a CNN supernet "
                    "takes one image tensor (give other arguments defaults)"
                )
            node.meta.update(value=value, data=isinstance(value, Tensor))
            return node
        if kind == "call_module":
            module = self.root.get_submodule(str(target))
            if isinstance(module, nn.Conv2d) and isinstance(module.padding, str):
                _check_same_padding(node, module)  # before torch warns about running it
        value = self._run(node)
        inputs = node.all_input_nodes
        data = isinstance(value, Tensor) or (
            not _is_metadata(node) and any(n.meta.get("data", True) for n in inputs)
        )
        node.meta.update(value=value, data=data)
        return node

    def _run(self, node: fx.Node) -> Any:
        args = fx.node.map_arg(node.args, lambda n: n.meta["value"])
        kwargs = fx.node.map_arg(node.kwargs, lambda n: n.meta["value"])
        self.running += 1
        try:
            return self._call(node, args, kwargs)
        finally:
            self.running -= 1

    def _call(self, node: fx.Node, args: Any, kwargs: Any) -> Any:
        with torch.no_grad():
            if node.op == "get_attr":
                value: Any = self.root
                for part in str(node.target).split("."):
                    value = getattr(value, part)
                return value
            if node.op == "call_module":
                return self.root.get_submodule(str(node.target))(*args, **kwargs)
            if node.op == "call_method":
                return getattr(args[0], str(node.target))(*args[1:], **kwargs)
            return node.target(*args, **kwargs)  # type: ignore[operator]

    # implicit conversions
    def to_bool(self, obj: fx.Proxy) -> bool:
        if obj.node.meta.get("data", True):
            raise self.data_dependent("an if, while, `and`/`or` or bool()")
        return bool(obj.node.meta["value"])

    def iter(self, obj: fx.Proxy) -> Iterator:
        value = obj.node.meta.get("value")
        if isinstance(value, (tuple, list)) or not obj.node.meta.get("data", True):
            return iter([obj[i] for i in range(len(value))])
        raise self.data_dependent("iterating over a tensor")

    def keys(self, obj: fx.Proxy) -> Any:
        raise self.data_dependent("** on a traced value")

    def data_dependent(self, what: str) -> UnsupportedOpError:
        location = _user_location()
        code = _code_at(location)
        return UnsupportedOpError(
            f"{location + ': ' if location else ''}the model could not be traced: {what} on a "
            f"tensor's values{f' (`{code}`)' if code else ''} is data-dependent control flow, "
            "which a CNN supernet cannot follow; compute both branches and select with "
            "torch.where, or decide from shapes (x.shape, x.size()) only"
        )


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, flag in flags:
            module.training = flag


def _input_channels(model: nn.Module) -> int:
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return int(module.in_channels)
    raise UnsupportedOpError(f"{type(model).__name__} has no nn.Conv2d: it is not a CNN")


def _trace_at(model: nn.Module, size: int) -> tuple[fx.Graph, _Tracer]:
    example = torch.randn(
        2, _input_channels(model), size, size, generator=torch.Generator().manual_seed(0)
    )
    reference = next(model.parameters(), None)
    if reference is not None:
        example = example.to(device=reference.device, dtype=reference.dtype)
    tracer = _Tracer(example)
    return tracer.trace(model), tracer


def _probe(model: nn.Module, sizes: tuple[int, ...]) -> tuple[fx.Graph, _Tracer]:
    errors = []
    for size in dict.fromkeys(sizes):
        try:
            with _eval_mode(model):
                return _trace_at(model, size)
        except UnsupportedOpError:
            raise
        except fx.proxy.TraceError as error:
            raise UnsupportedOpError(
                f"{type(model).__name__} could not be traced with torch.fx ({error}); CNN "
                "supernets need a forward without data-dependent control flow"
            ) from error
        except (RuntimeError, ValueError, IndexError, AssertionError) as error:
            errors.append(f"{size}x{size}: {type(error).__name__}: {error}")
        except Exception as error:  # fx's TraceError and the like
            raise UnsupportedOpError(
                f"{type(model).__name__} could not be traced with torch.fx "
                f"({type(error).__name__}: {error}); CNN supernets need a forward made of "
                "layers and tensor ops without data-dependent control flow"
            ) from error
    raise UnsupportedOpError(
        f"{type(model).__name__} could not be traced: it did not run on example images of "
        f"sizes {', '.join(map(str, dict.fromkeys(sizes)))} ({errors[0] if errors else ''}); "
        "if it needs another image size, build the space with "
        "ofa.families.cnn.default_space(model, image_size=...)"
    )


# ---- fx nodes -> graph nodes ---------------------------------------------------------------------
def _scope(node: fx.Node, *, exclude_leaf: bool) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    paths = [value[0] if isinstance(value, tuple) else key for key, value in stack.items()]
    if exclude_leaf and paths and node.op == "call_module" and paths[-1] == node.target:
        paths = paths[:-1]
    return paths[-1] if paths else ""


def _op_name(node: fx.Node) -> str:
    if node.op == "call_method":
        return f"Tensor.{node.target}"
    if node.op == "call_module":
        return f"calling {node.target!r}"
    if node.op == "get_attr":
        return f"reading {node.target!r}"
    target: Callable[..., Any] = node.target  # type: ignore[assignment]
    module = getattr(target, "__module__", None) or "builtins"
    if module == "_operator":
        module = "operator"
    return f"{module}.{getattr(target, '__name__', target)}"


def _unsupported(node: fx.Node, what: str, hint: str = "") -> UnsupportedOpError:
    scope = _scope(node, exclude_leaf=False)
    where = f"module {scope!r}" if scope else "the model's top-level forward"
    location = node.meta.get("location", "")
    code = _code_at(location)
    message = (
        f"{location + ': ' if location else ''}{what} (graph node {node.name!r}"
        f"{f', `{code}`' if code else ''}) in {where} is not supported"
    )
    return UnsupportedOpError(message + (f": {hint}" if hint else ""))


# reference signatures: how positional and keyword arguments bind, per op
def _s_unary(input, inplace=False): ...  # noqa: ANN001, ANN202, E704
def _s_gelu(input, approximate="none"): ...  # noqa: ANN001, ANN202, E704
def _s_leaky(input, negative_slope=0.01, inplace=False): ...  # noqa: ANN001, ANN202, E704
def _s_elu(input, alpha=1.0, inplace=False): ...  # noqa: ANN001, ANN202, E704
def _s_hardtanh(input, min_val=-1.0, max_val=1.0, inplace=False): ...  # noqa: ANN001, ANN202, E704
def _s_clamp(input, min=None, max=None): ...  # noqa: ANN001, ANN202, E704, A002
def _s_softmax(input, dim=None, _stacklevel=3, dtype=None): ...  # noqa: ANN001, ANN202, E704
def _s_mean(input, dim=None, keepdim=False, dtype=None): ...  # noqa: ANN001, ANN202, E704
def _s_adaptive(input, output_size, return_indices=False): ...  # noqa: ANN001, ANN202, E704
def _s_max_pool(
    input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False
): ...  # noqa: ANN001, ANN202, E501, E704
def _s_avg_pool(
    input,
    kernel_size,
    stride=None,
    padding=0,
    ceil_mode=False,
    count_include_pad=True,
    divisor_override=None,
): ...  # noqa: ANN001, ANN202, E501, E704
def _s_dropout(input, p=0.5, training=True, inplace=False): ...  # noqa: ANN001, ANN202, E704
def _s_drop_path(input, p, mode, training=True): ...  # noqa: ANN001, ANN202, E704
def _s_binary(input, other, alpha=1): ...  # noqa: ANN001, ANN202, E704
def _s_cat(tensors, dim=0): ...  # noqa: ANN001, ANN202, E704
def _s_chunk(input, chunks, dim=0): ...  # noqa: ANN001, ANN202, E704
def _s_split(input, split_size_or_sections, dim=0): ...  # noqa: ANN001, ANN202, E704
def _s_any(*args, **kwargs): ...  # noqa: ANN002, ANN003, ANN202, E704


_UNARY = {
    "relu": _s_unary, "relu6": _s_unary, "hardswish": _s_unary, "hardsigmoid": _s_unary,
    "sigmoid": _s_unary, "silu": _s_unary, "mish": _s_unary, "tanh": _s_unary,
    "gelu": _s_gelu, "leaky_relu": _s_leaky, "elu": _s_elu, "hardtanh": _s_hardtanh,
    "clamp": _s_clamp, "softmax": _s_softmax, "log_softmax": _s_softmax,
}  # fmt: skip
_FUNCTIONS: dict[Any, str] = {
    operator.add: "add", operator.iadd: "add", torch.add: "add",
    operator.sub: "sub", operator.isub: "sub", torch.sub: "sub",
    operator.mul: "mul", operator.imul: "mul", torch.mul: "mul",
    operator.truediv: "div", operator.itruediv: "div", torch.div: "div",
    torch.cat: "cat", torch.concat: "cat", torch.concatenate: "cat",
    torch.chunk: "chunk", torch.split: "split",
    torch.mean: "mean",
    F.adaptive_avg_pool2d: "adaptive_avg_pool2d", F.adaptive_max_pool2d: "adaptive_max_pool2d",
    F.max_pool2d: "max_pool2d", F.avg_pool2d: "avg_pool2d",
    F.dropout: "dropout", F.dropout2d: "dropout2d", torch.dropout: "dropout",
    F.relu: "relu", torch.relu: "relu", F.relu_: "relu", torch.relu_: "relu", F.relu6: "relu6", F.hardswish: "hardswish",
    F.hardsigmoid: "hardsigmoid", torch.sigmoid: "sigmoid", F.sigmoid: "sigmoid",
    F.silu: "silu", F.mish: "mish", F.gelu: "gelu", torch.tanh: "tanh", F.tanh: "tanh",
    F.leaky_relu: "leaky_relu", F.elu: "elu", F.hardtanh: "hardtanh", torch.clamp: "clamp",
    F.softmax: "softmax", torch.softmax: "softmax", F.log_softmax: "log_softmax",
    torch.log_softmax: "log_softmax",
    torch.flatten: "move", torch.reshape: "move", torch.permute: "move",
    torch.transpose: "move", torch.squeeze: "move", torch.unsqueeze: "move",
}  # fmt: skip
_METHODS = {
    "add": "add", "add_": "add", "sub": "sub", "sub_": "sub", "mul": "mul", "mul_": "mul",
    "div": "div", "div_": "div", "chunk": "chunk", "split": "split", "mean": "mean",
    "relu": "relu", "relu_": "relu", "sigmoid": "sigmoid", "sigmoid_": "sigmoid",
    "tanh": "tanh", "tanh_": "tanh", "clamp": "clamp", "clamp_": "clamp",
    "softmax": "softmax", "log_softmax": "log_softmax",
    "view": "move", "reshape": "move", "flatten": "move", "permute": "move",
    "transpose": "move", "contiguous": "move", "squeeze": "move", "unsqueeze": "move",
    "expand": "expand", "expand_as": "expand", "clone": "identity",
}  # fmt: skip
_IN_PLACE_FUNCTIONS = {operator.iadd, operator.isub, operator.imul, operator.itruediv}
_SIGNATURES = {
    **_UNARY, "mean": _s_mean, "adaptive_avg_pool2d": _s_adaptive,
    "adaptive_max_pool2d": _s_adaptive, "max_pool2d": _s_max_pool, "avg_pool2d": _s_avg_pool,
    "dropout": _s_dropout, "dropout2d": _s_dropout, "drop_path": _s_drop_path,
    "add": _s_binary, "sub": _s_binary, "mul": _s_binary, "div": _s_binary, "cat": _s_cat,
    "chunk": _s_chunk, "split": _s_split,
}  # fmt: skip
_SUPPORTED_TEXT = (
    "supported: layers ({layers}); + - * / on tensors and numbers; torch.cat, chunk and split "
    "along the channels; view / reshape / flatten / permute / transpose that flatten, move or "
    "permute channels; mean over H and W; F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, "
    "F.adaptive_max_pool2d; F.dropout; torchvision's stochastic_depth; activations (relu, "
    "relu6, leaky_relu, elu, hardtanh, clamp, hardswish, hardsigmoid, sigmoid, silu, mish, "
    "gelu, tanh, softmax)"
)


def _target_op(node: fx.Node) -> str | None:
    if node.op == "call_method":
        return _METHODS.get(str(node.target))
    if node.op != "call_function":
        return None
    op = _FUNCTIONS.get(node.target)
    if op is None:
        target = node.target
        name = getattr(target, "__name__", "")
        module = getattr(target, "__module__", "") or ""
        if name == "stochastic_depth" and module.startswith("torchvision"):
            return "drop_path"
        if name == "drop_path":  # timm-style DropPath functions: (x, drop_prob, training)
            return "drop_path_timm"
    return op


def _bind(node: fx.Node, op: str) -> dict[str, Any]:
    """The op's arguments by name (concrete values), defaults filled in."""
    signature = inspect.signature(_SIGNATURES.get(op, _s_any))
    args = fx.node.map_arg(node.args, lambda n: n)
    try:
        bound = signature.bind(*args, **node.kwargs)
    except TypeError as error:
        raise _unsupported(node, f"{_op_name(node)} with arguments {node.args}", str(error))
    bound.apply_defaults()
    return dict(bound.arguments)


def _concrete(value: Any) -> Any:
    """A concrete argument: fx nodes of shape arithmetic become their values."""
    if isinstance(value, fx.Node):
        return value.meta["value"]
    if isinstance(value, (list, tuple)):
        return type(value)(_concrete(v) for v in value)
    return value


def _json_value(value: Any) -> Any:
    if isinstance(value, (list, tuple, torch.Size)):
        return tuple(_json_value(v) for v in value)
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    raise TypeError(f"not a JSON value: {value!r}")


class _Converter:
    """Turns the traced fx graph into GraphNodes, collapsing reshape chains and tuples."""

    def __init__(self, model: nn.Module, graph: fx.Graph) -> None:
        self.model = model
        self.graph = graph
        self.nodes: list[GraphNode] = []
        self.layers: dict[str, nn.Module] = {}
        self.names: dict[fx.Node, str] = {}  # fx node -> graph value name
        self.moved: dict[fx.Node, tuple[fx.Node, Tensor]] = {}  # reshape chain: base, indices
        self.alias: dict[fx.Node, fx.Node] = {}  # in-place ops: the mutated tensor is this now
        self.shapes: dict[str, tuple[int, ...]] = {}

    # values
    def value(self, node: fx.Node) -> str:
        node = self.alias.get(node, node)
        if node in self.names:
            return self.names[node]
        if node in self.moved:
            return self._materialise(node)
        raise _unsupported(node, f"using the result of {_op_name(node)} as a tensor")

    def add(self, node: fx.Node, op: str, inputs: tuple[str, ...], **extra: Any) -> str:
        graph_node = GraphNode(
            name=node.name,
            op=op,
            inputs=inputs,
            scope=_scope(node, exclude_leaf=node.op == "call_module"),
            **extra,
        )
        self.nodes.append(graph_node)
        self.names[node] = node.name
        value = node.meta.get("value")
        if isinstance(value, Tensor):
            self.shapes[node.name] = tuple(value.shape)
        return node.name

    # the walk
    def run(self) -> tuple[tuple[GraphNode, ...], dict[str, nn.Module]]:
        needed = self._needed()
        result: str | None = None
        for node in self.graph.nodes:
            if node not in needed and node.op != "placeholder":
                continue
            if node.op == "placeholder":
                if not self.nodes:
                    self.add(node, "input", ())
                continue
            if node.op == "output":
                value = node.args[0]
                if not isinstance(value, fx.Node) or not isinstance(
                    value.meta.get("value"), Tensor
                ):
                    raise _unsupported(
                        node,
                        "returning anything but one tensor",
                        "a CNN supernet returns one tensor of logits or features",
                    )
                result = self.value(value)
                continue
            if not node.meta.get("data", True):
                continue  # shape arithmetic: read where it is used, as concrete values
            self._convert(node)
        assert result is not None
        nodes = self.nodes
        out = next(n for n in nodes if n.name == result)
        nodes = [n for n in nodes if n.name != result] + [out]  # the output node comes last
        return _prune_dead(tuple(nodes)), self.layers

    def _needed(self) -> set[fx.Node]:
        output = next(n for n in self.graph.nodes if n.op == "output")
        # an in-place op whose result is not used still changes its input: keep it, and read
        # the changed value wherever the input is read after it
        order = {n: i for i, n in enumerate(self.graph.nodes)}
        for node in self.graph.nodes:
            if self._in_place(node) and node.args and isinstance(node.args[0], fx.Node):
                target = node.args[0]
                for user in list(target.users):
                    if user is not node and order[user] > order[node]:
                        user.replace_input_with(target, node)
                if order[output] > order[node] and output.args[0] is target:
                    output.replace_input_with(target, node)
        needed: set[fx.Node] = set()
        stack = [output]
        while stack:
            node = stack.pop()
            if node in needed:
                continue
            needed.add(node)
            stack.extend(node.all_input_nodes)
        return needed

    @staticmethod
    def _in_place(node: fx.Node) -> bool:
        if node.op == "call_method":
            name = str(node.target)
            return name.endswith("_") and not name.startswith("_")
        if node.op == "call_function":
            if getattr(node.target, "__name__", "").endswith("_") and node.target in _FUNCTIONS:
                return True
            if node.target in _IN_PLACE_FUNCTIONS:
                return isinstance(node.args[0], fx.Node) and isinstance(
                    node.args[0].meta.get("value"), Tensor
                )
            op = _target_op(node)
            if op in _SIGNATURES and "inplace" in inspect.signature(_SIGNATURES[op]).parameters:
                try:
                    return bool(_concrete(_bind(node, op).get("inplace")))
                except UnsupportedOpError:
                    return False
            return bool(node.kwargs.get("inplace"))
        return False

    def _convert(self, node: fx.Node) -> None:
        if node.op == "call_module":
            self._layer(node)
        elif node.op == "get_attr":
            value = node.meta["value"]
            if not isinstance(value, Tensor):
                raise _unsupported(node, f"reading {node.target!r}", "only tensors can be read")
            self.add(node, "param", (), target=str(node.target))
        else:
            op = _target_op(node)
            if node.op == "call_function" and node.target is operator.getitem:
                self._getitem(node)
            elif op is None:
                raise _unsupported(
                    node,
                    _op_name(node),
                    "rewrite it with supported layers or ops; "
                    + _SUPPORTED_TEXT.format(layers=", ".join(sorted(LAYER_TYPES))),
                )
            else:
                self._function(node, op)

    # layers
    def _layer(self, node: fx.Node) -> None:
        path = str(node.target)
        module = self.model.get_submodule(path)
        source = node.args[0] if node.args else None
        if len(node.args) != 1 or node.kwargs or not isinstance(source, fx.Node):
            raise _unsupported(
                node, f"calling {path!r} with extra arguments", "call a layer with one tensor"
            )
        if isinstance(module, nn.LayerNorm) and type(module) not in (
            nn.LayerNorm,
            ChannelLayerNorm,
        ):
            module = self._plain_layer_norm(node, module)
        if isinstance(module, nn.Conv2d) and isinstance(module.padding, str):
            _check_same_padding(node, module)
        if isinstance(module, nn.Conv2d) and module.padding_mode != "zeros":
            raise _unsupported(
                node,
                f"nn.Conv2d {path!r} with padding_mode={module.padding_mode!r}",
                "use zero padding (padding_mode='zeros')",
            )
        self.layers[path] = module
        self.add(node, "layer", (self.value(source),), target=path)

    def _plain_layer_norm(self, node: fx.Node, module: nn.LayerNorm) -> nn.Module:
        """A LayerNorm subclass (e.g. ConvNeXt's LayerNorm2d) as the plain layer it computes."""
        source = node.args[0]
        x = source.meta["value"]  # type: ignore[union-attr]
        want = node.meta["value"]
        for cls in (nn.LayerNorm, ChannelLayerNorm):
            plain = cls.__new__(cls)
            nn.Module.__init__(plain)
            plain.normalized_shape = module.normalized_shape
            plain.eps = module.eps
            plain.elementwise_affine = module.elementwise_affine
            plain.weight, plain.bias = module.weight, module.bias
            try:
                with torch.no_grad():
                    got = plain(x)
            except RuntimeError:
                continue
            if got.shape == want.shape and torch.allclose(got, want, atol=1e-5, rtol=1e-5):
                return plain
        raise _unsupported(
            node,
            f"{type(module).__name__} at {node.target!r}",
            "it computes neither nn.LayerNorm over the last dimension nor a LayerNorm over the "
            "channels of (N, C, H, W); use one of those",
        )

    # functions
    def _function(self, node: fx.Node, op: str) -> None:
        if op == "move":
            self._move(node)
            return
        if op == "identity":
            self._identity(node, node.args[0])
            return
        if op == "expand":  # y.expand_as(x) before a broadcasting op: the op broadcasts anyway
            source = node.args[0]
            if not _broadcasts(source, node):
                raise _unsupported(node, _op_name(node), "only size-1 dimensions can expand")
            self._identity(node, source)
            return
        if op in ("chunk", "split"):
            return  # a tuple: its items are read through getitem
        if op == "drop_path_timm":
            raise _unsupported(
                node,
                _op_name(node),
                "use torchvision.ops.stochastic_depth(x, p, 'row', self.training), or skip the "
                "call when not training",
            )
        arguments = _bind(node, op)
        if op in ("add", "sub", "mul", "div"):
            self._binary(node, op, arguments)
        elif op == "cat":
            self._cat(node, arguments)
        else:
            self._unary(node, op, arguments)

    def _identity(self, node: fx.Node, source: Any) -> None:
        self.alias[node] = source
        self.names.pop(node, None)

    def _tensor_input(self, node: fx.Node, value: Any) -> str:
        if not isinstance(value, fx.Node) or not isinstance(value.meta.get("value"), Tensor):
            raise _unsupported(node, _op_name(node), "the op must take a tensor first")
        return self.value(value)

    def _binary(self, node: fx.Node, op: str, arguments: dict[str, Any]) -> None:
        first, second = arguments["input"], arguments["other"]
        if arguments.get("alpha", 1) != 1:
            raise _unsupported(
                node, f"{_op_name(node)} with alpha", "multiply the operand instead"
            )
        tensors = [
            isinstance(v, fx.Node) and isinstance(v.meta.get("value"), Tensor)
            for v in (first, second)
        ]
        if all(tensors):
            self.add(node, op, (self.value(first), self.value(second)))
            return
        if tensors[0] or tensors[1]:
            tensor, number = (first, second) if tensors[0] else (second, first)
            number = _concrete(number)
            if isinstance(number, (int, float)) and not isinstance(number, bool):
                if op in ("add", "mul") or tensors[0]:
                    name = f"{op}_scalar"
                else:
                    name = {"sub": "rsub_scalar", "div": None}[op]
                    if name is None:
                        raise _unsupported(
                            node, "dividing a number by a tensor", "use torch.reciprocal-free ops"
                        )
                self.add(node, name, (self.value(tensor),), args={"value": number})
                return
        raise _unsupported(
            node,
            f"{_op_name(node)} with arguments {node.args}",
            "add, subtract, multiply or divide two tensors, or a tensor and a number",
        )

    def _cat(self, node: fx.Node, arguments: dict[str, Any]) -> None:
        tensors = arguments["tensors"]
        if not isinstance(tensors, (list, tuple)) or not tensors:
            raise _unsupported(node, _op_name(node), "concatenate a list of tensors")
        inputs = tuple(self._tensor_input(node, t) for t in tensors)
        rank = len(self.shapes[inputs[0]])
        dim = _concrete(arguments["dim"]) % rank
        if dim == 0:
            raise _unsupported(node, "torch.cat along the batch", "concatenate along channels")
        self.add(node, "cat", inputs, args={"dim": dim})

    def _getitem(self, node: fx.Node) -> None:
        source, index = node.args
        assert isinstance(source, fx.Node)
        kind = _target_op(source) if source.op != "call_module" else None
        index = _concrete(index)
        if kind in ("chunk", "split") and isinstance(index, int):
            self._piece(node, source, index)
            return
        value = source.meta.get("value")
        if isinstance(value, Tensor):
            self._tensor_slice(node, source, index)
            return
        raise _unsupported(node, f"indexing the result of {_op_name(source)}")

    def _piece(self, node: fx.Node, source: fx.Node, index: int) -> None:
        """Item ``index`` of a chunk / split: a slice of the channels."""
        arguments = _bind(source, _target_op(source) or "")
        tensor = arguments["input"]
        name = self._tensor_input(source, tensor)
        rank = len(self.shapes[name])
        dim = _concrete(arguments["dim"]) % rank
        pieces = source.meta["value"]
        start = sum(int(p.shape[dim]) for p in pieces[:index])
        stop = start + int(pieces[index].shape[dim])
        if dim == 0:
            raise _unsupported(source, "splitting the batch", "split along the channels")
        self.add(node, "slice_channels", (name,), args={"start": start, "stop": stop, "dim": dim})

    def _tensor_slice(self, node: fx.Node, source: fx.Node, index: Any) -> None:
        """``x[:, a:b]``: a slice of the channels; anything else is refused."""
        shape = tuple(source.meta["value"].shape)
        items = index if isinstance(index, tuple) else (index,)
        full = slice(None, None, None)
        if (
            len(items) >= 2
            and items[0] == full
            and isinstance(items[1], slice)
            and items[1].step in (None, 1)
            and all(item == full for item in items[2:])
        ):
            start, stop, _ = items[1].indices(shape[1])
            if stop > start:
                name = self.value(source)
                self.add(node, "slice_channels", (name,), args={"start": start, "stop": stop})
                return
        raise _unsupported(
            node,
            f"indexing a tensor with {index!r}",
            "slice whole channels only, as x[:, start:stop]",
        )

    def _unary(self, node: fx.Node, op: str, arguments: dict[str, Any]) -> None:
        name = self._tensor_input(node, arguments.pop("input"))
        arguments = {k: _concrete(v) for k, v in arguments.items()}
        for key in ("inplace", "_stacklevel", "dtype", "training"):
            if key == "dtype" and arguments.get(key) is not None:
                raise _unsupported(node, f"{_op_name(node)} with dtype", "leave dtype out")
            arguments.pop(key, None)
        if arguments.pop("divisor_override", None) is not None:
            raise _unsupported(node, f"{_op_name(node)} with divisor_override", "leave it out")
        if arguments.pop("return_indices", False):
            raise _unsupported(node, f"{_op_name(node)} with return_indices=True")
        if op == "clamp":
            low, high = arguments["min"], arguments["max"]
            if low is None and high is None:
                self._identity(node, arguments.get("input", node.args[0]))
                return
            if low == 0 and high is None:
                op, arguments = "relu", {}
            elif low is not None and high is not None:
                op, arguments = "hardtanh", {"min_val": float(low), "max_val": float(high)}
            else:
                raise _unsupported(node, f"{_op_name(node)} with one bound", "give both bounds")
        if op in ("dropout", "dropout2d"):
            arguments = {"p": float(arguments["p"]), "kind": op}
            op = "dropout"
        if op == "drop_path":
            arguments = {"p": float(arguments["p"]), "mode": str(arguments["mode"])}
        if op == "mean":
            dims = arguments["dim"]
            if dims is None:
                raise _unsupported(node, "a mean over every dimension", "give dim=(2, 3)")
            rank = len(self.shapes[name])
            dims = tuple(
                sorted(d % rank for d in (dims if isinstance(dims, (tuple, list)) else (dims,)))
            )
            arguments = {"dim": dims, "keepdim": bool(arguments["keepdim"])}
        if op in ("softmax", "log_softmax"):
            if arguments["dim"] is None:
                raise _unsupported(node, f"{_op_name(node)} without dim", "give dim=")
            arguments = {"dim": int(arguments["dim"])}
        try:
            args = {k: _json_value(v) for k, v in arguments.items()}
        except TypeError as error:
            raise _unsupported(node, f"{_op_name(node)} with arguments {node.args}", str(error))
        self.add(node, op, (name,), args=args)

    # reshapes, permutes, flattens
    def _move(self, node: fx.Node) -> None:
        source = node.args[0]
        if not isinstance(source, fx.Node):
            raise _unsupported(node, _op_name(node), "the op must take a tensor first")
        source = self.alias.get(source, source)
        if source in self.moved:
            base, indices = self.moved[source]
        else:
            base = source
            shape = tuple(source.meta["value"].shape)
            indices = torch.arange(math.prod(shape)).view(shape)
        args = [indices, *(_concrete(a) for a in node.args[1:])]
        kwargs = {k: _concrete(v) for k, v in node.kwargs.items()}
        if node.op == "call_method":
            moved = getattr(args[0], str(node.target))(*args[1:], **kwargs)
        else:
            moved = node.target(*args, **kwargs)  # type: ignore[operator]
        self.moved[node] = (base, moved)

    def _materialise(self, node: fx.Node) -> str:
        base, indices = self.moved[node]
        name = self.value(base)
        shape = self.shapes[name]
        op, args = _classify_move(shape, indices)
        if op is None:
            raise _unsupported(
                node,
                f"{_op_name(node)} from shape {tuple(shape)} to {tuple(indices.shape)}",
                "a CNN supernet follows reshapes that flatten (N, C, H, W) to (N, C*H*W), add "
                "or remove 1 x 1 spatial dimensions, permute the channels (channel shuffle) or "
                "move them last and back; keep the batch first",
            )
        if op == "identity":
            self.names[node] = name
            return name
        return self.add(node, op, (name,), args=args)


def _broadcasts(source: Any, node: fx.Node) -> bool:
    if not isinstance(source, fx.Node):
        return False
    small, big = tuple(source.meta["value"].shape), tuple(node.meta["value"].shape)
    return len(small) == len(big) and all(s in (1, b) for s, b in zip(small, big))


def _classify_move(shape: tuple[int, ...], indices: Tensor) -> tuple[str | None, dict[str, Any]]:
    """What a chain of reshapes did to a value of ``shape``: one graph op (or ``None``)."""
    base = torch.arange(math.prod(shape)).view(shape)
    candidates: list[tuple[str, dict[str, Any], Callable[[Tensor], Tensor]]] = [
        ("identity", {}, lambda t: t),
        ("flatten", {"start_dim": 1, "end_dim": -1}, lambda t: t.flatten(1)),
    ]
    if len(shape) == 2:
        candidates.append(("unflatten_channels", {}, lambda t: t.reshape(*t.shape, 1, 1)))
    if len(shape) == 4:
        candidates.append(("permute", {"dims": (0, 2, 3, 1)}, lambda t: t.permute(0, 2, 3, 1)))
        candidates.append(("permute", {"dims": (0, 3, 1, 2)}, lambda t: t.permute(0, 3, 1, 2)))
    for op, args, run in candidates:
        expected = run(base)
        if expected.shape == indices.shape and torch.equal(expected, indices):
            return op, args
    if tuple(indices.shape) == shape and len(shape) in (2, 4):
        per_channel = math.prod(shape[2:])
        channels = indices[0].reshape(shape[1], per_channel)[:, 0] // per_channel
        select = base.index_select(1, channels)
        if torch.equal(select, indices) and sorted(channels.tolist()) == list(range(shape[1])):
            return "select_channels", {"indices": tuple(channels.tolist()), "dim": 1}
    return None, {}


def _check_same_padding(node: fx.Node, conv: nn.Conv2d) -> None:
    if conv.padding == "valid":
        return
    odd = all((d * (k - 1)) % 2 == 0 for k, d in zip(conv.kernel_size, conv.dilation))
    if not odd:
        raise _unsupported(
            node,
            f"nn.Conv2d {node.target!r} with padding='same' and an even kernel",
            "'same' pads such a kernel unevenly; use an odd kernel or explicit padding",
        )


def _prune_dead(nodes: tuple[GraphNode, ...]) -> tuple[GraphNode, ...]:
    """Drop nodes the output does not depend on."""
    needed = {nodes[-1].name}
    for node in reversed(nodes):
        if node.name in needed:
            needed.update(node.inputs)
    return tuple(n for n in nodes if n.name in needed or n.op == "input")


class Traced(NamedTuple):
    """A traced CNN: nodes, the layers and tensors they use, and every value's shape."""

    nodes: tuple[GraphNode, ...]
    layers: dict[str, nn.Module]
    params: dict[str, Tensor]
    shapes: dict[str, tuple[int, ...]]


def trace_cnn(
    model: nn.Module, *, image_size: int | tuple[int, int] | None = None
) -> tuple[tuple[GraphNode, ...], dict[str, nn.Module]]:
    """Trace ``model`` into graph nodes plus the layers they call (see :func:`trace_graph`)."""
    traced = trace_graph(model, image_size=image_size)
    return traced.nodes, traced.layers


def trace_graph(model: nn.Module, *, image_size: int | tuple[int, int] | None = None) -> Traced:
    """Trace ``model`` into graph nodes plus the layers they call (the model's own modules),
    the tensors read in forward (parameters such as a layer scale) and each value's shape.

    The model runs once, in eval mode and without gradients, on a random example image of
    ``image_size`` (else the first of 64, 32, 224, ... it runs on); its training flags are
    restored afterwards.

    Raises:
        UnsupportedOpError: an op or layer has no place in a CNN supernet; the message names the
            file and line, the op, the module whose forward uses it, and a rewrite.
    """
    sizes = PROBE_SIZES
    if image_size is not None:
        first = image_size if isinstance(image_size, int) else int(image_size[0])
        sizes = (first, *PROBE_SIZES)
    graph, _ = _probe(model, sizes)
    converter = _Converter(model, graph)
    nodes, layers = converter.run()
    used = {n.target for n in nodes if n.op == "layer"}
    params: dict[str, Tensor] = {}
    for node in nodes:
        if node.op == "param":
            value: Any = model
            for part in node.target.split("."):
                value = getattr(value, part)
            params[node.target] = value
    shapes = {n.name: converter.shapes[n.name] for n in nodes if n.name in converter.shapes}
    return Traced(nodes, {p: m for p, m in layers.items() if p in used}, params, shapes)
