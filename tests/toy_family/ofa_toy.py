"""The toy family's ``ofa`` adapter: an MLP image classifier with elastic hidden widths and depth.

``ToyMLP`` flattens ``(B, C, H, W)`` images and runs ``Linear + ReLU`` hidden layers, then a
linear head. A subnet keeps the first ``depth`` hidden layers, each at a leading slice of its
units; the head reads the leading columns of the last kept layer's output. Depth is elastic
only when every hidden layer has the same width (so any kept layer can feed the head).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ofa.data_images import ImageData
from ofa.elastic import ElasticLinear, ElasticModuleList
from ofa.families import ClassifierHooks
from ofa.groups import UnitGroup

__all__ = ["NAME", "ToyFamily", "ToyMLP", "ToySearchSpace", "ToySubnet"]

NAME = "toy_mlp"


class ToyMLP(nn.Module):
    """``images -> flatten -> (Linear, ReLU) x len(widths) -> Linear head -> logits``."""

    def __init__(
        self, *, in_shape: tuple[int, ...], widths: tuple[int, ...], num_labels: int
    ) -> None:
        super().__init__()
        self.in_shape = tuple(int(v) for v in in_shape)
        self.num_labels = int(num_labels)
        sizes = [math.prod(self.in_shape), *(int(w) for w in widths)]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes, sizes[1:]))
        self.head = nn.Linear(sizes[-1], self.num_labels)

    def forward(self, pixel_values: Tensor, labels: Tensor | None = None) -> Tensor:
        x = pixel_values.flatten(1)
        for layer in self.layers:  # an ElasticModuleList runs the kept layers only
            x = torch.relu(layer(x))
        return self.head(x)


def _ints(values: Any) -> tuple[int, ...]:
    return tuple(int(v) for v in values)


@dataclass(frozen=True, kw_only=True)
class ToySubnet:
    """The width of each kept hidden layer (the first ``len(widths)`` layers are kept)."""

    widths: tuple[int, ...]
    version: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", _ints(self.widths))
        if not self.widths or min(self.widths) < 1:
            raise ValueError(f"a toy subnet keeps at least one layer of positive width: {self}")

    @property
    def depth(self) -> int:
        return len(self.widths)

    def to_dict(self) -> dict[str, Any]:
        return {"widths": list(self.widths), "version": self.version}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ToySubnet:
        unknown = set(data) - {"widths", "version"}
        if unknown:
            raise ValueError(f"unknown ToySubnet fields {sorted(unknown)}")
        return cls(widths=_ints(data["widths"]), version=int(data.get("version", 1)))


def _pick(choices: tuple[int, ...], generator: torch.Generator | None) -> int:
    return choices[int(torch.randint(len(choices), (1,), generator=generator))]


@dataclass(frozen=True, kw_only=True)
class ToySearchSpace:
    """Width choices shared by every hidden layer, depth choices, and the model's input shape.

    Attributes:
        num_layers: hidden layers of the full model.
        widths: allowed widths of each kept hidden layer, increasing.
        depths: allowed numbers of kept hidden layers, increasing.
        in_shape: ``(C, H, W)`` of the input images (latency and FLOPs are counted at it).
    """

    num_layers: int
    widths: tuple[int, ...]
    depths: tuple[int, ...]
    in_shape: tuple[int, ...]
    version: int = 1

    def __post_init__(self) -> None:
        for name in ("widths", "depths", "in_shape"):
            object.__setattr__(self, name, _ints(getattr(self, name)))
        for name in ("widths", "depths"):
            choices = getattr(self, name)
            if not choices or tuple(sorted(set(choices))) != choices or choices[0] < 1:
                raise ValueError(f"{name} {choices} must be positive and strictly increasing")
        if self.depths[-1] > self.num_layers:
            raise ValueError(f"depths {self.depths} exceed the {self.num_layers} hidden layers")

    def uniform(self, *, depth: int, width: int) -> ToySubnet:
        subnet = ToySubnet(widths=(width,) * depth)
        self.check(subnet)
        return subnet

    def max_subnet(self) -> ToySubnet:
        return self.uniform(depth=self.depths[-1], width=self.widths[-1])

    def min_subnet(self) -> ToySubnet:
        return self.uniform(depth=self.depths[0], width=self.widths[0])

    def sample(self, generator: torch.Generator | None = None) -> ToySubnet:
        depth = _pick(self.depths, generator)
        return ToySubnet(widths=tuple(_pick(self.widths, generator) for _ in range(depth)))

    def uniform_subnets(self) -> list[ToySubnet]:
        return [self.uniform(depth=d, width=w) for d in self.depths for w in self.widths]

    def violations(self, subnet: Any) -> list[str]:
        if not isinstance(subnet, ToySubnet):
            return [f"expected a ToySubnet, got {type(subnet).__name__}"]
        problems = []
        if subnet.depth not in self.depths:
            problems.append(f"depth {subnet.depth} not in {self.depths}")
        problems += [
            f"width {w} not in {self.widths}" for w in subnet.widths if w not in self.widths
        ]
        return problems

    def contains(self, subnet: Any) -> bool:
        return not self.violations(subnet)

    def check(self, subnet: Any) -> None:
        problems = self.violations(subnet)
        if problems:
            raise ValueError("subnet is outside the search space: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return {
            "num_layers": self.num_layers,
            "widths": list(self.widths),
            "depths": list(self.depths),
            "in_shape": list(self.in_shape),
            "version": self.version,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ToySearchSpace:
        return cls(**data)


def _restrict(choices: tuple[int, ...], rule: Any) -> tuple[int, ...]:
    """A training phase's rule ("max", "large", "all" or values) applied to ``choices``."""
    if rule == "max":
        return choices[-1:]
    if rule == "all":
        return choices
    if rule == "large":
        return choices[len(choices) // 2 :]
    values = tuple(sorted(int(v) for v in rule))
    if not set(values) <= set(choices):
        raise ValueError(f"phase choices {values} are not in the space's {choices}")
    return values


def _at_least(choices: tuple[int, ...], bound: float) -> tuple[int, ...]:
    return tuple(c for c in choices if c >= bound - 1e-9) or choices[-1:]


class ToyFamily(ClassifierHooks):
    """The ``ofa.families.ModelFamily`` adapter of :class:`ToyMLP`."""

    name = NAME
    space_type = ToySearchSpace
    subnet_type = ToySubnet
    calibrates_batch_norm = False  # no batch norm: a subnet runs on the supernet as it is
    phase_dimensions = ("depths", "widths")

    # ---- structure ------------------------------------------------------------------------
    def supports(self, model: nn.Module) -> bool:
        return isinstance(model, ToyMLP)

    def check_supported(self, model: ToyMLP) -> None:
        if not len(model.layers):
            raise ValueError("a toy MLP needs at least one hidden layer")

    @staticmethod
    def _widths(model: ToyMLP) -> tuple[int, ...]:
        return tuple(layer.out_features for layer in model.layers._modules.values())

    def default_space(self, model: ToyMLP) -> ToySearchSpace:
        widths = self._widths(model)
        full = widths[-1]
        equal = len(set(widths)) == 1
        return ToySearchSpace(
            num_layers=len(widths),
            widths=tuple(sorted({max(1, full // 4), max(1, full // 2), full})),
            depths=tuple(range(1, len(widths) + 1)) if equal else (len(widths),),
            in_shape=model.in_shape,
        )

    def check_space(self, model: ToyMLP, space: ToySearchSpace) -> None:
        widths = self._widths(model)
        if space.num_layers != len(widths) or tuple(space.in_shape) != model.in_shape:
            raise ValueError("search space does not fit the model (layers or input shape)")
        if len(set(widths)) != 1 or space.widths[-1] != widths[0]:
            raise ValueError(
                f"a toy space's widths {space.widths} need hidden layers of one width "
                f"ending it; the model has {widths}"
            )

    def make_elastic_(self, model: ToyMLP) -> None:
        """Every Linear becomes an ElasticLinear (same parameters), the layers a list that runs
        the kept ones only."""
        model.layers = ElasticModuleList(
            ElasticLinear.from_dense(layer) for layer in model.layers._modules.values()
        )
        model.head = ElasticLinear.from_dense(model.head)

    def set_subnet_(self, model: ToyMLP, space: ToySearchSpace, subnet: ToySubnet) -> None:
        layers = list(model.layers._modules.values())
        model.layers.active_indices = (
            None if subnet.depth == len(layers) else tuple(range(subnet.depth))
        )
        for layer, width in zip(layers, subnet.widths):
            layer.active_out_features = width

    # ---- extraction and counts ------------------------------------------------------------
    def extract(self, model: ToyMLP, space: ToySearchSpace, subnet: ToySubnet) -> ToyMLP:
        reference = model.head.weight
        small = ToyMLP(in_shape=model.in_shape, widths=subnet.widths, num_labels=model.num_labels)
        small.to(dtype=reference.dtype, device=reference.device)
        sources = list(model.layers._modules.values())
        width_in = math.prod(model.in_shape)
        with torch.no_grad():
            for target, source, width in zip(small.layers, sources, subnet.widths):
                target.weight.copy_(source.weight[:width, :width_in])
                target.bias.copy_(source.bias[:width])
                width_in = width
            small.head.weight.copy_(model.head.weight[:, :width_in])
            small.head.bias.copy_(model.head.bias)
        small.train(model.training)
        return small

    @staticmethod
    def _shapes(model: ToyMLP, subnet: ToySubnet) -> list[tuple[int, int]]:
        """(in, out) of every Linear the subnet runs, the head last."""
        sizes = [math.prod(model.in_shape), *subnet.widths]
        return [*zip(sizes, sizes[1:]), (sizes[-1], model.num_labels)]

    def num_params(self, model: ToyMLP, space: ToySearchSpace, subnet: ToySubnet) -> int:
        return sum(i * o + o for i, o in self._shapes(model, subnet))

    def flops(
        self,
        model: ToyMLP,
        space: ToySearchSpace,
        subnet: ToySubnet,
        *,
        batch_size: int,
        **_shape: Any,  # seq_len / image_size: an MLP's input size is fixed
    ) -> int:
        return sum(2 * batch_size * i * o for i, o in self._shapes(model, subnet))

    def unit_groups(self, model: ToyMLP, space: ToySearchSpace) -> list[UnitGroup]:
        """The units of each hidden layer: its weight rows and bias, the next layer's columns."""
        count = space.num_layers
        groups = []
        for i in range(count):
            after = f"layers.{i + 1}" if i + 1 < count else "head"
            groups.append(
                UnitGroup(
                    name=f"layers.{i}.units",
                    size=space.widths[-1],
                    block=1,
                    members=(
                        (f"layers.{i}.weight", 0),
                        (f"layers.{i}.bias", 0),
                        (f"{after}.weight", 1),
                    ),
                )
            )
        return groups

    def hidden_is_internal(self, model: ToyMLP) -> bool:
        return True

    # ---- save / load ----------------------------------------------------------------------
    def config_dict(self, model: ToyMLP) -> dict[str, Any]:
        return {
            "in_shape": list(model.in_shape),
            "widths": list(self._widths(model)),
            "num_labels": model.num_labels,
        }

    def build_model(self, class_name: str, config: Mapping[str, Any]) -> ToyMLP:
        if class_name != ToyMLP.__name__:
            raise ValueError(f"{class_name} is not a toy model class")
        return ToyMLP(
            in_shape=_ints(config["in_shape"]),
            widths=_ints(config["widths"]),
            num_labels=int(config["num_labels"]),
        )

    def space_from_dict(self, data: dict[str, Any]) -> ToySearchSpace:
        return ToySearchSpace.from_dict(data)

    def subnet_from_dict(self, data: dict[str, Any]) -> ToySubnet:
        return ToySubnet.from_dict(data)

    # ---- training -------------------------------------------------------------------------
    def check_train_data(self, train_data: Any, hidden_weight: float, theseus: bool) -> None:
        if not isinstance(train_data, ImageData):
            raise ValueError(f"a toy MLP trains on ImageData, got {type(train_data).__name__}")
        if hidden_weight > 0 or theseus:
            raise ValueError("a toy MLP has no hidden-state distillation nor Theseus")

    def phase_space(self, phase: Any, space: ToySearchSpace) -> ToySearchSpace:
        phase.check_dimensions(self.phase_dimensions, "a toy MLP")
        widths = _at_least(
            _restrict(space.widths, phase.widths), phase.min_width * space.widths[-1]
        )
        return dataclasses.replace(
            space, widths=widths, depths=_restrict(space.depths, phase.depths)
        )

    def multiplier_subnets(self, phase: Any, space: ToySearchSpace) -> list[ToySubnet]:
        part = self.phase_space(phase, space)
        return [
            part.uniform(
                depth=part.depths[-1], width=_at_least(part.widths, m * space.widths[-1])[0]
            )
            for m in phase.width_multipliers
        ]
