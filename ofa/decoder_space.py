"""Search spaces and subnets of decoder-only LM supernets (Llama, Qwen2, Mistral): frozen JSON.

Attention is grouped-query: each of a layer's ``num_kv_heads`` key/value heads serves
``heads_per_kv`` query heads, so a subnet's query heads are ``heads_per_kv * num_kv_heads`` and
``num_attention_heads % num_key_value_heads == 0`` holds in every subnet by construction.
``head_dim`` never changes (rotary embeddings stay as they are).
"""

from __future__ import annotations

import math
from dataclasses import MISSING, asdict, dataclass
from typing import Any

import torch

from ofa._json import JsonMixin
from ofa.space import LayerSelection, _check_choices, _int, _ints, _mapping, select_layers

__all__ = ["DecoderSearchSpace", "DecoderSubnet"]

_SELECTIONS = ("evenly_spaced", "first")
_PER_LAYER = ("heads_per_kv", "num_kv_heads", "ffn_dims")


def _step(size: int) -> int:
    """The largest of 64, 32, ... 1 that divides a quarter of ``size``."""
    return next(s for s in (64, 32, 16, 8, 4, 2, 1) if size % (4 * s) == 0 or s == 1)


def _quarters(size: int, step: int, first: int = 1) -> tuple[int, ...]:
    """``size`` at quarters ``first/4 .. 4/4``, rounded to multiples of ``step``."""
    return tuple(sorted({max(step, round(size * q / 4 / step) * step) for q in range(first, 5)}))


@dataclass(frozen=True, kw_only=True)
class DecoderSubnet(JsonMixin):
    """One decoder subnet: which layers it keeps and the shape of each.

    Attributes:
        layers: indices of the kept decoder layers, increasing.
        heads_per_kv: query heads per key/value head, one entry per kept layer.
        num_kv_heads: key/value heads, one entry per kept layer.
        ffn_dims: MLP (intermediate) width, one entry per kept layer.
        hidden_size: width of the residual stream (embeddings, every RMSNorm, the LM head).
    """

    layers: tuple[int, ...]
    heads_per_kv: tuple[int, ...]
    num_kv_heads: tuple[int, ...]
    ffn_dims: tuple[int, ...]
    hidden_size: int
    version: int = 1

    def __post_init__(self) -> None:
        for name in ("layers", *_PER_LAYER):
            value = getattr(self, name)
            if not isinstance(value, tuple):
                object.__setattr__(self, name, tuple(int(v) for v in value))
        if not self.layers:
            raise ValueError("a decoder subnet keeps at least one layer")
        if list(self.layers) != sorted(set(self.layers)) or self.layers[0] < 0:
            raise ValueError(f"layers={self.layers} must be distinct, increasing, non-negative")
        lengths = {name: len(getattr(self, name)) for name in _PER_LAYER}
        if set(lengths.values()) != {len(self.layers)}:
            raise ValueError(
                f"{lengths} need one entry per kept layer ({len(self.layers)}): give each of "
                "heads_per_kv, num_kv_heads and ffn_dims for every kept layer"
            )
        if min(min(getattr(self, n)) for n in _PER_LAYER) < 1 or self.hidden_size < 1:
            raise ValueError("head counts, FFN widths and hidden_size must be positive")
        if self.version != 1:
            raise ValueError(f"DecoderSubnet version {self.version} is not supported (this is 1)")

    @property
    def depth(self) -> int:
        return len(self.layers)

    @property
    def num_heads(self) -> tuple[int, ...]:
        """Query heads of each kept layer (``heads_per_kv * num_kv_heads``)."""
        return tuple(g * k for g, k in zip(self.heads_per_kv, self.num_kv_heads))

    @property
    def is_uniform(self) -> bool:
        """Every kept layer has the same heads, KV heads and MLP width."""
        return all(len(set(getattr(self, name))) == 1 for name in _PER_LAYER)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DecoderSubnet:
        _mapping("DecoderSubnet", data)
        known = {"layers", *_PER_LAYER, "hidden_size", "version"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(
                f"unknown DecoderSubnet fields {sorted(unknown)}; expected {sorted(known)}"
            )
        missing = sorted(known - {"version"} - set(data))
        if missing:
            raise ValueError(f"the DecoderSubnet JSON lacks fields {missing}: give all of them")
        return cls(
            layers=_ints("DecoderSubnet layers", data["layers"]),
            **{n: _ints(f"DecoderSubnet {n}", data[n]) for n in _PER_LAYER},
            hidden_size=_int("DecoderSubnet hidden_size", data["hidden_size"]),
            version=_int("DecoderSubnet version", data.get("version", 1)),
        )


@dataclass(frozen=True, kw_only=True)
class DecoderSearchSpace(JsonMixin):
    """The choices of a decoder supernet, per elastic dimension.

    Attributes:
        num_layers: decoder layers of the full model.
        max_num_kv_heads: key/value heads per layer of the full model.
        max_heads_per_kv: query heads per key/value head of the full model.
        head_dim: width of one head; it never changes.
        max_ffn_dim: MLP width of the full model.
        max_hidden_size: residual-stream width of the full model.
        depths: allowed numbers of kept layers.
        heads_per_kv: allowed query heads per KV head, per layer.
        num_kv_heads: allowed KV heads per layer (default: the full count only).
        ffn_dims: allowed MLP widths per layer, each a multiple of ``ffn_step``.
        hidden_sizes: allowed residual widths, each a multiple of ``hidden_step``.
        layer_selection: which layers a depth keeps, ``"evenly_spaced"`` or ``"first"``.

    Example:
        >>> space = DecoderSearchSpace.default(num_layers=4, max_num_kv_heads=2,
        ...     max_heads_per_kv=4, head_dim=16, max_ffn_dim=128, max_hidden_size=64)
        >>> space.contains(space.max_subnet())
        True
    """

    num_layers: int
    max_num_kv_heads: int
    max_heads_per_kv: int
    head_dim: int
    max_ffn_dim: int
    max_hidden_size: int
    depths: tuple[int, ...]
    heads_per_kv: tuple[int, ...]
    num_kv_heads: tuple[int, ...]
    ffn_dims: tuple[int, ...]
    hidden_sizes: tuple[int, ...]
    ffn_step: int = 64
    hidden_step: int = 64
    layer_selection: LayerSelection = "evenly_spaced"
    version: int = 1

    def __post_init__(self) -> None:
        for name in ("depths", *_PER_LAYER, "hidden_sizes"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        for name in (
            "num_layers",
            "max_num_kv_heads",
            "max_heads_per_kv",
            "head_dim",
            "max_ffn_dim",
            "max_hidden_size",
        ):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name, size in (("ffn_step", self.max_ffn_dim), ("hidden_step", self.max_hidden_size)):
            step = getattr(self, name)
            if step < 1 or size % step:
                raise ValueError(
                    f"{name} {step} does not divide the full width {size}: pick a step that "
                    "divides it (e.g. 64 or 32)"
                )
        if self.layer_selection not in _SELECTIONS:
            raise ValueError(
                f"unknown layer_selection {self.layer_selection!r}: use one of {_SELECTIONS}"
            )
        _check_choices("depths", self.depths, maximum=self.num_layers, step=1)
        _check_choices("heads_per_kv", self.heads_per_kv, maximum=self.max_heads_per_kv, step=1)
        _check_choices("num_kv_heads", self.num_kv_heads, maximum=self.max_num_kv_heads, step=1)
        _check_choices("ffn_dims", self.ffn_dims, maximum=self.max_ffn_dim, step=self.ffn_step)
        _check_choices(
            "hidden_sizes", self.hidden_sizes, maximum=self.max_hidden_size, step=self.hidden_step
        )
        if self.version != 1:
            raise ValueError(f"DecoderSearchSpace version {self.version} is not supported")

    @classmethod
    def default(
        cls,
        *,
        num_layers: int,
        max_num_kv_heads: int,
        max_heads_per_kv: int,
        head_dim: int,
        max_ffn_dim: int,
        max_hidden_size: int,
        elastic_depth: bool = True,
        layer_selection: LayerSelection = "evenly_spaced",
    ) -> DecoderSearchSpace:
        """The space derived from a model's shape: quarters of the query heads per KV head and
        of the MLP width, hidden width from half, depth from half; every KV head kept."""
        ffn_step, hidden_step = _step(max_ffn_dim), _step(max_hidden_size)
        first_depth = max(1, math.ceil(num_layers / 2)) if elastic_depth else num_layers
        return cls(
            num_layers=num_layers,
            max_num_kv_heads=max_num_kv_heads,
            max_heads_per_kv=max_heads_per_kv,
            head_dim=head_dim,
            max_ffn_dim=max_ffn_dim,
            max_hidden_size=max_hidden_size,
            depths=tuple(range(first_depth, num_layers + 1)),
            heads_per_kv=_quarters(max_heads_per_kv, 1),
            num_kv_heads=(max_num_kv_heads,),
            ffn_dims=_quarters(max_ffn_dim, ffn_step),
            hidden_sizes=_quarters(max_hidden_size, hidden_step, first=2),
            ffn_step=ffn_step,
            hidden_step=hidden_step,
            layer_selection=layer_selection,
        )

    def layers_for(self, depth: int) -> tuple[int, ...]:
        return select_layers(self.num_layers, depth, self.layer_selection)

    def uniform(
        self, *, depth: int, heads_per_kv: int, num_kv_heads: int, ffn_dim: int, hidden_size: int
    ) -> DecoderSubnet:
        """The subnet with the same heads, KV heads and MLP width in every kept layer."""
        subnet = DecoderSubnet(
            layers=self.layers_for(depth),
            heads_per_kv=(heads_per_kv,) * depth,
            num_kv_heads=(num_kv_heads,) * depth,
            ffn_dims=(ffn_dim,) * depth,
            hidden_size=hidden_size,
        )
        self.check(subnet)
        return subnet

    def uniform_subnets(self) -> list[DecoderSubnet]:
        """Every uniform subnet of the space (one choice per dimension, same in every layer)."""
        return [
            self.uniform(depth=d, heads_per_kv=g, num_kv_heads=k, ffn_dim=f, hidden_size=w)
            for d in self.depths
            for g in self.heads_per_kv
            for k in self.num_kv_heads
            for f in self.ffn_dims
            for w in self.hidden_sizes
        ]

    def _extreme(self, at: int) -> DecoderSubnet:
        return self.uniform(
            depth=self.depths[at],
            heads_per_kv=self.heads_per_kv[at],
            num_kv_heads=self.num_kv_heads[at],
            ffn_dim=self.ffn_dims[at],
            hidden_size=self.hidden_sizes[at],
        )

    def max_subnet(self) -> DecoderSubnet:
        return self._extreme(-1)

    def min_subnet(self) -> DecoderSubnet:
        return self._extreme(0)

    def sample(self, generator: torch.Generator | None = None) -> DecoderSubnet:
        """A subnet drawn uniformly per dimension (depth, then each layer's shape)."""

        def pick(choices: tuple[int, ...]) -> int:
            return choices[int(torch.randint(len(choices), (1,), generator=generator))]

        depth = pick(self.depths)
        return DecoderSubnet(
            layers=self.layers_for(depth),
            heads_per_kv=tuple(pick(self.heads_per_kv) for _ in range(depth)),
            num_kv_heads=tuple(pick(self.num_kv_heads) for _ in range(depth)),
            ffn_dims=tuple(pick(self.ffn_dims) for _ in range(depth)),
            hidden_size=pick(self.hidden_sizes),
        )

    def violations(self, subnet: Any) -> list[str]:
        """What puts ``subnet`` outside this space; empty when it is inside."""
        if not isinstance(subnet, DecoderSubnet):
            return [f"expected a DecoderSubnet, got {type(subnet).__name__}"]
        problems = []
        if subnet.depth not in self.depths:
            problems.append(f"depth {subnet.depth} not in {self.depths}")
        elif subnet.layers != self.layers_for(subnet.depth):
            problems.append(
                f"layers {subnet.layers} are not the {self.layer_selection} choice "
                f"{self.layers_for(subnet.depth)} for depth {subnet.depth}"
            )
        for name in _PER_LAYER:
            bad = sorted(set(getattr(subnet, name)) - set(getattr(self, name)))
            if bad:
                problems.append(f"{name} {bad} not in {getattr(self, name)}")
        if subnet.hidden_size not in self.hidden_sizes:
            problems.append(f"hidden_size {subnet.hidden_size} not in {self.hidden_sizes}")
        return problems

    def contains(self, subnet: Any) -> bool:
        return not self.violations(subnet)

    def check(self, subnet: Any) -> None:
        """Raise ``ValueError`` naming every way ``subnet`` falls outside the space."""
        problems = self.violations(subnet)
        if problems:
            raise ValueError("subnet is outside the search space: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DecoderSearchSpace:
        _mapping("DecoderSearchSpace", data)
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(
                f"unknown DecoderSearchSpace fields {sorted(unknown)}; expected {sorted(known)}"
            )
        values = dict(data)
        for name in ("depths", *_PER_LAYER, "hidden_sizes"):
            if name in values:
                values[name] = _ints(f"DecoderSearchSpace {name}", values[name])
        for name, field in cls.__dataclass_fields__.items():
            if name in values and field.type == "int":
                _int(f"DecoderSearchSpace {name}", values[name])
        required = {n for n, f in cls.__dataclass_fields__.items() if f.default is MISSING}
        missing = sorted(required - set(values))
        if missing:
            raise ValueError(f"the DecoderSearchSpace JSON lacks fields {missing}")
        return cls(**values)
