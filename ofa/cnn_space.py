"""Search spaces and subnets of CNN supernets: frozen, hashable, JSON data.

A CNN space names its elastic dimensions by the paths of the converted model: channel groups
(named by their first producing layer, e.g. ``"layer1.0.conv1"``), stages (named by their first
block, e.g. ``"layer2.0"``) and kernel-elastic convs. A subnet gives one value per entry, in
the space's order.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from ofa._choices import at_least
from ofa._json import JsonMixin

__all__ = ["CnnSearchSpace", "CnnSubnet"]


def _ints(values: Any, what: str = "CNN space entry") -> tuple[int, ...]:
    from ofa.space import _ints as strict

    if isinstance(values, tuple) and all(type(v) is int for v in values):
        return values
    return strict(what, list(values) if isinstance(values, tuple) else values)


# a training phase's dimension -> the CnnSearchSpace field holding its per-entry choices
PHASE_FIELDS = {
    "depths": "depth_choices",
    "widths": "channel_choices",
    "kernel_sizes": "kernel_choices",
}


@dataclass(frozen=True, kw_only=True)
class CnnSubnet(JsonMixin):
    """One CNN subnet: a width per channel group, a depth per stage, a kernel size per conv.

    Attributes:
        widths: active channels of each channel group, in the space's ``channel_groups`` order.
        depths: blocks kept in each stage (the first ``k``), in the space's ``stages`` order.
        kernel_sizes: kernel size of each kernel-elastic conv, in ``kernel_convs`` order.
    """

    widths: tuple[int, ...]
    depths: tuple[int, ...] = ()
    kernel_sizes: tuple[int, ...] = ()
    version: int = 1

    def __post_init__(self) -> None:
        for name in ("widths", "depths", "kernel_sizes"):
            object.__setattr__(self, name, _ints(getattr(self, name)))
        if any(v < 1 for v in self.widths + self.depths + self.kernel_sizes):
            raise ValueError("widths, depths and kernel sizes must be positive")
        if self.version != 1:
            raise ValueError(f"CnnSubnet version {self.version} is not supported (this is 1)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CnnSubnet:
        if not isinstance(data, dict):
            raise ValueError(f"a CnnSubnet must be a JSON object, got {type(data).__name__}")
        known = {"widths", "depths", "kernel_sizes", "version"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(
                f"unknown CnnSubnet fields {sorted(unknown)}; expected {sorted(known)}"
            )
        from ofa.space import _int

        if "widths" not in data:
            raise ValueError("the CnnSubnet JSON lacks 'widths': give one width per channel group")
        return cls(
            widths=_ints(data["widths"], "CnnSubnet widths"),
            depths=_ints(data.get("depths", []), "CnnSubnet depths"),
            kernel_sizes=_ints(data.get("kernel_sizes", []), "CnnSubnet kernel_sizes"),
            version=_int("CnnSubnet version", data.get("version", 1)),
        )


def _check_choices(what: str, choices: tuple[int, ...], maximum: int, multiple: int) -> None:
    if not choices or tuple(sorted(set(choices))) != choices:
        raise ValueError(f"{what} choices {choices} must be non-empty and strictly increasing")
    if choices[-1] != maximum:
        raise ValueError(f"{what} choices {choices} must end with the full size {maximum}")
    bad = [c for c in choices[:-1] if c < 1 or c % multiple]
    if bad:
        raise ValueError(f"{what} choices {bad} are not positive multiples of {multiple}")


@dataclass(frozen=True, kw_only=True)
class CnnSearchSpace(JsonMixin):
    """The choices of a CNN supernet, per channel group, stage and kernel-elastic conv.

    Attributes:
        channel_groups: names of the elastic channel groups.
        channel_choices: allowed widths per group; each ends with the full width, the others
            are multiples of ``width_multiple``.
        stages: names of the depth-elastic stages.
        depth_choices: allowed block counts per stage, ending with the full count.
        kernel_convs: paths of the kernel-elastic convs.
        kernel_choices: allowed odd kernel sizes per conv, ending with the full size.
        width_multiple: widths other than the full one are multiples of this.
        image_size: (height, width) of the input that FLOPs are counted for.

    Example:
        >>> space = CnnSearchSpace(channel_groups=("conv1",), channel_choices=((8, 16),))
        >>> space.contains(space.min_subnet())
        True
    """

    channel_groups: tuple[str, ...]
    channel_choices: tuple[tuple[int, ...], ...]
    stages: tuple[str, ...] = ()
    depth_choices: tuple[tuple[int, ...], ...] = ()
    kernel_convs: tuple[str, ...] = ()
    kernel_choices: tuple[tuple[int, ...], ...] = ()
    width_multiple: int = 8
    image_size: tuple[int, int] = (224, 224)
    version: int = 1

    def __post_init__(self) -> None:
        for names_field, choices_field in self._dimensions():
            names = tuple(str(n) for n in getattr(self, names_field))
            options = tuple(_ints(c) for c in getattr(self, choices_field))
            object.__setattr__(self, names_field, names)
            object.__setattr__(self, choices_field, options)
            if len(names) != len(options):
                raise ValueError(
                    f"{names_field} and {choices_field} need the same number of entries"
                )
        object.__setattr__(self, "image_size", _ints(self.image_size))
        if self.width_multiple < 1 or len(self.image_size) != 2 or min(self.image_size) < 1:
            raise ValueError("width_multiple must be positive and image_size (height, width)")
        for name, choices in zip(self.channel_groups, self.channel_choices):
            _check_choices(
                f"channel group {name!r}",
                choices,
                choices[-1] if choices else 0,
                self.width_multiple,
            )
        for name, choices in zip(self.stages, self.depth_choices):
            _check_choices(f"stage {name!r} depth", choices, choices[-1] if choices else 0, 1)
        for name, choices in zip(self.kernel_convs, self.kernel_choices):
            _check_choices(f"conv {name!r} kernel", choices, choices[-1] if choices else 0, 1)
            if any(k % 2 == 0 for k in choices):
                raise ValueError(f"conv {name!r} kernel choices {choices} must be odd")
        if self.version != 1:
            raise ValueError(f"CnnSearchSpace version {self.version} is not supported")

    @staticmethod
    def _dimensions() -> tuple[tuple[str, str], ...]:
        return (
            ("channel_groups", "channel_choices"),
            ("stages", "depth_choices"),
            ("kernel_convs", "kernel_choices"),
        )

    def _pick(self, index: int) -> CnnSubnet:
        return CnnSubnet(
            widths=tuple(c[index] for c in self.channel_choices),
            depths=tuple(c[index] for c in self.depth_choices),
            kernel_sizes=tuple(c[index] for c in self.kernel_choices),
        )

    def max_subnet(self) -> CnnSubnet:
        return self._pick(-1)

    def min_subnet(self) -> CnnSubnet:
        return self._pick(0)

    def sample(self, generator: torch.Generator | None = None) -> CnnSubnet:
        """A subnet drawn uniformly per group, stage and conv."""

        def pick(choices: tuple[int, ...]) -> int:
            return choices[int(torch.randint(len(choices), (1,), generator=generator))]

        return CnnSubnet(
            widths=tuple(pick(c) for c in self.channel_choices),
            depths=tuple(pick(c) for c in self.depth_choices),
            kernel_sizes=tuple(pick(c) for c in self.kernel_choices),
        )

    def uniform_subnets(self) -> list[CnnSubnet]:
        """Every uniform subnet: each stage at its same-rank depth choice (largest, next, ...),
        each kernel-elastic conv at the largest of its choices up to one size, each channel
        group at the smallest choice at or above one width fraction (one of the fractions its
        choices take, of any group). Deepest and smallest-kernel first, then widening."""
        levels = max((len(c) for c in self.depth_choices), default=1)
        sizes = sorted({k for c in self.kernel_choices for k in c}) or [0]
        fractions = sorted({w / c[-1] for c in self.channel_choices for w in c}) or [1.0]
        found: dict[CnnSubnet, None] = {}
        for level in range(levels):
            depths = tuple(c[max(len(c) - 1 - level, 0)] for c in self.depth_choices)
            for size in sizes:
                kernels = tuple(
                    max([k for k in c if k <= size], default=c[0]) for c in self.kernel_choices
                )
                for fraction in fractions:
                    widths = tuple(at_least(c, fraction * c[-1])[0] for c in self.channel_choices)
                    found.setdefault(CnnSubnet(widths=widths, depths=depths, kernel_sizes=kernels))
        return list(found)

    def scaled(self, ratio: float) -> CnnSubnet:
        """Every group at the choice nearest ``ratio`` of its full width; full depth and kernels."""
        if not 0 < ratio <= 1:
            raise ValueError(f"ratio {ratio} must be in (0, 1]")
        widths = tuple(min(c, key=lambda w: abs(w - ratio * c[-1])) for c in self.channel_choices)
        return CnnSubnet(
            widths=widths,
            depths=tuple(c[-1] for c in self.depth_choices),
            kernel_sizes=tuple(c[-1] for c in self.kernel_choices),
        )

    def violations(self, subnet: CnnSubnet) -> list[str]:
        """What puts ``subnet`` outside this space; empty when it is inside."""
        if not isinstance(subnet, CnnSubnet):
            return [f"expected an ofa.CnnSubnet, got {type(subnet).__name__}"]
        problems = []
        for (names, choices), values in zip(
            self._dimensions(), (subnet.widths, subnet.depths, subnet.kernel_sizes)
        ):
            options = getattr(self, choices)
            if len(values) != len(options):
                problems.append(f"{len(values)} values for {len(options)} {names}")
                continue
            for name, value, allowed in zip(getattr(self, names), values, options):
                if value not in allowed:
                    problems.append(f"{names} {name!r}: {value} not in {allowed}")
        return problems

    def contains(self, subnet: CnnSubnet) -> bool:
        return not self.violations(subnet)

    def check(self, subnet: CnnSubnet) -> None:
        """Raise ``ValueError`` naming every way ``subnet`` falls outside the space."""
        problems = self.violations(subnet)
        if problems:
            raise ValueError("subnet is outside the search space: " + "; ".join(problems[:5]))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CnnSearchSpace:
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(
                f"unknown CnnSearchSpace fields {sorted(unknown)}; expected {sorted(known)}"
            )
        return cls(**data)
