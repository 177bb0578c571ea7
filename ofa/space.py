"""Search spaces and subnets of BERT-family supernets: frozen, hashable, JSON data."""

from __future__ import annotations

import math
from dataclasses import MISSING, asdict, dataclass
from typing import Any, Literal

import torch

from ofa._json import JsonMixin

__all__ = ["SearchSpace", "Subnet", "select_layers"]

LayerSelection = Literal["evenly_spaced", "first"]
_SELECTIONS = ("evenly_spaced", "first")


def select_layers(num_layers: int, depth: int, rule: LayerSelection) -> tuple[int, ...]:
    """Indices of the encoder layers a subnet of ``depth`` layers keeps.

    ``"first"`` keeps layers ``0 .. depth-1``. ``"evenly_spaced"`` (DynaBERT) spreads the kept
    layers over the whole stack and always keeps the last layer, whose output the head reads.

    Example:
        >>> select_layers(6, 3, "evenly_spaced")
        (1, 3, 5)
    """
    if not 1 <= depth <= num_layers:
        raise ValueError(f"depth {depth} is outside 1..{num_layers}: pick a depth the model has")
    if rule == "first":
        return tuple(range(depth))
    if rule == "evenly_spaced":
        return tuple(math.ceil((i + 1) * num_layers / depth) - 1 for i in range(depth))
    raise ValueError(f"unknown layer_selection {rule!r}: use one of {_SELECTIONS}")


def _int(what: str, value: Any) -> int:
    """``value`` if it is an int (not a bool, float or string); else a ValueError with the fix."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(
            f"{what} must be a whole number, got {value!r} ({type(value).__name__}): write it "
            'as an integer, e.g. 4 (not 4.0, "4" or true)'
        )
    return value


def _ints(what: str, values: Any) -> tuple[int, ...]:
    """A tuple of ints from a list / tuple of ints; anything else a ValueError with the fix."""
    if isinstance(values, (str, bytes)) or not isinstance(values, (list, tuple)):
        raise ValueError(
            f"{what} must be a list of whole numbers, got {values!r}: write e.g. [2, 4]"
        )
    return tuple(_int(f"{what} entry", v) for v in values)


def _mapping(what: str, data: Any) -> None:
    if not isinstance(data, dict):
        raise ValueError(
            f"a {what} must be a JSON object of its fields, got {type(data).__name__}"
        )


def _check_choices(name: str, choices: tuple[int, ...], *, maximum: int, step: int) -> None:
    if not choices:
        raise ValueError(f"{name} is empty: give at least one choice")
    if tuple(sorted(set(choices))) != tuple(choices):
        raise ValueError(f"{name}={choices} must be strictly increasing with no repeats")
    for value in choices:
        if value < step or value > maximum:
            raise ValueError(f"{name} choice {value} is outside {step}..{maximum}")
        if value % step:
            raise ValueError(
                f"{name} choice {value} is not a multiple of {step}: round it to a multiple of {step}"
            )


@dataclass(frozen=True, kw_only=True)
class Subnet(JsonMixin):
    """One concrete subnet: which layers it keeps and the width of each.

    Attributes:
        layers: indices of the kept encoder layers, increasing.
        num_heads: attention heads kept, one entry per kept layer.
        ffn_dims: FFN (intermediate) width, one entry per kept layer.
        hidden_size: width of the residual stream (embeddings, LayerNorms, pooler).
    """

    layers: tuple[int, ...]
    num_heads: tuple[int, ...]
    ffn_dims: tuple[int, ...]
    hidden_size: int
    version: int = 1

    def __post_init__(self) -> None:
        for name in ("layers", "num_heads", "ffn_dims"):
            value = getattr(self, name)
            if not isinstance(value, tuple):
                object.__setattr__(self, name, tuple(int(v) for v in value))
        if not self.layers:
            raise ValueError("a subnet keeps at least one layer")
        if list(self.layers) != sorted(set(self.layers)) or self.layers[0] < 0:
            raise ValueError(f"layers={self.layers} must be distinct, increasing, non-negative")
        if not len(self.num_heads) == len(self.ffn_dims) == len(self.layers):
            raise ValueError(
                f"num_heads ({len(self.num_heads)}) and ffn_dims ({len(self.ffn_dims)}) need one "
                f"entry per kept layer ({len(self.layers)})"
            )
        if min(self.num_heads) < 1 or min(self.ffn_dims) < 1 or self.hidden_size < 1:
            raise ValueError("head counts, FFN widths and hidden_size must be positive")
        if self.version != 1:
            raise ValueError(f"Subnet version {self.version} is not supported (this is version 1)")

    @property
    def depth(self) -> int:
        return len(self.layers)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Subnet:
        _mapping("Subnet", data)
        known = {"layers", "num_heads", "ffn_dims", "hidden_size", "version"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown Subnet fields {sorted(unknown)}; expected {sorted(known)}")
        missing = sorted(known - {"version"} - set(data))
        if missing:
            raise ValueError(
                f"the Subnet JSON lacks fields {missing}: give all of "
                f"{sorted(known - {'version'})}"
            )
        return cls(
            layers=_ints("Subnet layers", data["layers"]),
            num_heads=_ints("Subnet num_heads", data["num_heads"]),
            ffn_dims=_ints("Subnet ffn_dims", data["ffn_dims"]),
            hidden_size=_int("Subnet hidden_size", data["hidden_size"]),
            version=_int("Subnet version", data.get("version", 1)),
        )


@dataclass(frozen=True, kw_only=True)
class SearchSpace(JsonMixin):
    """The choices of a BERT-family supernet, per elastic dimension.

    Attributes:
        num_layers: encoder layers of the full model.
        max_num_heads: heads per layer of the full model.
        head_dim: width of one head; it never changes.
        max_ffn_dim: FFN width of the full model.
        max_hidden_size: residual-stream width of the full model.
        depths: allowed numbers of kept layers.
        layer_selection: which layers a depth keeps, ``"evenly_spaced"`` or ``"first"``.
        num_heads: allowed head counts per layer.
        ffn_dims: allowed FFN widths per layer, each a multiple of ``ffn_step``.
        ffn_step: granularity of FFN widths.
        hidden_sizes: allowed residual widths, each a multiple of ``head_dim``.

    Example:
        >>> space = SearchSpace.default(num_layers=4, max_num_heads=4, head_dim=8,
        ...                             max_ffn_dim=128, max_hidden_size=32)
        >>> space.contains(space.max_subnet())
        True
    """

    num_layers: int
    max_num_heads: int
    head_dim: int
    max_ffn_dim: int
    max_hidden_size: int
    depths: tuple[int, ...]
    num_heads: tuple[int, ...]
    ffn_dims: tuple[int, ...]
    hidden_sizes: tuple[int, ...]
    ffn_step: int = 64
    layer_selection: LayerSelection = "evenly_spaced"
    version: int = 1

    def __post_init__(self) -> None:
        for name in ("depths", "num_heads", "ffn_dims", "hidden_sizes"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        for name in ("num_layers", "max_num_heads", "head_dim", "max_ffn_dim", "max_hidden_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.ffn_step < 1 or self.max_ffn_dim % self.ffn_step:
            raise ValueError(
                f"ffn_step {self.ffn_step} does not divide the FFN width {self.max_ffn_dim}: "
                "pick a step that divides it (e.g. 64 or 32)"
            )
        if self.layer_selection not in _SELECTIONS:
            raise ValueError(
                f"unknown layer_selection {self.layer_selection!r}: use one of {_SELECTIONS}"
            )
        if self.max_hidden_size % self.head_dim:
            raise ValueError(
                f"head_dim {self.head_dim} does not divide hidden size {self.max_hidden_size}"
            )
        _check_choices("depths", self.depths, maximum=self.num_layers, step=1)
        _check_choices("num_heads", self.num_heads, maximum=self.max_num_heads, step=1)
        _check_choices("ffn_dims", self.ffn_dims, maximum=self.max_ffn_dim, step=self.ffn_step)
        _check_choices(
            "hidden_sizes", self.hidden_sizes, maximum=self.max_hidden_size, step=self.head_dim
        )
        if self.version != 1:
            raise ValueError(f"SearchSpace version {self.version} is not supported")

    @classmethod
    def default(
        cls,
        *,
        num_layers: int,
        max_num_heads: int,
        head_dim: int,
        max_ffn_dim: int,
        max_hidden_size: int,
        ffn_step: int | None = None,
        layer_selection: LayerSelection = "evenly_spaced",
    ) -> SearchSpace:
        """The space derived from a model's shape: quarters of each width, depth from a third."""
        if ffn_step is None:
            ffn_step = next(
                s for s in (64, 32, 16, 8, 4, 2, 1) if max_ffn_dim % (4 * s) == 0 or s == 1
            )
        quarters = sorted({max(1, round(max_num_heads * q / 4)) for q in range(1, 5)})
        ffn = sorted(
            {max(ffn_step, round(max_ffn_dim * q / 4 / ffn_step) * ffn_step) for q in range(1, 5)}
        )
        units = max_hidden_size // head_dim
        hidden = sorted({max(1, round(units * q / 4)) * head_dim for q in range(2, 5)})
        depths = tuple(range(max(1, math.ceil(num_layers / 3)), num_layers + 1))
        return cls(
            num_layers=num_layers,
            max_num_heads=max_num_heads,
            head_dim=head_dim,
            max_ffn_dim=max_ffn_dim,
            max_hidden_size=max_hidden_size,
            depths=depths,
            num_heads=tuple(quarters),
            ffn_dims=tuple(ffn),
            hidden_sizes=tuple(hidden),
            ffn_step=ffn_step,
            layer_selection=layer_selection,
        )

    def layers_for(self, depth: int) -> tuple[int, ...]:
        return select_layers(self.num_layers, depth, self.layer_selection)

    def uniform(self, *, depth: int, num_heads: int, ffn_dim: int, hidden_size: int) -> Subnet:
        """The subnet with the same heads and FFN width in every kept layer."""
        subnet = Subnet(
            layers=self.layers_for(depth),
            num_heads=(num_heads,) * depth,
            ffn_dims=(ffn_dim,) * depth,
            hidden_size=hidden_size,
        )
        self.check(subnet)
        return subnet

    def uniform_subnets(self) -> list[Subnet]:
        """Every uniform subnet of the space (one choice per dimension, same in every layer)."""
        return [
            self.uniform(depth=d, num_heads=h, ffn_dim=f, hidden_size=w)
            for d in self.depths
            for h in self.num_heads
            for f in self.ffn_dims
            for w in self.hidden_sizes
        ]

    def max_subnet(self) -> Subnet:
        return self.uniform(
            depth=self.depths[-1],
            num_heads=self.num_heads[-1],
            ffn_dim=self.ffn_dims[-1],
            hidden_size=self.hidden_sizes[-1],
        )

    def min_subnet(self) -> Subnet:
        return self.uniform(
            depth=self.depths[0],
            num_heads=self.num_heads[0],
            ffn_dim=self.ffn_dims[0],
            hidden_size=self.hidden_sizes[0],
        )

    def sample(self, generator: torch.Generator | None = None) -> Subnet:
        """A subnet drawn uniformly per dimension (depth, then each layer's widths)."""

        def pick(choices: tuple[int, ...]) -> int:
            return choices[int(torch.randint(len(choices), (1,), generator=generator))]

        depth = pick(self.depths)
        return Subnet(
            layers=self.layers_for(depth),
            num_heads=tuple(pick(self.num_heads) for _ in range(depth)),
            ffn_dims=tuple(pick(self.ffn_dims) for _ in range(depth)),
            hidden_size=pick(self.hidden_sizes),
        )

    def violations(self, subnet: Subnet) -> list[str]:
        """What puts ``subnet`` outside this space; empty when it is inside."""
        problems = []
        if subnet.depth not in self.depths:
            problems.append(f"depth {subnet.depth} not in {self.depths}")
        elif subnet.layers != self.layers_for(subnet.depth):
            problems.append(
                f"layers {subnet.layers} are not the {self.layer_selection} choice "
                f"{self.layers_for(subnet.depth)} for depth {subnet.depth}"
            )
        bad_heads = sorted(set(subnet.num_heads) - set(self.num_heads))
        if bad_heads:
            problems.append(f"head counts {bad_heads} not in {self.num_heads}")
        bad_ffn = sorted(set(subnet.ffn_dims) - set(self.ffn_dims))
        if bad_ffn:
            problems.append(f"FFN widths {bad_ffn} not in {self.ffn_dims}")
        if subnet.hidden_size not in self.hidden_sizes:
            problems.append(f"hidden_size {subnet.hidden_size} not in {self.hidden_sizes}")
        return problems

    def contains(self, subnet: Subnet) -> bool:
        return not self.violations(subnet)

    def check(self, subnet: Subnet) -> None:
        """Raise ``ValueError`` naming every way ``subnet`` falls outside the space."""
        problems = self.violations(subnet)
        if problems:
            raise ValueError("subnet is outside the search space: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchSpace:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise ValueError(
                f"unknown SearchSpace fields {sorted(unknown)}; expected {sorted(known)}"
            )
        values = dict(data)
        for name in ("depths", "num_heads", "ffn_dims", "hidden_sizes"):
            if name in values:
                values[name] = _ints(f"SearchSpace {name}", values[name])
        for name in (
            "num_layers",
            "max_num_heads",
            "head_dim",
            "max_ffn_dim",
            "max_hidden_size",
            "ffn_step",
            "version",
        ):
            if name in values:
                _int(f"SearchSpace {name}", values[name])
        required = {
            n
            for n, f in cls.__dataclass_fields__.items()
            if f.default is MISSING and f.default_factory is MISSING
        }
        missing = sorted(required - set(values))
        if missing:
            raise ValueError(f"the SearchSpace JSON lacks fields {missing}")
        return cls(**values)
