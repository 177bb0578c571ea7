"""CNNs (torchvision ResNet / MobileNet, home-made nets): elastic conversion, extraction, counts.

A CNN is traced into a graph of known layers (:mod:`ofa.families.cnn_trace`), its coupled channel
groups, droppable blocks and shrinkable kernels are found (:mod:`ofa.families.cnn_analysis`), and
its layers are swapped for elastic ones inside an :class:`ElasticCnnGraph`, which keeps the
model's parameter names. Extraction gives a plain :class:`~ofa.families.cnn_graph.CnnGraph`.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Iterator, Mapping
from typing import Any

from torch import Tensor, nn

from ofa._choices import at_least, restrict
from ofa.cnn_space import PHASE_FIELDS, CnnSearchSpace, CnnSubnet
from ofa.elastic.batchnorm import ElasticBatchNorm2d
from ofa.elastic.conv import ElasticConv2d, elastic_kernel_sizes
from ofa.elastic.linear import ElasticLinear
from ofa.families.cnn_analysis import CnnStructure, analyse, spatial_sizes
from ofa.families.cnn_graph import CnnGraph, GraphNode, graph_from_dict, graph_to_dict, run_graph
from ofa.families.cnn_trace import UnsupportedOpError, trace_cnn
from ofa.groups import UnitGroup

logger = logging.getLogger(__name__)

__all__ = ["CnnFamily", "ElasticCnnGraph", "UnsupportedOpError", "default_space"]


def _graph_of(model: nn.Module) -> tuple[tuple[GraphNode, ...], dict[str, nn.Module]]:
    """Nodes and layers of a CNN; a graph already built (e.g. loaded) is not traced again."""
    if isinstance(model, CnnGraph):
        return model.nodes, model.layers()
    nodes, layers = trace_cnn(model)
    used = {n.target for n in nodes if n.op == "layer"}
    return nodes, {path: layer for path, layer in layers.items() if path in used}


def _make_elastic(layer: nn.Module) -> nn.Module:
    if isinstance(layer, nn.Conv2d) and not isinstance(layer, ElasticConv2d):
        return ElasticConv2d.from_dense(layer)
    if isinstance(layer, nn.BatchNorm2d) and not isinstance(layer, ElasticBatchNorm2d):
        return ElasticBatchNorm2d.from_dense(layer)
    if isinstance(layer, nn.Linear) and not isinstance(layer, ElasticLinear):
        return ElasticLinear.from_dense(layer)
    return layer


class ElasticCnnGraph(CnnGraph):
    """A traced CNN whose convs, batch norms and linears are elastic and whose blocks can drop.

    ``active_skipped`` names the graph nodes of dropped blocks; ``active_alias`` maps a dropped
    block's output to the value that replaces it (its input).
    """

    active_skipped: frozenset[str]
    active_alias: dict[str, str]

    def __init__(self, nodes: tuple[GraphNode, ...], layers: Mapping[str, nn.Module]) -> None:
        super().__init__(nodes, {path: _make_elastic(layer) for path, layer in layers.items()})
        self.structure: CnnStructure = analyse(self.nodes, self.layers())
        self.active_skipped = frozenset()
        self.active_alias = {}

    def forward(self, pixel_values: Tensor, labels: Tensor | None = None) -> Tensor:
        return run_graph(
            self, self.nodes, pixel_values, skipped=self.active_skipped, alias=self.active_alias
        )


def _ratios_to_choices(size: int, ratios: tuple[float, ...], multiple: int) -> tuple[int, ...]:
    choices = {size}
    for ratio in ratios:
        rounded = max(multiple, round(size * ratio / multiple) * multiple)
        if rounded < size:
            choices.add(rounded)
    return tuple(sorted(choices))


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

    Args:
        model: the CNN (or an already converted graph).
        image_size: input (height, width) that FLOPs are counted for.
        width_ratios: fractions of each channel group's width to offer, rounded to
            ``width_multiple`` (at least one multiple); the full width is always offered.
        depth_drop: each stage may drop up to this many of its trailing identity blocks.
        elastic_kernel: offer every smaller odd kernel of k x k convs (k >= 5, "same" padding).

    Example:
        >>> space = ofa.families.cnn.default_space(cnn, image_size=32)
        >>> supernet = ofa.convert(cnn, space)
    """
    nodes, layers = _graph_of(model)
    structure = analyse(nodes, layers)
    groups = [g for g in structure.groups if not g.fixed]
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    full = [len(s.blocks) + 1 for s in structure.stages]
    kernels = [elastic_kernel_sizes(_conv(layers[p])) for p in structure.kernel_convs]
    return CnnSearchSpace(
        channel_groups=tuple(g.name for g in groups),
        channel_choices=tuple(
            _ratios_to_choices(g.size, width_ratios, width_multiple) for g in groups
        ),
        stages=tuple(s.name for s in structure.stages),
        depth_choices=tuple(tuple(range(max(1, n - depth_drop), n + 1)) for n in full),
        kernel_convs=structure.kernel_convs if elastic_kernel else (),
        kernel_choices=tuple(tuple(reversed(k)) for k in kernels) if elastic_kernel else (),
        width_multiple=width_multiple,
        image_size=size,  # type: ignore[arg-type]
    )


class CnnFamily:
    """Adapter for CNNs built from Conv2d / BatchNorm2d / activations / pooling / Linear."""

    name = "cnn"
    space_type = CnnSearchSpace
    subnet_type = CnnSubnet
    # a subnet's batch norms need statistics of their own (ofa.calibrate_bn_) to be evaluated
    calibrates_batch_norm = True
    supported = ("CNNs of Conv2d/BatchNorm2d/Linear (torchvision ResNet, MobileNet)",)
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
    def multiplier_subnets(phase: Any, space: CnnSearchSpace) -> list[CnnSubnet]:
        raise ValueError(
            f"phase {phase.name!r}: width_multipliers apply to BERT-family supernets; "
            "a CNN phase samples its widths (use min_width to bound them)"
        )

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
        _graph_of(model)  # raises UnsupportedOpError naming the op and module

    # ---- conversion -----------------------------------------------------------------------
    def default_space(self, model: nn.Module) -> CnnSearchSpace:
        return default_space(model)

    def check_space(self, model: nn.Module, space: CnnSearchSpace) -> None:
        nodes, layers = _graph_of(model)
        structure = analyse(nodes, layers)
        sizes = {g.name: g.size for g in structure.groups if not g.fixed}
        stages = {s.name: len(s.blocks) + 1 for s in structure.stages}
        kernels = {p: elastic_kernel_sizes(_conv(layers[p])) for p in structure.kernel_convs}
        problems = []
        for name, choices in zip(space.channel_groups, space.channel_choices):
            if sizes.get(name) != choices[-1]:
                problems.append(f"channel group {name!r} (model width {sizes.get(name)})")
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
        nodes, layers = _graph_of(model)
        return ElasticCnnGraph(nodes, layers)

    def set_subnet_(
        self, model: ElasticCnnGraph, space: CnnSearchSpace, subnet: CnnSubnet
    ) -> None:
        widths = self._widths(model, space, subnet)
        layers: dict[str, Any] = model.layers()
        for group, width in zip(model.structure.groups, widths):
            for path in group.producers + group.depthwise:
                layer = layers[path]
                if isinstance(layer, ElasticLinear):
                    layer.active_out_features = width
                else:
                    layer.active_out_channels = width
        kernel_sizes = dict(zip(space.kernel_convs, subnet.kernel_sizes))
        for path in model.structure.kernel_convs:
            layers[path].active_kernel_size = kernel_sizes.get(path, layers[path].kernel_size[0])
        model.active_skipped, model.active_alias = self._skips(model, space, subnet)

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
            widths = self._widths(model, space, subnet)
            width_of = {v: widths[g] for v, g in model.structure.value_group.items()}
            nodes = self._live_nodes(model)
            layers = {}
            for node in nodes:
                if node.op == "layer" and node.target not in layers:
                    layer = model.get_submodule(node.target)
                    layers[node.target] = _plain(layer, width_of[node.inputs[0]])
        small = CnnGraph(nodes, layers)
        small.train(model.training)
        return small

    @staticmethod
    def _live_nodes(model: ElasticCnnGraph) -> tuple[GraphNode, ...]:
        alias = model.active_alias
        return tuple(
            GraphNode(
                name=n.name,
                op=n.op,
                inputs=tuple(alias.get(i, i) for i in n.inputs),
                target=n.target,
                args=n.args,
                scope=n.scope,
            )
            for n in model.nodes
            if n.name not in model.active_skipped
        )

    # ---- counts ---------------------------------------------------------------------------
    def num_params(self, model: ElasticCnnGraph, space: CnnSearchSpace, subnet: CnnSubnet) -> int:
        total = 0
        for _, layer, in_width, out_width, kernel, _size in self._active_layers(
            model, space, subnet
        ):
            if isinstance(layer, nn.Conv2d):
                per_group = (
                    1 if layer.groups > 1 and _depthwise(layer) else in_width // layer.groups
                )
                total += out_width * per_group * kernel * kernel + (
                    out_width if layer.bias is not None else 0
                )
            elif isinstance(layer, nn.BatchNorm2d):
                total += 2 * in_width if layer.affine else 0
            elif isinstance(layer, nn.Linear):
                total += out_width * in_width + (out_width if layer.bias is not None else 0)
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
        for node, layer, in_width, out_width, kernel, _ in self._active_layers(
            model, space, subnet
        ):
            if isinstance(layer, nn.Conv2d):
                height, width = shapes[node.name] or (1, 1)
                per_group = 1 if _depthwise(layer) else in_width // layer.groups
                total += 2 * batch_size * out_width * per_group * kernel * kernel * height * width
            elif isinstance(layer, nn.Linear):
                total += 2 * batch_size * in_width * out_width
        return total

    def _active_layers(
        self, model: ElasticCnnGraph, space: CnnSearchSpace, subnet: CnnSubnet
    ) -> list[tuple[GraphNode, nn.Module, int, int, int, Any]]:
        """(node, layer, input width, output width, kernel size, None) of each live layer call."""
        widths = self._widths(model, space, subnet)
        group_of = model.structure.value_group
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
            in_width = widths[group_of[node.inputs[0]]]
            rows.append((node, layer, in_width, widths[group_of[node.name]], kernel, None))
        return rows

    # ---- coupled units --------------------------------------------------------------------
    def unit_groups(self, model: ElasticCnnGraph, space: CnnSearchSpace) -> list[UnitGroup]:
        """One group per channel group that may shrink: every weight, bias and BN statistic."""
        layers = model.layers()
        groups = []
        for group in model.structure.groups:
            if group.fixed:
                continue
            members: list[tuple[str, int]] = []
            buffers: list[tuple[str, int]] = []
            for path in group.producers + group.depthwise + group.norms:
                members.append((f"{path}.weight", 0))
                if getattr(layers[path], "bias", None) is not None:
                    members.append((f"{path}.bias", 0))
            for path in group.norms:
                if layers[path].running_mean is not None:
                    buffers += [(f"{path}.running_mean", 0), (f"{path}.running_var", 0)]
            members += [(f"{path}.weight", 1) for path in group.consumers]
            groups.append(
                UnitGroup(
                    name=group.name,
                    size=group.size,
                    block=1,
                    members=tuple(dict.fromkeys(members)),
                    buffers=tuple(buffers),
                    scales=tuple(f"{p}.weight" for p in group.norms if layers[p].affine),
                )
            )
        return groups

    def hidden_is_internal(self, model: nn.Module) -> bool:
        return True

    # ---- save / load ----------------------------------------------------------------------
    def config_dict(self, model: CnnGraph) -> dict[str, Any]:
        """The architecture JSON that rebuilds the plain graph."""
        return graph_to_dict(model.nodes, model.layers())

    def build_model(self, class_name: str, config: Mapping[str, Any]) -> CnnGraph:
        nodes, layers = graph_from_dict(config)
        return CnnGraph(nodes, layers)

    def space_from_dict(self, data: dict[str, Any]) -> CnnSearchSpace:
        return CnnSearchSpace.from_dict(data)

    def subnet_from_dict(self, data: dict[str, Any]) -> CnnSubnet:
        return CnnSubnet.from_dict(data)


def _conv(layer: nn.Module) -> nn.Conv2d:
    assert isinstance(layer, nn.Conv2d)
    return layer


def _depthwise(layer: nn.Conv2d) -> bool:
    return layer.groups > 1 and layer.groups == layer.in_channels == layer.out_channels


def _plain(layer: nn.Module, in_width: int) -> nn.Module:
    """A plain copy of an elastic layer at its active shape."""
    if isinstance(layer, (ElasticConv2d, ElasticBatchNorm2d, ElasticLinear)):
        return layer.extract_for(in_width)
    return copy.deepcopy(layer)


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
    skips = (model.active_skipped, model.active_alias)
    family.set_subnet_(model, space, subnet)
    try:
        yield
    finally:
        for path, values in saved.items():
            for key, value in values.items():
                setattr(layers[path], key, value)
        model.active_skipped, model.active_alias = skips
