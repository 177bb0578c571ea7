"""CNNs (torchvision ResNet / MobileNet / DenseNet / ..., home-made nets): elastic conversion,
extraction, counts.

A CNN is traced into a graph of known layers (:mod:`ofa.families.cnn_trace`), its coupled channel
groups, droppable blocks and shrinkable kernels are found (:mod:`ofa.families.cnn_analysis`), and
its layers are swapped for elastic ones inside an
:class:`~ofa.families.cnn_elastic.ElasticCnnGraph`, which keeps the model's parameter names.
Extraction gives a plain :class:`~ofa.families.cnn_graph.CnnGraph`.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import weakref
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ofa._choices import at_least, restrict
from ofa.cnn_space import PHASE_FIELDS, CnnSearchSpace, CnnSubnet
from ofa.elastic.batchnorm import ElasticBatchNorm2d
from ofa.elastic.conv import ElasticConv2d, elastic_kernel_sizes
from ofa.elastic.layernorm import ElasticLayerNorm
from ofa.elastic.linear import ElasticLinear
from ofa.families._classifier import ClassifierHooks
from ofa.families.cnn_analysis import (
    CnnStructure,
    Elasticity,
    _elasticity,
    _multiple,
    analyse,
    spatial_sizes,
)
from ofa.families.cnn_elastic import ElasticCnnGraph, active_state
from ofa.families.cnn_graph import CnnGraph, GraphNode, graph_from_dict, graph_to_dict
from ofa.families.cnn_trace import UnsupportedOpError, trace_graph
from ofa.groups import UnitGroup

logger = logging.getLogger(__name__)

__all__ = [
    "CnnFamily",
    "Elasticity",
    "ElasticCnnGraph",
    "UnsupportedOpError",
    "default_space",
    "elasticity",
]

_Graph = tuple[
    tuple[GraphNode, ...],
    dict[str, nn.Module],
    dict[str, Tensor],
    dict[str, tuple[int, ...]] | None,
]
_CACHE: weakref.WeakKeyDictionary[nn.Module, tuple[Any, _Graph, CnnStructure]] = (
    weakref.WeakKeyDictionary()
)


def _signature(model: nn.Module) -> tuple[Any, ...]:
    return tuple((name, id(m), m.training) for name, m in model.named_modules())


def _graph_of(model: nn.Module, image_size: Any = None) -> _Graph:
    """Nodes, layers, params and shapes of a CNN; a graph already built (e.g. loaded) is not
    traced again."""
    if isinstance(model, CnnGraph):
        return model.nodes, model.layers(), model.params(), None
    return _traced(model, image_size)[0]


def _traced(model: nn.Module, image_size: Any = None) -> tuple[_Graph, CnnStructure]:
    signature = _signature(model)
    cached = _CACHE.get(model)
    if cached is not None and cached[0] == signature:
        return cached[1], cached[2]
    traced = trace_graph(model, image_size=image_size)
    graph: _Graph = (traced.nodes, traced.layers, traced.params, traced.shapes)
    try:
        structure = analyse(traced.nodes, traced.layers, traced.params, shapes=traced.shapes)
    except ValueError as error:
        raise UnsupportedOpError(f"{type(model).__name__} cannot be made elastic: {error}")
    _CACHE[model] = (signature, graph, structure)
    return graph, structure


def _structure_of(model: nn.Module, image_size: Any = None) -> tuple[_Graph, CnnStructure]:
    if isinstance(model, ElasticCnnGraph):
        return _graph_of(model), model.structure
    if isinstance(model, CnnGraph):
        graph = _graph_of(model)
        return graph, analyse(graph[0], graph[1], graph[2])
    return _traced(model, image_size)


def _ratios_to_choices(size: int, ratios: tuple[float, ...], multiple: int) -> tuple[int, ...]:
    choices = {size}
    for ratio in ratios:
        rounded = max(multiple, round(size * ratio / multiple) * multiple)
        if rounded < size:
            choices.add(rounded)
    return tuple(sorted(choices))


def elasticity(model: nn.Module, space: CnnSearchSpace | None = None) -> Elasticity:
    """What of a CNN (or a converted one: ``supernet.model``) can shrink, and why the rest
    cannot; with ``space``, what that space lets shrink.

    Example:
        >>> report = ofa.families.cnn.elasticity(supernet.model, supernet.space)
        >>> report.fraction, report.fixed
    """
    _, structure = _structure_of(model)
    return _elasticity(structure, space, space.width_multiple if space is not None else 8)


def default_space(
    model: nn.Module,
    *,
    image_size: tuple[int, int] | int = (224, 224),
    width_ratios: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0),
    width_multiple: int = 8,
    depth_drop: int = 2,
    elastic_kernel: bool = True,
) -> CnnSearchSpace:
    """The search space derived from a CNN's structure.

    A space in which fewer than half the channel groups can shrink is logged as a warning that
    says why the others cannot; :func:`elasticity` gives the same report as data.

    Args:
        model: the CNN (or an already converted graph).
        image_size: input (height, width) that FLOPs are counted for.
        width_ratios: fractions of each channel group's width to offer, rounded to
            ``width_multiple`` (at least one multiple; a grouped conv's groups shrink whole, so
            its channels round to a multiple of its group width too); the full width is always
            offered.
        depth_drop: each stage may drop up to this many of its trailing identity blocks.
        elastic_kernel: offer every smaller odd kernel of k x k convs (k >= 5, "same" padding).

    Example:
        >>> space = ofa.families.cnn.default_space(cnn, image_size=32)
        >>> supernet = ofa.convert(cnn, space)
    """
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    (_, layers, _, _), structure = _structure_of(model, size)
    groups = [g for g in structure.groups if not g.fixed]
    full = [len(s.blocks) + 1 for s in structure.stages]
    kernels = [elastic_kernel_sizes(_conv(layers[p])) for p in structure.kernel_convs]
    space = CnnSearchSpace(
        channel_groups=tuple(g.name for g in groups),
        channel_choices=tuple(
            _ratios_to_choices(g.size, width_ratios, _multiple(g, width_multiple)) for g in groups
        ),
        stages=tuple(s.name for s in structure.stages),
        depth_choices=tuple(tuple(range(max(1, n - depth_drop), n + 1)) for n in full),
        kernel_convs=structure.kernel_convs if elastic_kernel else (),
        kernel_choices=tuple(tuple(reversed(k)) for k in kernels) if elastic_kernel else (),
        width_multiple=width_multiple,
        image_size=size,  # type: ignore[arg-type]
    )
    report = _elasticity(structure, space, width_multiple)
    if report.degenerate:
        logger.warning(
            "%s converts into a degenerate search space: %s (ofa.families.cnn.elasticity "
            "lists every fixed group and why)",
            type(model).__name__,
            report.summary(),
        )
    return space


class CnnFamily(ClassifierHooks):
    """Adapter for CNNs built from Conv2d / BatchNorm2d / LayerNorm / activations / pooling /
    Linear, with residual adds, concatenations, splits and channel shuffles."""

    name = "cnn"
    space_type = CnnSearchSpace
    subnet_type = CnnSubnet
    # a subnet's batch norms need statistics of their own (ofa.calibrate_bn_) to be evaluated
    calibrates_batch_norm = True
    supported = (
        "CNNs of Conv2d/BatchNorm2d/LayerNorm/Linear (torchvision ResNet, ResNeXt, VGG, "
        "MobileNet, MNASNet, EfficientNet, RegNet, DenseNet, ShuffleNet, SqueezeNet, GoogLeNet, "
        "ConvNeXt)",
    )
    phase_dimensions = ("depths", "widths", "kernel_sizes")

    def phase_space(self, phase: Any, space: CnnSearchSpace) -> CnnSearchSpace:
        """The choices of ``space`` that training ``phase`` samples from, per group and stage."""
        phase.check_dimensions(self.phase_dimensions, "a CNN")
        fields = space.to_dict()
        for name, field_name in PHASE_FIELDS.items():
            rule = getattr(phase, name)
            if not isinstance(rule, str):
                raise ValueError(
                    f"phase {phase.name!r}: {name}={list(rule)}: a CNN's choices differ per "
                    "group, stage and conv, so use 'max', 'large' or 'all' (or subnet=...)"
                )
            fields[field_name] = [
                at_least(restrict(c, rule, name), phase.min_width * c[-1])
                if name == "widths"
                else restrict(c, rule, name)
                for c in getattr(space, field_name)
            ]
        return CnnSearchSpace.from_dict(fields)

    @staticmethod
    def contains(big: CnnSubnet, small: CnnSubnet) -> bool:
        """No channel group wider, no stage deeper, no kernel larger."""
        pairs = [
            *zip(small.widths, big.widths),
            *zip(small.depths, big.depths),
            *zip(small.kernel_sizes, big.kernel_sizes),
        ]
        return all(s <= b for s, b in pairs)

    def multiplier_subnets(self, phase: Any, space: CnnSearchSpace) -> list[CnnSubnet]:
        """One uniform subnet per width multiplier: every channel group at the smallest of the
        phase's choices at or above that fraction of its full width; each stage at the phase's
        largest depth and each conv at its largest kernel (so a multiplier trains a width, as
        DynaBERT's do). In a phase whose widths are fixed it is the phase's max subnet."""
        part = self.phase_space(phase, space)
        full = [c[-1] for c in space.channel_choices]
        return [
            CnnSubnet(
                widths=tuple(at_least(c, m * f)[0] for c, f in zip(part.channel_choices, full)),
                depths=tuple(c[-1] for c in part.depth_choices),
                kernel_sizes=tuple(c[-1] for c in part.kernel_choices),
            )
            for m in phase.width_multipliers
        ]

    @staticmethod
    def check_train_data(train_data: Any, hidden_weight: float, theseus: bool) -> None:
        """Refuse training data and options a CNN supernet cannot train with."""
        from ofa.data_images import ImageData

        if not isinstance(train_data, ImageData):
            raise ValueError(
                "a CNN supernet trains on ofa.data_images.ImageData (images and labels), "
                f"got {type(train_data).__name__}; see ofa.data_images.load_fashion_mnist"
            )
        if hidden_weight > 0 or theseus:
            raise ValueError(
                "hidden-state distillation and BERT-of-Theseus are for BERT-family supernets: "
                "use hidden_weight=0 and theseus=None for a CNN"
            )

    # ---- structure ------------------------------------------------------------------------
    @staticmethod
    def supports(model: nn.Module) -> bool:
        return isinstance(model, CnnGraph) or any(
            isinstance(m, nn.Conv2d) for m in model.modules()
        )

    def check_supported(self, model: nn.Module) -> None:
        _structure_of(model)  # raises UnsupportedOpError naming the op, the file and line

    # ---- conversion -----------------------------------------------------------------------
    def default_space(self, model: nn.Module) -> CnnSearchSpace:
        return default_space(model)

    def check_space(self, model: nn.Module, space: CnnSearchSpace) -> None:
        (_, layers, _, _), structure = _structure_of(model, space.image_size)
        sizes = {g.name: g.size for g in structure.groups if not g.fixed}
        blocks = {g.name: g.block for g in structure.groups if not g.fixed}
        stages = {s.name: len(s.blocks) + 1 for s in structure.stages}
        kernels = {p: elastic_kernel_sizes(_conv(layers[p])) for p in structure.kernel_convs}
        problems = []
        for name, choices in zip(space.channel_groups, space.channel_choices):
            if sizes.get(name) != choices[-1]:
                problems.append(f"channel group {name!r} (model width {sizes.get(name)})")
            elif any(c % blocks[name] for c in choices):
                problems.append(
                    f"channel group {name!r} shrinks by whole groups of {blocks[name]} channels "
                    f"(choices {choices})"
                )
        for name, choices in zip(space.stages, space.depth_choices):
            if stages.get(name) != choices[-1]:
                problems.append(f"stage {name!r} (model depth {stages.get(name)})")
        for name, choices in zip(space.kernel_convs, space.kernel_choices):
            if name not in kernels or not set(choices) <= set(kernels[name]):
                problems.append(f"conv {name!r} (kernel sizes {kernels.get(name)})")
        if problems:
            raise ValueError(
                "search space does not fit the model: "
                + "; ".join(problems[:5])
                + "; build it with ofa.families.cnn.default_space(model)"
            )

    def make_elastic_(self, model: nn.Module) -> ElasticCnnGraph:
        """The model's own layers, made elastic, inside a graph with its parameter names."""
        if isinstance(model, CnnGraph):
            return ElasticCnnGraph(model.nodes, model.layers(), model.params())
        nodes, layers, params, shapes = _graph_of(model)
        return ElasticCnnGraph(nodes, layers, params, shapes=shapes)

    def set_subnet_(
        self, model: ElasticCnnGraph, space: CnnSearchSpace, subnet: CnnSubnet
    ) -> None:
        state = active_state(model, self._widths(model, space, subnet))
        layers: dict[str, Any] = model.layers()
        for path, values in state.layers.items():
            for key, value in values.items():
                setattr(layers[path], key, value)
        kernel_sizes = dict(zip(space.kernel_convs, subnet.kernel_sizes))
        for path in model.structure.kernel_convs:
            layers[path].active_kernel_size = kernel_sizes.get(path, layers[path].kernel_size[0])
        model.active_skipped, model.active_alias = self._skips(model, space, subnet)
        model.active_overrides = state.overrides

    @staticmethod
    def _widths(model: ElasticCnnGraph, space: CnnSearchSpace, subnet: CnnSubnet) -> list[int]:
        chosen = dict(zip(space.channel_groups, subnet.widths))
        return [chosen.get(g.name, g.size) for g in model.structure.groups]

    @staticmethod
    def _skips(
        model: ElasticCnnGraph, space: CnnSearchSpace, subnet: CnnSubnet
    ) -> tuple[frozenset[str], dict[str, str]]:
        depths = dict(zip(space.stages, subnet.depths))
        skipped: set[str] = set()
        alias: dict[str, str] = {}
        for stage in model.structure.stages:
            keep = depths.get(stage.name, len(stage.blocks) + 1) - 1
            for block in stage.blocks[keep:]:
                skipped |= block.nodes
                alias[block.output] = alias.get(block.input, block.input)
        return frozenset(skipped), alias

    # ---- extraction -----------------------------------------------------------------------
    def extract(
        self, model: ElasticCnnGraph, space: CnnSearchSpace, subnet: CnnSubnet
    ) -> CnnGraph:
        """A plain :class:`CnnGraph` with smaller layers holding copies of the subnet's weights."""
        with _subnet(self, model, space, subnet):
            state = active_state(model, self._widths(model, space, subnet))
            nodes = self._live_nodes(model)
            layers: dict[str, nn.Module] = {}
            params: dict[str, Tensor] = {}
            for node in nodes:
                if node.op == "layer" and node.target not in layers:
                    layer = model.get_submodule(node.target)
                    layers[node.target] = _plain(layer, state.width(node.inputs[0]))
                elif node.op == "param" and node.target not in params:
                    params[node.target] = _plain_param(model, node, state)
        small = CnnGraph(nodes, layers, params)
        small.train(model.training)
        return small

    @staticmethod
    def _live_nodes(model: ElasticCnnGraph) -> tuple[GraphNode, ...]:
        alias, overrides = model.active_alias, model.active_overrides
        live = []
        for node in model.nodes:
            if node.name in model.active_skipped:
                continue
            args = node.args
            if node.name in overrides:
                args = {} if node.op == "param" else overrides[node.name]
            live.append(node.with_inputs(tuple(alias.get(i, i) for i in node.inputs), args))
        return tuple(live)

    # ---- counts ---------------------------------------------------------------------------
    def num_params(self, model: ElasticCnnGraph, space: CnnSearchSpace, subnet: CnnSubnet) -> int:
        total = 0
        rows, state = self._active_layers(model, space, subnet)
        counted: set[str] = set()
        for node, layer, in_width, out_width, kernel, _size in rows:
            if node.target in counted:
                continue  # a layer called twice holds its weights once
            counted.add(node.target)
            if isinstance(layer, nn.Conv2d):
                per_group = in_width // _active_groups(layer, in_width)
                total += out_width * per_group * kernel * kernel + (
                    out_width if layer.bias is not None else 0
                )
            elif isinstance(layer, nn.BatchNorm2d):
                total += 2 * in_width if layer.affine else 0
            elif isinstance(layer, nn.LayerNorm):
                total += in_width * ((layer.weight is not None) + (layer.bias is not None))
            elif isinstance(layer, nn.Linear):
                total += out_width * in_width + (out_width if layer.bias is not None else 0)
        skipped, _ = self._skips(model, space, subnet)
        params = model.params()
        for node in model.nodes:
            if node.op != "param" or node.name in skipped or node.target in counted:
                continue
            counted.add(node.target)
            tensor = params[node.target]
            if not isinstance(tensor, nn.Parameter):
                continue
            follows = model.structure.param_follows.get(node.name)
            rows_kept = state.width(follows) if follows is not None else tensor.shape[0]
            total += rows_kept * math.prod(tensor.shape[1:])
        return total

    def flops(
        self,
        model: ElasticCnnGraph,
        space: CnnSearchSpace,
        subnet: CnnSubnet,
        *,
        batch_size: int,
        seq_len: int = 0,
        image_size: tuple[int, int] | int | None = None,
    ) -> int:
        """Conv and linear FLOPs (2 per multiply-add, no bias), as FlopCounterMode counts them.

        ``seq_len`` is ignored (it is the BERT family's); ``image_size`` defaults to the space's.
        """
        chosen = space.image_size if image_size is None else image_size
        size = (chosen, chosen) if isinstance(chosen, int) else (chosen[0], chosen[1])
        shapes = spatial_sizes(model.nodes, model.layers(), size)
        total = 0
        rows, _ = self._active_layers(model, space, subnet)
        for node, layer, in_width, out_width, kernel, _ in rows:
            if isinstance(layer, nn.Conv2d):
                height, width = shapes[node.name] or (1, 1)
                per_group = in_width // _active_groups(layer, in_width)
                total += 2 * batch_size * out_width * per_group * kernel * kernel * height * width
            elif isinstance(layer, nn.Linear):
                pixels = math.prod(shapes[node.inputs[0]] or (1,))
                total += 2 * batch_size * in_width * out_width * pixels
        return total

    def _active_layers(
        self, model: ElasticCnnGraph, space: CnnSearchSpace, subnet: CnnSubnet
    ) -> tuple[list[tuple[GraphNode, nn.Module, int, int, int, Any]], Any]:
        """(node, layer, input width, output width, kernel size, None) of each live layer call,
        and the subnet's active state."""
        state = active_state(model, self._widths(model, space, subnet))
        skipped, _ = self._skips(model, space, subnet)
        kernels = dict(zip(space.kernel_convs, subnet.kernel_sizes))
        rows = []
        for node in model.nodes:
            if node.op != "layer" or node.name in skipped:
                continue
            layer = model.get_submodule(node.target)
            kernel = (
                kernels.get(node.target, layer.kernel_size[0])
                if isinstance(layer, nn.Conv2d)
                else 1
            )
            in_width = state.width(node.inputs[0])
            out_width = state.width(node.name)
            rows.append((node, layer, in_width, out_width, kernel, None))
        return rows, state

    # ---- coupled units --------------------------------------------------------------------
    def unit_groups(self, model: ElasticCnnGraph, space: CnnSearchSpace) -> list[UnitGroup]:
        """One group per channel group that may shrink: every weight, bias and BN statistic.

        A group whose channels reach a layer only as part of a concatenated, split, permuted
        or flattened input cannot be permuted as one block of each weight (a unit group has no
        offsets): it is left out, so scoring and reordering skip it (the model stays exact).
        """
        layers = model.layers()
        structure = model.structure
        nodes = {n.name: n for n in model.nodes}
        groups = []
        skipped = []
        for index, group in enumerate(structure.groups):
            if group.fixed:
                continue
            members = self._members(model, structure, nodes, layers, index, group)
            if members is None:
                skipped.append(group.name)
                continue
            params, buffers, scales = members
            groups.append(
                UnitGroup(
                    name=group.name,
                    size=group.size // group.block,
                    block=group.block,
                    members=tuple(dict.fromkeys(params)),
                    buffers=tuple(dict.fromkeys(buffers)),
                    scales=tuple(dict.fromkeys(scales)),
                )
            )
        if skipped:
            logger.info(
                "%d channel groups reach layers through concatenations, splits or flattens and "
                "are not scored or reordered: %s",
                len(skipped),
                ", ".join(skipped[:5]) + (" ..." if len(skipped) > 5 else ""),
            )
        return groups

    @staticmethod
    def _members(
        model: ElasticCnnGraph,
        structure: CnnStructure,
        nodes: Mapping[str, GraphNode],
        layers: Mapping[str, nn.Module],
        index: int,
        group: Any,
    ) -> tuple[list[tuple[str, int]], list[tuple[str, int]], list[str]] | None:
        """The (parameter, dim) pairs of a group, or ``None`` when it has no single block in
        some weight."""
        own = set(group.pieces)
        if any(structure.piece_size[p] != group.size for p in own):
            return None

        def whole(value: str) -> bool:
            runs = structure.layouts[value]
            return (
                len(runs) == 1
                and runs[0].piece in own
                and runs[0].start == 0
                and runs[0].length == group.size
                and structure.mult.get(value, 1) == 1
            )

        def touches(value: str) -> bool:
            return any(structure.piece_group[r.piece] == index for r in structure.layouts[value])

        params: list[tuple[str, int]] = []
        buffers: list[tuple[str, int]] = []
        scales: list[str] = []
        for node in model.nodes:
            if node.op == "param":
                follows = structure.param_follows.get(node.name)
                if follows is not None and touches(follows):
                    if not whole(follows):
                        return None
                    params.append((node.target, 0))
                continue
            if node.op != "layer":
                continue
            layer = layers[node.target]
            source = node.inputs[0]
            depthwise = isinstance(layer, nn.Conv2d) and layer.groups == layer.in_channels > 1
            if isinstance(layer, (nn.BatchNorm2d, nn.LayerNorm)) or depthwise:
                if not touches(source):
                    continue
                if not whole(source):
                    return None
                for name in ("weight", "bias"):
                    if getattr(layer, name, None) is not None:
                        params.append((f"{node.target}.{name}", 0))
                if isinstance(layer, nn.BatchNorm2d) and layer.running_mean is not None:
                    buffers += [
                        (f"{node.target}.running_mean", 0),
                        (f"{node.target}.running_var", 0),
                    ]
                if getattr(layer, "weight", None) is not None and not depthwise:
                    scales.append(f"{node.target}.weight")
            elif isinstance(layer, (nn.Conv2d, nn.Linear)):
                if touches(node.name):
                    if not whole(node.name):
                        return None
                    params.append((f"{node.target}.weight", 0))
                    if layer.bias is not None:
                        params.append((f"{node.target}.bias", 0))
                grouped = isinstance(layer, nn.Conv2d) and layer.groups > 1
                if touches(source) and not grouped:
                    if not whole(source):
                        return None
                    params.append((f"{node.target}.weight", 1))
        return params, buffers, scales

    def hidden_is_internal(self, model: nn.Module) -> bool:
        return True

    # ---- save / load ----------------------------------------------------------------------
    def config_dict(self, model: CnnGraph) -> dict[str, Any]:
        """The architecture JSON that rebuilds the plain graph."""
        return graph_to_dict(model.nodes, model.layers(), model.params())

    def build_model(self, class_name: str, config: Mapping[str, Any]) -> CnnGraph:
        nodes, layers, params = graph_from_dict(config)
        return CnnGraph(nodes, layers, params)

    def space_from_dict(self, data: dict[str, Any]) -> CnnSearchSpace:
        return CnnSearchSpace.from_dict(data)

    def subnet_from_dict(self, data: dict[str, Any]) -> CnnSubnet:
        return CnnSubnet.from_dict(data)


def _conv(layer: nn.Module) -> nn.Conv2d:
    assert isinstance(layer, nn.Conv2d)
    return layer


def _active_groups(layer: nn.Conv2d, in_width: int) -> int:
    if layer.groups == 1:
        return 1
    return in_width // (layer.in_channels // layer.groups)


def _plain(layer: nn.Module, in_width: int) -> nn.Module:
    """A plain copy of an elastic layer at its active shape."""
    if isinstance(layer, (ElasticConv2d, ElasticBatchNorm2d, ElasticLinear, ElasticLayerNorm)):
        return layer.extract_for(in_width)
    return copy.deepcopy(layer)


def _plain_param(model: ElasticCnnGraph, node: GraphNode, state: Any) -> Tensor:
    tensor = model.params()[node.target]
    index = state.overrides.get(node.name, {}).get("index")
    with torch.no_grad():
        value = tensor.index_select(0, index.to(tensor.device)) if index is not None else tensor
        value = value.detach().clone()
    return nn.Parameter(value) if isinstance(tensor, nn.Parameter) else value


@contextlib.contextmanager
def _subnet(
    family: CnnFamily, model: ElasticCnnGraph, space: CnnSearchSpace, subnet: CnnSubnet
) -> Iterator[None]:
    """Run ``subnet`` inside the block; restore the model's previous active sizes afterwards."""
    layers = model.layers()
    saved = {
        path: {k: v for k, v in vars(layer).items() if k.startswith("active_")}
        for path, layer in layers.items()
    }
    skips = (model.active_skipped, model.active_alias, model.active_overrides)
    family.set_subnet_(model, space, subnet)
    try:
        yield
    finally:
        for path, values in saved.items():
            for key, value in values.items():
                setattr(layers[path], key, value)
        model.active_skipped, model.active_alias, model.active_overrides = skips
