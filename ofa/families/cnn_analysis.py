"""Structure of a CNN graph: coupled channel groups, skippable blocks and stages, shapes.

Every value's channels are described by a *layout*: runs of consecutive channels of *atoms*
(the output channels of one conv or linear, or the image input). A depthwise conv, batch norm,
activation or pool passes its input's layout on; a concatenation joins the layouts of its
inputs; a slice (chunk, split) takes part of one and a channel permutation (shuffle) reorders
it, as a dependency graph maps index ranges. An add, subtract, multiply or divide of two values
makes their channels the same ones. Where a slice or an add cuts an atom, the atom is split
into pieces, each shrinking on its own. Pieces that must stay the same channels, and the input
and output channels of a grouped conv (which shrinks by whole groups), form one channel group:
one width of the search space. A subnet keeps the leading channels of every piece, so a value's
active channels are a known subset of its full channels, in order.

Groups that touch the image input or the model output keep their full width, and so do a few
others; :class:`ChannelGroup.reason` says why.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ofa.elastic.conv import elastic_kernel_sizes, numeric_padding
from ofa.families.cnn_graph import ChannelLayerNorm, GraphNode

__all__ = [
    "Block",
    "ChannelGroup",
    "CnnStructure",
    "Elasticity",
    "Run",
    "Stage",
    "analyse",
    "spatial_sizes",
    "value_shapes",
]

_PASS_THROUGH = {
    "relu", "relu6", "hardswish", "hardsigmoid", "sigmoid", "silu", "gelu", "tanh", "identity",
    "add_scalar", "sub_scalar", "rsub_scalar", "mul_scalar", "div_scalar", "leaky_relu",
    "elu", "hardtanh", "mish", "dropout", "drop_path", "softmax", "log_softmax",
    "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "adaptive_max_pool2d",
}  # fmt: skip
_ACTIVATIONS = {
    "relu", "relu6", "hardswish", "hardsigmoid", "sigmoid", "silu", "gelu", "tanh",
    "leaky_relu", "elu", "hardtanh", "mish",
}  # fmt: skip
_ACTIVATION_LAYERS = {
    "ReLU", "ReLU6", "LeakyReLU", "Hardswish", "SiLU", "GELU", "Identity", "Mish", "ELU",
    "Hardtanh",
}  # fmt: skip
_BINARY = {"add", "sub", "mul", "div"}


@dataclass(frozen=True)
class Run:
    """``length`` consecutive channels of piece ``piece``, from its channel ``start``."""

    piece: int
    start: int
    length: int


@dataclass(frozen=True)
class ChannelGroup:
    """Channels that share one width (and, for reordering, one permutation of ``block``-sized
    units): one unit group of the supernet.

    ``fixed`` groups keep their full width; ``reason`` says why.
    """

    name: str
    size: int
    fixed: bool
    producers: tuple[str, ...]  # convs / linears whose output rows are these channels
    consumers: tuple[str, ...]  # convs / linears whose input columns are these channels
    depthwise: tuple[str, ...]  # depthwise convs running over these channels
    norms: tuple[str, ...]  # batch / layer norms over these channels
    block: int = 1  # channels per unit: a grouped conv's channels per group
    reason: str = ""
    pieces: tuple[int, ...] = ()


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
    """What :func:`analyse` finds: groups, value layouts, stages and shrinkable kernels.

    ``layouts[value]`` lists the runs of pieces along the value's channel axis; ``mult[value]``
    is how many consecutive elements each channel has there (``H * W`` after a flatten).
    ``piece_group[p]`` and ``piece_size[p]`` are the group and the size of piece ``p``.
    """

    groups: tuple[ChannelGroup, ...]
    layouts: Mapping[str, tuple[Run, ...]]
    mult: Mapping[str, int]
    piece_group: tuple[int, ...]
    piece_size: tuple[int, ...]
    stages: tuple[Stage, ...]
    kernel_convs: tuple[str, ...]  # convs whose kernel can shrink
    param_follows: Mapping[str, str] = field(default_factory=dict)  # param node -> value

    def group(self, name: str) -> ChannelGroup:
        return next(g for g in self.groups if g.name == name)

    @property
    def value_group(self) -> dict[str, int]:
        """Value -> its group, for values whose channels are all of one group."""
        found = {}
        for value, runs in self.layouts.items():
            groups = {self.piece_group[r.piece] for r in runs}
            if len(groups) == 1:
                found[value] = groups.pop()
        return found

    # ---- a subnet's active channels ----------------------------------------------------------
    def piece_widths(self, widths: list[int] | tuple[int, ...]) -> list[int]:
        """Active channels of every piece for one width per group (in ``groups`` order)."""
        return [widths[g] for g in self.piece_group]

    def ranges(self, value: str, piece_widths: list[int]) -> list[tuple[int, int]]:
        """The active channels of ``value`` as ``[start, stop)`` ranges of its full elements."""
        mult = self.mult.get(value, 1)
        found: list[tuple[int, int]] = []
        offset = 0
        for run in self.layouts[value]:
            count = min(run.length, max(0, piece_widths[run.piece] - run.start))
            if count:
                start, stop = offset * mult, (offset + count) * mult
                if found and found[-1][1] == start:
                    found[-1] = (found[-1][0], stop)
                else:
                    found.append((start, stop))
            offset += run.length
        return found

    def width(self, value: str, piece_widths: list[int]) -> int:
        """Active elements along the channel axis of ``value``."""
        return sum(stop - start for start, stop in self.ranges(value, piece_widths))

    def full_width(self, value: str) -> int:
        return sum(r.length for r in self.layouts[value]) * self.mult.get(value, 1)

    def group_counts(self, value: str) -> dict[int, int]:
        """Group -> how many of its channel sets make up ``value`` (times ``mult``); the
        channels of fixed groups are under -1, as their count."""
        counts: dict[int, int] = {}
        mult = self.mult.get(value, 1)
        for run in self.layouts[value]:
            group = self.piece_group[run.piece]
            if self.groups[group].fixed:
                counts[-1] = counts.get(-1, 0) + run.length * mult
            elif run.start == 0 and run.length == self.piece_size[run.piece]:
                counts[group] = counts.get(group, 0) + mult
            else:  # a run of part of a piece (a channel permutation): count the whole piece once
                share = run.length / self.piece_size[run.piece]
                counts[group] = counts.get(group, 0) + share * mult  # type: ignore[assignment]
        return counts


def _multiple(group: ChannelGroup, width_multiple: int) -> int:
    """Widths of ``group`` other than its full one are multiples of this."""
    return math.lcm(group.block, width_multiple)


@dataclass(frozen=True)
class Elasticity:
    """How much of a converted CNN can shrink: channel groups, stages and kernels.

    Attributes:
        groups: channel groups of the model, but for the image input and the output.
        elastic: the names of those that can take more than one width.
        fixed: name -> why each other group keeps its width.
        stages: depth-elastic stages; ``kernel_convs``: kernel-elastic convs.
    """

    groups: int
    elastic: tuple[str, ...]
    fixed: Mapping[str, str]
    stages: int
    kernel_convs: int

    @property
    def fraction(self) -> float:
        """Share of the channel groups that can shrink (1.0 when there are none)."""
        return len(self.elastic) / self.groups if self.groups else 1.0

    @property
    def degenerate(self) -> bool:
        """Fewer than half the channel groups can shrink."""
        return self.fraction < 0.5

    def summary(self) -> str:
        reasons: dict[str, int] = {}
        for reason in self.fixed.values():
            key = reason.split(" (")[0] if reason.startswith("grouped conv") else reason
            reasons[key] = reasons.get(key, 0) + 1
        why = "; ".join(
            f"{count} x {reason}" for reason, count in sorted(reasons.items(), key=lambda r: -r[1])
        )
        return (
            f"{len(self.elastic)} of {self.groups} channel groups ({100 * self.fraction:.0f}%) "
            f"can shrink, {self.stages} stages can drop blocks, {self.kernel_convs} convs can "
            f"shrink their kernel" + (f"; fixed: {why}" if why else "")
        )


def _elasticity(structure: CnnStructure, space: Any, width_multiple: int) -> Elasticity:
    chosen = {} if space is None else dict(zip(space.channel_groups, space.channel_choices))
    inner = [
        g for g in structure.groups if g.reason not in ("the image input", "the model's output")
    ]
    elastic, fixed = [], {}
    for group in inner:
        if group.fixed:
            fixed[group.name] = group.reason
            continue
        if space is not None:
            many = len(chosen.get(group.name, ())) > 1
        else:
            many = group.size > _multiple(group, width_multiple)
        if many:
            elastic.append(group.name)
        else:
            fixed[group.name] = (
                f"narrower than two steps of {_multiple(group, width_multiple)} channels"
            )
    return Elasticity(
        groups=len(inner),
        elastic=tuple(elastic),
        fixed=fixed,
        stages=len(structure.stages) if space is None else len(space.stages),
        kernel_convs=len(structure.kernel_convs) if space is None else len(space.kernel_convs),
    )


# ---- shapes --------------------------------------------------------------------------------------
def _example(nodes: tuple[GraphNode, ...], layers: Mapping[str, nn.Module], size: int) -> Tensor:
    channels = None
    for node in nodes:
        if node.op == "layer" and isinstance(layers[node.target], nn.Conv2d):
            channels = int(layers[node.target].in_channels)  # type: ignore[arg-type]
            break
    if channels is None:
        raise ValueError("the graph has no Conv2d: it is not a CNN")
    reference = next((p for layer in layers.values() for p in layer.parameters()), None)
    example = torch.zeros(2, channels, size, size)
    if reference is not None:
        example = example.to(device=reference.device, dtype=reference.dtype)
    return example


def value_shapes(
    nodes: tuple[GraphNode, ...],
    layers: Mapping[str, nn.Module],
    params: Mapping[str, Tensor] | None = None,
    *,
    sizes: tuple[int, ...] = (64, 32, 224, 96, 128, 28, 299),
) -> dict[str, tuple[int, ...]]:
    """The shape of every value on a batch of two zero images (the first size it runs on)."""
    from ofa.families import cnn_graph

    params = params or {}
    shapes: dict[str, tuple[int, ...]] = {}
    last: Exception | None = None
    for size in sizes:
        example = _example(nodes, layers, size)
        shapes.clear()
        training = [(layer, layer.training) for layer in layers.values()]
        try:
            for layer, _ in training:
                layer.eval()
            with torch.no_grad():
                _run_recording(nodes, layers, params, example, shapes, cnn_graph)
            return shapes
        except (RuntimeError, ValueError, IndexError) as error:
            last = error
        finally:
            for layer, flag in training:
                layer.train(flag)
    raise ValueError(f"the graph does not run on example images ({last})")


def _run_recording(nodes, layers, params, example, shapes, cnn_graph) -> None:  # noqa: ANN001
    values: dict[str, Tensor] = {}
    for node in nodes:
        if node.op == "input":
            value = example
        elif node.op == "param":
            value = params[node.target]
        else:
            inputs = [values[name] for name in node.inputs]
            if node.op == "layer":
                value = layers[node.target](inputs[0])
            elif node.op in cnn_graph._TRAINING_OPS:
                value = cnn_graph.FUNCTIONS[node.op](*inputs, **node.args, training=False)
            else:
                value = cnn_graph.FUNCTIONS[node.op](*inputs, **node.args)
        values[node.name] = value
        shapes[node.name] = tuple(value.shape)


# ---- layouts ---------------------------------------------------------------------------------------
class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def find(self, key: int) -> int:
        self.parent.setdefault(key, key)
        while self.parent[key] != key:
            self.parent[key] = self.parent[self.parent[key]]
            key = self.parent[key]
        return key

    def union(self, a: int, b: int) -> None:
        root_a, root_b = self.find(a), self.find(b)
        if root_a != root_b:
            self.parent[max(root_a, root_b)] = min(root_a, root_b)


def _is_depthwise(conv: nn.Conv2d) -> bool:
    return conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels


@dataclass
class _Atom:
    name: str  # the producing layer's path, "input", or a param / constant
    size: int
    cuts: set[int] = field(default_factory=set)


class _Layouts:
    """One pass over the graph with the current cuts: layouts, and the cuts and joins they need."""

    def __init__(
        self,
        nodes: tuple[GraphNode, ...],
        layers: Mapping[str, nn.Module],
        shapes: Mapping[str, tuple[int, ...]],
        atoms: list[_Atom],
        atom_of: dict[str, int],
    ) -> None:
        self.nodes, self.layers, self.shapes = nodes, layers, shapes
        self.atoms, self.atom_of = atoms, atom_of
        # pieces of every atom, from its cuts
        self.pieces: list[tuple[int, int, int]] = []  # (atom, start, size)
        self.piece_at: dict[int, list[int]] = {}
        for index in range(len(atoms)):
            self._add_pieces(index)
        self.layouts: dict[str, tuple[Run, ...]] = {}
        self.axis: dict[str, int | None] = {}  # channel axis of each value (None: no channels)
        self.mult: dict[str, int] = {}
        self.new_cuts = False
        self.joins: list[tuple[int, int]] = []  # pieces that are the same channels
        self.ties: list[tuple[int, int, int, str]] = []  # grouped conv: in piece, out piece, block
        self.fixed: dict[int, str] = {}  # piece -> why it keeps its width
        self.param_follows: dict[str, str] = {}
        self.by_name = {n.name: n for n in nodes}

    def _add_pieces(self, index: int) -> None:
        atom = self.atoms[index]
        bounds = sorted({0, atom.size} | {c for c in atom.cuts if 0 < c < atom.size})
        self.piece_at[index] = []
        for start, stop in zip(bounds, bounds[1:]):
            self.piece_at[index].append(len(self.pieces))
            self.pieces.append((index, start, stop - start))

    # helpers
    def _atom_runs(self, atom: int) -> tuple[Run, ...]:
        return tuple(Run(p, 0, self.pieces[p][2]) for p in self.piece_at[atom])

    def _new_atom(self, name: str, size: int) -> int:
        if name not in self.atom_of:
            self.atom_of[name] = len(self.atoms)
            self.atoms.append(_Atom(name, size))
        index = self.atom_of[name]
        if index not in self.piece_at:
            self._add_pieces(index)
        return index

    def _cut(self, piece: int, at: int) -> None:
        """Cut ``piece`` at its channel ``at`` (0 < at < size)."""
        atom, start, size = self.pieces[piece]
        if 0 < at < size and start + at not in self.atoms[atom].cuts:
            self.atoms[atom].cuts.add(start + at)
            self.new_cuts = True

    def _channels(self, runs: tuple[Run, ...]) -> list[tuple[int, int]]:
        return [(r.piece, r.start + i) for r in runs for i in range(r.length)]

    @staticmethod
    def _compress(channels: list[tuple[int, int]]) -> tuple[Run, ...]:
        runs: list[Run] = []
        for piece, position in channels:
            if runs and runs[-1].piece == piece and runs[-1].start + runs[-1].length == position:
                runs[-1] = Run(piece, runs[-1].start, runs[-1].length + 1)
            else:
                runs.append(Run(piece, position, 1))
        return tuple(runs)

    def _slice(self, runs: tuple[Run, ...], start: int, stop: int) -> tuple[Run, ...]:
        """Channels ``[start, stop)`` of a layout. Every piece it takes part of is cut, so that
        it takes whole pieces (of a permuted layout too); a piece it takes scattered channels
        of keeps its width."""
        found, offset = [], 0
        taken: dict[int, list[int]] = {}
        for run in runs:
            low, high = max(start, offset), min(stop, offset + run.length)
            if low < high:
                first = run.start + low - offset
                found.append(Run(run.piece, first, high - low))
                taken.setdefault(run.piece, []).extend(range(first, first + high - low))
            offset += run.length
        for piece, positions in taken.items():
            if len(positions) == self.pieces[piece][2]:
                continue
            low, high = min(positions), max(positions) + 1
            if len(set(positions)) == high - low:
                self._cut(piece, low)
                self._cut(piece, high)
            else:
                self.fixed.setdefault(piece, "a slice takes scattered channels of it")
        return tuple(found)

    def _align(self, first: tuple[Run, ...], second: tuple[Run, ...]) -> None:
        """Make two layouts the same channels: cut what does not line up, then join pieces."""
        i = j = 0
        a = list(first)
        b = list(second)
        while i < len(a) and j < len(b):
            ra, rb = a[i], b[j]
            length = min(ra.length, rb.length)
            for run in (ra, rb):
                self._cut(run.piece, run.start)
                self._cut(run.piece, run.start + length)
            if (
                ra.start == 0 == rb.start
                and length == self.pieces[ra.piece][2] == self.pieces[rb.piece][2]
            ):
                self.joins.append((ra.piece, rb.piece))
            a[i] = Run(ra.piece, ra.start + length, ra.length - length)
            b[j] = Run(rb.piece, rb.start + length, rb.length - length)
            i += a[i].length == 0
            j += b[j].length == 0

    def _fix(self, runs: tuple[Run, ...], reason: str) -> None:
        for run in runs:
            self.fixed.setdefault(run.piece, reason)

    def _pass(self, name: str, source: str) -> None:
        self.layouts[name] = self.layouts[source]
        self.axis[name] = self.axis[source]
        self.mult[name] = self.mult[source]

    # the pass
    def run(self) -> None:
        first_input: dict[str, str] = {}
        for node in self.nodes:
            self._node(node)
            layer = self.layers.get(node.target) if node.op == "layer" else None
            if node.op == "layer" and any(True for _ in layer.parameters(recurse=False)):  # type: ignore[union-attr]
                # a layer called twice reads the same channels both times (shared weights)
                source = node.inputs[0]
                earlier = first_input.setdefault(node.target, source)
                if earlier != source:
                    self._align(self.layouts[earlier], self.layouts[source])
        output = self.nodes[-1].name
        if self.axis.get(output) is not None:
            self._fix(self.layouts[output], "the model's output")

    def _node(self, node: GraphNode) -> None:
        name, shape = node.name, self.shapes[node.name]
        layer = self.layers.get(node.target) if node.op == "layer" else None
        source = node.inputs[0] if node.inputs else ""
        if node.op == "input":
            atom = self._new_atom("input", shape[1])
            self.layouts[name], self.axis[name], self.mult[name] = self._atom_runs(atom), 1, 1
            self._fix(self.layouts[name], "the image input")
        elif node.op == "param":
            self.layouts[name], self.axis[name], self.mult[name] = (), None, 1
        elif isinstance(layer, nn.Conv2d):
            self._conv(node, layer, source)
        elif isinstance(layer, nn.Linear):
            self._linear(node, layer, source)
        elif isinstance(layer, (nn.BatchNorm2d, ChannelLayerNorm)):
            self._pass(name, source)
            if self.axis[source] != 1:
                self._fix(self.layouts[source], f"{node.target} normalises a non-channel axis")
        elif isinstance(layer, nn.LayerNorm):
            self._pass(name, source)
            if self.axis[source] != len(self.shapes[source]) - 1 or self.mult[source] != 1:
                self._fix(self.layouts[source], f"LayerNorm {node.target} is not over channels")
        elif isinstance(layer, nn.Flatten) or node.op == "flatten":
            self._flatten(node, layer, source)
        elif node.op == "unflatten_channels":
            self._pass(name, source)
        elif node.op == "permute":
            self._pass(name, source)
            axis = self.axis[source]
            if axis is not None:
                self.axis[name] = tuple(node.args["dims"]).index(axis)
        elif node.op == "mean":
            self._mean(node, source)
        elif node.op == "cat":
            self._cat(node)
        elif node.op == "slice_channels":
            self._slice_node(node, source)
        elif node.op == "select_channels":
            self._select(node, source)
        elif node.op in _BINARY:
            self._binary(node)
        else:  # batch-norm-like layers, activations, pools, dropout: channels pass through
            self._pass(name, source)

    def _conv(self, node: GraphNode, conv: nn.Conv2d, source: str) -> None:
        name = node.name
        if self.axis[source] != 1:
            raise ValueError(f"conv {node.target} reads a tensor whose channels are not axis 1")
        if _is_depthwise(conv):
            self._pass(name, source)
            return
        atom = self._new_atom(node.target, conv.out_channels)
        self.layouts[name], self.axis[name], self.mult[name] = self._atom_runs(atom), 1, 1
        if conv.groups > 1:
            runs_in, runs_out = self.layouts[source], self.layouts[name]
            per_in, per_out = conv.in_channels // conv.groups, conv.out_channels // conv.groups
            whole = (
                len(runs_in) == 1
                and len(runs_out) == 1
                and runs_in[0].start == 0
                and runs_in[0].length == conv.in_channels
            )
            if whole and per_in == per_out:
                self.ties.append((runs_in[0].piece, runs_out[0].piece, per_in, node.target))
            else:
                why = (
                    "reads a concatenated or split input"
                    if not whole
                    else f"has {per_in} input but {per_out} output channels per group"
                )
                reason = f"grouped conv {node.target} (groups={conv.groups}) {why}"
                self._fix(runs_in, reason)
                self._fix(runs_out, reason)

    def _linear(self, node: GraphNode, linear: nn.Linear, source: str) -> None:
        name = node.name
        atom = self._new_atom(node.target, linear.out_features)
        axis = self.axis[source]
        rank = len(self.shapes[source])
        self.layouts[name], self.mult[name] = self._atom_runs(atom), 1
        self.axis[name] = rank - 1
        if axis != rank - 1:
            reason = f"Linear {node.target} runs over a spatial dimension"
            self._fix(self.layouts[source], reason)
            self._fix(self.layouts[name], reason)

    def _flatten(self, node: GraphNode, layer: nn.Module | None, source: str) -> None:
        name = node.name
        start = layer.start_dim if isinstance(layer, nn.Flatten) else node.args.get("start_dim", 0)
        end = layer.end_dim if isinstance(layer, nn.Flatten) else node.args.get("end_dim", -1)
        shape = self.shapes[source]
        rank = len(shape)
        start, end = start % rank, end % rank
        axis = self.axis[source]
        self._pass(name, source)
        if axis is None:
            return
        if start == 0:
            self._fix(self.layouts[source], f"{node.name} flattens the batch")
            self.axis[name] = None
            return
        if not start <= axis <= end:
            self.axis[name] = axis if axis < start else axis - (end - start)
            return
        inner = math.prod(shape[axis + 1 : end + 1])
        outer = math.prod(shape[start:axis])
        self.axis[name] = start
        if outer != 1:  # channels-last flattened: channels interleave with positions
            self._fix(self.layouts[source], f"{node.name} flattens channels-last features")
        self.mult[name] = self.mult[source] * inner

    def _mean(self, node: GraphNode, source: str) -> None:
        name = node.name
        self._pass(name, source)
        axis = self.axis[source]
        dims = tuple(node.args["dim"])
        if axis is None:
            return
        if axis in dims:
            self.layouts[name], self.axis[name], self.mult[name] = (), None, 1
            return
        if not node.args.get("keepdim", False):
            self.axis[name] = axis - sum(d < axis for d in dims)

    def _cat(self, node: GraphNode) -> None:
        name = node.name
        dim = node.args.get("dim", 1)
        axes = {self.axis[i] for i in node.inputs}
        if axes != {dim}:
            raise ValueError(f"{name} concatenates along a non-channel axis ({dim})")
        runs: list[Run] = []
        mults = {self.mult[i] for i in node.inputs}
        for value in node.inputs:
            runs.extend(self.layouts[value])
        self.layouts[name], self.axis[name] = tuple(runs), dim
        self.mult[name] = mults.pop() if len(mults) == 1 else 1
        if len(mults) > 0:
            self._fix(tuple(runs), f"{name} concatenates flattened features of different sizes")

    def _slice_node(self, node: GraphNode, source: str) -> None:
        name = node.name
        if node.args.get("dim", 1) != self.axis[source] or self.mult[source] != 1:
            raise ValueError(f"{name} slices a non-channel axis")
        self._pass(name, source)
        self.layouts[name] = self._slice(
            self.layouts[source], int(node.args["start"]), int(node.args["stop"])
        )

    def _select(self, node: GraphNode, source: str) -> None:
        name = node.name
        if node.args.get("dim", 1) != self.axis[source] or self.mult[source] != 1:
            raise ValueError(f"{name} permutes a non-channel axis")
        self._pass(name, source)
        channels = self._channels(self.layouts[source])
        self.layouts[name] = self._compress([channels[i] for i in node.args["indices"]])

    def _binary(self, node: GraphNode) -> None:
        name = node.name
        first, second = node.inputs
        shape = self.shapes[name]
        carrying = []
        for value in (first, second):
            axis = self.axis[value]
            offset = len(shape) - len(self.shapes[value])
            if axis is not None and self.shapes[value][axis] > 1:
                carrying.append((value, axis + offset))
        if not carrying:  # e.g. a scale from a param against a broadcast value
            self._pass(name, first if self.axis[first] is not None else second)
            self._follow_params(node, name)
            return
        value, axis = carrying[0]
        self._pass(name, value)
        self.axis[name] = axis
        if len(carrying) == 2:
            other, other_axis = carrying[1]
            if other_axis != axis or self.mult[other] != self.mult[value]:
                reason = f"{name} combines tensors whose channel axes differ"
                self._fix(self.layouts[value], reason)
                self._fix(self.layouts[other], reason)
            else:
                self._align(self.layouts[value], self.layouts[other])
        self._follow_params(node, name)

    def _follow_params(self, node: GraphNode, name: str) -> None:
        """A param read beside a value with channels (a layer scale) follows its channels."""
        for value in node.inputs:
            producer = self.by_name.get(value)
            if producer is None or producer.op != "param":
                continue
            axis = self.axis[name]
            shape = self.shapes[value]
            offset = len(self.shapes[name]) - len(shape)
            if axis is None or axis - offset < 0 or shape[axis - offset] == 1:
                continue  # broadcast along the channels: nothing to slice
            if axis - offset != 0 or self.param_follows.get(value, name) != name:
                self._fix(self.layouts[name], f"{producer.target} is read with other channels")
                continue
            self.param_follows[value] = name


def _layouts(
    nodes: tuple[GraphNode, ...],
    layers: Mapping[str, nn.Module],
    shapes: Mapping[str, tuple[int, ...]],
) -> _Layouts:
    atoms: list[_Atom] = []
    atom_of: dict[str, int] = {}
    for _ in range(10_000):
        found = _Layouts(nodes, layers, shapes, atoms, atom_of)
        found.run()
        if not found.new_cuts:
            return found
    raise RuntimeError("channel layouts did not settle")  # pragma: no cover


def _groups(
    found: _Layouts, nodes: tuple[GraphNode, ...], layers: Mapping[str, nn.Module]
) -> tuple[tuple[ChannelGroup, ...], tuple[int, ...]]:
    pieces = found.pieces
    sets = _UnionFind()
    for a, b in found.joins:
        sets.union(a, b)
    block: dict[int, int] = {}
    tie_reason: dict[int, str] = {}
    for piece_in, piece_out, per_group, path in found.ties:
        if pieces[piece_in][2] != pieces[piece_out][2]:
            reason = f"grouped conv {path} reads or writes a split atom"
            found.fixed.setdefault(piece_in, reason)
            found.fixed.setdefault(piece_out, reason)
            continue
        sets.union(piece_in, piece_out)
        tie_reason[piece_in] = tie_reason[piece_out] = path
        for piece in (piece_in, piece_out):
            block[piece] = math.lcm(block.get(piece, 1), per_group)
    # pieces in value order; roots in order of first appearance
    order: list[int] = []
    for node in nodes:
        for run in found.layouts.get(node.name, ()):
            root = sets.find(run.piece)
            if root not in order:
                order.append(root)
    for piece in range(len(pieces)):
        root = sets.find(piece)
        if root not in order:
            order.append(root)
    index = {root: i for i, root in enumerate(order)}
    piece_group = tuple(index[sets.find(p)] for p in range(len(pieces)))
    members: list[dict[str, list[str]]] = [
        {"producers": [], "consumers": [], "depthwise": [], "norms": []} for _ in order
    ]

    def note(kind: str, value: str, path: str) -> None:
        for run in found.layouts.get(value, ()):
            bucket = members[piece_group[run.piece]][kind]
            if path not in bucket:
                bucket.append(path)

    for node in nodes:
        if node.op != "layer":
            continue
        layer = layers[node.target]
        if isinstance(layer, (nn.BatchNorm2d, nn.LayerNorm)):
            note("norms", node.inputs[0], node.target)
        elif isinstance(layer, nn.Conv2d) and _is_depthwise(layer):
            note("depthwise", node.inputs[0], node.target)
        elif isinstance(layer, (nn.Conv2d, nn.Linear)):
            note("producers", node.name, node.target)
            note("consumers", node.inputs[0], node.target)
    groups = []
    for position, root in enumerate(order):
        own = [p for p in range(len(pieces)) if piece_group[p] == position]
        parts = members[position]
        size = pieces[own[0]][2]
        reasons = [found.fixed[p] for p in own if p in found.fixed]
        unit = max((block.get(p, 1) for p in own), default=1)
        atom, start, length = pieces[own[0]]
        atom_size = found.atoms[atom].size
        label = found.atoms[atom].name
        if length != atom_size:
            label = f"{label}[{start}:{start + length}]"
        producers = list(parts["producers"])
        name = label if length != atom_size or not producers else producers[0]
        groups.append(
            ChannelGroup(
                name=name,
                size=int(size),
                fixed=bool(reasons),
                producers=tuple(producers),
                consumers=tuple(parts["consumers"]),
                depthwise=tuple(parts["depthwise"]),
                norms=tuple(parts["norms"]),
                block=unit,
                reason=reasons[0] if reasons else "",
                pieces=tuple(own),
            )
        )
    # names must be unique: pieces of one layer carry their channel range
    seen: dict[str, int] = {}
    for group in groups:
        seen[group.name] = seen.get(group.name, 0) + 1
    unique = []
    for group in groups:
        if seen[group.name] > 1:
            atom, start, length = pieces[group.pieces[0]]
            label = f"{found.atoms[atom].name}[{start}:{start + length}]"
            group = dataclasses.replace(group, name=label)
        unique.append(group)
    return tuple(unique), piece_group


# ---- blocks and stages -------------------------------------------------------------------------
def _members(nodes: tuple[GraphNode, ...]) -> dict[str, list[GraphNode]]:
    """Module path -> the nodes it owns (its own and its descendants'), in order."""
    found: dict[str, list[GraphNode]] = {}
    for node in nodes:
        parts = node.owner.split(".") if node.owner else []
        for depth in range(1, len(parts) + 1):
            found.setdefault(".".join(parts[:depth]), []).append(node)
    return found


def _children(nodes: tuple[GraphNode, ...]) -> dict[str, list[str]]:
    """Module path -> its child modules that own nodes, in the order they first run."""
    found: dict[str, list[str]] = {}
    for node in nodes:
        parts = node.owner.split(".") if node.owner else []
        for depth in range(1, len(parts) + 1):
            parent, child = ".".join(parts[: depth - 1]), ".".join(parts[:depth])
            bucket = found.setdefault(parent, [])
            if child not in bucket:
                bucket.append(child)
    return found


def _block(
    nodes: tuple[GraphNode, ...],
    inside: list[GraphNode],
    path: str,
    layers: Mapping[str, nn.Module],
    readers: Mapping[str, list[str]],
) -> Block | None:
    """The block at ``path`` when it has one input, one output and an identity shortcut."""
    names = {n.name for n in inside}
    inputs = {i for n in inside for i in n.inputs if i not in names}
    used_outside = {n for n in names if any(r not in names for r in readers.get(n, ()))}
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


def _stages(nodes: tuple[GraphNode, ...], layers: Mapping[str, nn.Module]) -> tuple[Stage, ...]:
    members = _members(nodes)
    readers: dict[str, list[str]] = {}
    for node in nodes:
        for name in node.inputs:
            readers.setdefault(name, []).append(node.name)
    stages = []
    for _parent, children in _children(nodes).items():
        if len(children) < 2:
            continue
        head: str | None = None
        run: list[Block] = []
        previous_output: str | None = None
        for path in children:
            inside = members[path]
            block = _block(nodes, inside, path, layers, readers)
            if block is not None and head is not None and block.input == previous_output:
                run.append(block)
            else:
                if run and head is not None:
                    stages.append(Stage(name=head, blocks=tuple(run)))
                head, run = path, []
            names = {n.name for n in inside}
            outputs = {n for n in names if any(r not in names for r in readers.get(n, ()))}
            outputs |= {nodes[-1].name} & names
            previous_output = next(iter(outputs)) if len(outputs) == 1 else None
        if run and head is not None:
            stages.append(Stage(name=head, blocks=tuple(run)))
    return tuple(stages)


def analyse(
    nodes: tuple[GraphNode, ...],
    layers: Mapping[str, nn.Module],
    params: Mapping[str, Tensor] | None = None,
    *,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
) -> CnnStructure:
    """Channel groups, value layouts, droppable stages and shrinkable kernels of a traced CNN."""
    if shapes is None:
        shapes = value_shapes(nodes, layers, params)
    found = _layouts(nodes, layers, shapes)
    groups, piece_group = _groups(found, nodes, layers)
    convs = {
        n.target: layer
        for n in nodes
        if n.op == "layer" and isinstance(layer := layers[n.target], nn.Conv2d)
    }
    kernel_convs = tuple(
        path for path, conv in convs.items() if len(elastic_kernel_sizes(conv)) > 1
    )
    return CnnStructure(
        groups=groups,
        layouts=found.layouts,
        mult=found.mult,
        piece_group=piece_group,
        piece_size=tuple(p[2] for p in found.pieces),
        stages=_stages(nodes, layers),
        kernel_convs=tuple(dict.fromkeys(kernel_convs)),
        param_follows=found.param_follows,
    )


# ---- spatial sizes ----------------------------------------------------------------------------
def _pooled(size: int, kernel: int, stride: int, padding: int, dilation: int, ceil: bool) -> int:
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    out = -(-span // stride) + 1 if ceil else span // stride + 1
    if ceil and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def _pair(value: Any) -> tuple[int, int]:
    if value is None:
        return (0, 0)
    return (value, value) if isinstance(value, int) else tuple(value)  # type: ignore[return-value]


def _window(layer: nn.Module | None, node: GraphNode) -> tuple[Any, ...] | None:
    """(kernel, stride, padding, dilation, ceil) of a conv or pool, layer or functional."""
    if isinstance(layer, nn.Conv2d):
        return (layer.kernel_size, layer.stride, numeric_padding(layer), layer.dilation, False)
    if isinstance(layer, (nn.MaxPool2d, nn.AvgPool2d)):
        return (
            layer.kernel_size,
            layer.stride or layer.kernel_size,
            layer.padding,
            getattr(layer, "dilation", 1),
            bool(layer.ceil_mode),
        )
    if node.op in ("max_pool2d", "avg_pool2d"):
        args = node.args
        kernel = args["kernel_size"]
        stride = args.get("stride") or kernel
        if isinstance(stride, tuple) and not stride:
            stride = kernel
        return (
            kernel,
            stride,
            args.get("padding", 0),
            args.get("dilation", 1),
            bool(args.get("ceil_mode", False)),
        )
    return None


def spatial_sizes(
    nodes: tuple[GraphNode, ...], layers: Mapping[str, nn.Module], image_size: tuple[int, int]
) -> dict[str, tuple[int, int] | None]:
    """Height and width of every value for an input of ``image_size``; ``None`` once flat.

    A channels-last value (after a permute) keeps its height and width.
    """
    sizes: dict[str, tuple[int, int] | None] = {}
    for node in nodes:
        layer = layers.get(node.target) if node.op == "layer" else None
        source = sizes.get(node.inputs[0]) if node.inputs else image_size
        window = _window(layer, node)
        if node.op == "input":
            sizes[node.name] = image_size
        elif node.op == "param":
            sizes[node.name] = None
        elif node.op == "unflatten_channels":
            sizes[node.name] = (1, 1)
        elif node.op in _BINARY or node.op == "cat":
            shapes = [sizes.get(i) for i in node.inputs]
            sizes[node.name] = max(shapes, key=lambda s: (s or (0, 0))[0] * (s or (0, 0))[1])
        elif source is None or isinstance(layer, nn.Flatten) or node.op == "flatten":
            sizes[node.name] = None
        elif window is not None:
            kernel, stride, padding, dilation = (_pair(v) for v in window[:4])
            sizes[node.name] = tuple(  # type: ignore[assignment]
                _pooled(source[i], kernel[i], stride[i], padding[i], dilation[i], window[4])
                for i in (0, 1)
            )
        elif isinstance(layer, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)) or node.op in (
            "adaptive_avg_pool2d",
            "adaptive_max_pool2d",
        ):
            target = layer.output_size if layer is not None else node.args["output_size"]
            out = _pair(target)
            sizes[node.name] = (out[0] or source[0], out[1] or source[1])
        elif node.op == "mean":
            keep = node.args.get("keepdim", False)
            sizes[node.name] = (1, 1) if keep else None
        else:
            sizes[node.name] = source
    return sizes
