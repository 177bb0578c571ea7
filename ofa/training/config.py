"""Training configs: progressive-shrinking phases and the whole run, as frozen JSON data."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from ofa._choices import PHASE_DIMENSIONS
from ofa._json import JsonMixin
from ofa.cnn_space import PHASE_FIELDS, CnnSearchSpace, CnnSubnet
from ofa.distill import DistillConfig
from ofa.families import FAMILIES, SubnetLike, space_family
from ofa.space import Subnet

__all__ = [
    "PhaseConfig",
    "TrainConfig",
    "TheseusConfig",
    "default_phases",
    "default_cnn_phases",
    "Choices",
]

# per dimension: "max" (not elastic), "large" (the larger half of the choices), "all", or values
Choices = Literal["max", "large", "all"] | tuple[int, ...]
Sampling = Literal["sandwich", "random"]
_DIMENSIONS = PHASE_DIMENSIONS


def _subnet_from_dict(data: dict[str, Any]) -> SubnetLike:
    """The subnet whose JSON ``data`` is: that of the registered family whose subnet type has
    exactly these fields (every family's ``to_dict`` writes all of them); otherwise, as JSON
    from before the family registry, a CNN subnet when it has widths, else a BERT one."""
    for family in FAMILIES.values():
        subnet_type = family.subnet_type
        if dataclasses.is_dataclass(subnet_type) and set(data) == {
            f.name for f in dataclasses.fields(subnet_type)
        }:
            return family.subnet_from_dict(data)
    return CnnSubnet.from_dict(data) if "widths" in data else Subnet.from_dict(data)


def _check_rule(name: str, rule: Any) -> Choices:
    if isinstance(rule, str):
        if rule not in ("max", "large", "all"):
            raise ValueError(f"{name}={rule!r}: use 'max', 'large', 'all' or a tuple of values")
        return rule  # type: ignore[return-value]
    values = tuple(int(v) for v in rule)
    if not values:
        raise ValueError(f"{name} is an empty tuple: give at least one value")
    return values


@dataclass(frozen=True, kw_only=True)
class PhaseConfig:
    """One phase of progressive shrinking: which dimensions are elastic, for how long.

    Attributes:
        name: a label for logs and metrics.
        steps / epochs: length in optimizer steps, or in passes over the training data
            (exactly one of them).
        depths, num_heads, ffn_dims, hidden_sizes: ``"max"`` (fixed at the largest),
            ``"large"`` (the larger half of the space's choices), ``"all"``, or a tuple of values.
        widths, kernel_sizes: the CNN dimensions (with ``depths``): per channel group, stage
            and kernel-elastic conv, ``"max"``, ``"large"`` (the larger half of each entry's
            choices) or ``"all"``. BERT phases leave them at ``"max"``; CNN phases leave
            ``num_heads``, ``ffn_dims`` and ``hidden_sizes`` at ``"max"``.
        learning_rate: peak learning rate of the phase (default: the run's).
        sampling: ``"sandwich"`` (max + min + ``num_random`` random subnets per step) or
            ``"random"`` (``num_random`` random subnets).
        num_random: random subnets per step.
        min_width: keep only the choices of at least this fraction of the largest, for head
            counts and FFN widths (a CNN's channel widths): the smallest subnet to be deployed
            becomes the sandwich's min, and nothing narrower is trained. 0 keeps every choice.
        width_multipliers: besides the sampled subnets, train every step the uniform subnet at
            each of these fractions of the full width (the smallest phase choice at or above
            it; the phase's largest depth, hidden width and kernel): heads and FFN for BERT,
            query heads and MLP for decoders, every channel group for CNNs, as DynaBERT trains
            its width multipliers. Use it for the widths you will deploy:
            with per-layer random sampling alone an interior uniform shape is rarely drawn.
        anchors: besides the sampled subnets, train every step each of these subnets that lies
            in this phase's part of the space (phases whose part does not hold one skip it):
            the non-uniform shapes you will deploy, e.g. the best subnet under a budget that
            no width multiplier fits (a CNN at 25% of the FLOPs needs shallower stages or
            smaller kernels, so no full-depth multiplier is under it). Each must lie in the
            supernet's space; training refuses one that does not.
        anchors_everywhere: train the anchors in this phase even where its part of the space
            does not hold them (a decoder anchor of reduced hidden width and depth otherwise
            trains only in the last two of six phases, a third of the steps, while the shared
            weights move under the others); the rest of the phase samples as before.
        subnet: train only this fixed subnet (PaddleSlim's fixed-subnet mode).
    """

    name: str
    steps: int | None = None
    epochs: float | None = None
    depths: Choices = "max"
    num_heads: Choices = "max"
    ffn_dims: Choices = "max"
    hidden_sizes: Choices = "max"
    widths: Choices = "max"
    kernel_sizes: Choices = "max"
    learning_rate: float | None = None
    sampling: Sampling = "sandwich"
    num_random: int = 1
    min_width: float = 0.0
    width_multipliers: tuple[float, ...] = ()
    anchors: tuple[SubnetLike, ...] = ()
    anchors_everywhere: bool = False
    subnet: SubnetLike | None = None
    version: int = 1

    def __post_init__(self) -> None:
        if (self.steps is None) == (self.epochs is None):
            raise ValueError(f"phase {self.name!r}: give exactly one of steps or epochs")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"phase {self.name!r}: steps must be positive, got {self.steps}")
        if self.epochs is not None and not self.epochs > 0:
            raise ValueError(f"phase {self.name!r}: epochs must be positive, got {self.epochs}")
        for name in _DIMENSIONS:
            object.__setattr__(self, name, _check_rule(name, getattr(self, name)))
        if self.sampling not in ("sandwich", "random"):
            raise ValueError(f"sampling must be 'sandwich' or 'random', got {self.sampling!r}")
        if self.num_random < 0 or (self.sampling == "random" and self.num_random < 1):
            raise ValueError("num_random must be >= 0 (>= 1 with random sampling)")
        if self.learning_rate is not None and not (
            isinstance(self.learning_rate, (int, float))
            and not isinstance(self.learning_rate, bool)
            and 0 < self.learning_rate < float("inf")
        ):
            raise ValueError(
                f"phase {self.name!r}: learning_rate must be a positive finite number, got "
                f"{self.learning_rate!r}: give e.g. 5e-5"
            )
        if not 0.0 <= self.min_width <= 1.0:
            raise ValueError(
                f"phase {self.name!r}: min_width must be a fraction in [0, 1], got {self.min_width}"
            )
        multipliers = tuple(float(m) for m in self.width_multipliers)
        bad = [m for m in multipliers if not 0.0 < m <= 1.0]
        if bad:
            raise ValueError(
                f"phase {self.name!r}: width_multipliers must be fractions in (0, 1], got {bad}"
            )
        object.__setattr__(self, "width_multipliers", multipliers)
        if isinstance(self.subnet, dict):
            object.__setattr__(self, "subnet", _subnet_from_dict(self.subnet))
        anchors = tuple(_subnet_from_dict(a) if isinstance(a, dict) else a for a in self.anchors)
        if self.subnet is not None and anchors:
            raise ValueError(
                f"phase {self.name!r}: a fixed-subnet phase trains only its subnet: drop anchors"
            )
        object.__setattr__(self, "anchors", anchors)
        if not isinstance(self.anchors_everywhere, bool):
            raise ValueError(
                f"phase {self.name!r}: anchors_everywhere must be True or False, got "
                f"{self.anchors_everywhere!r}"
            )

    def space_for(self, space: Any) -> Any:
        """The part of ``space`` this phase samples from (the supernet's space is unchanged)."""
        return space_family(space).phase_space(self, space)

    def check_dimensions(self, dimensions: tuple[str, ...], kind: str) -> None:
        """Refuse a phase that makes elastic a dimension ``kind`` supernets do not have."""
        extra = [n for n in _DIMENSIONS if n not in dimensions and getattr(self, n) != "max"]
        if extra:
            raise ValueError(
                f"phase {self.name!r} makes {extra} elastic, which {kind} supernet does not "
                f"have: it has {list(dimensions)}"
            )

    def multiplier_subnets(self, space: Any) -> list[Any]:
        """The uniform subnets of ``width_multipliers`` in this phase's part of ``space``."""
        if not self.width_multipliers:
            return []
        return space_family(space).multiplier_subnets(self, space)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for name in _DIMENSIONS:
            value = getattr(self, name)
            data[name] = value if isinstance(value, str) else list(value)
        data["subnet"] = None if self.subnet is None else self.subnet.to_dict()
        data["width_multipliers"] = list(self.width_multipliers)
        data["anchors"] = [a.to_dict() for a in self.anchors]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PhaseConfig:
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown PhaseConfig fields {sorted(unknown)}")
        data = dict(data)
        if data.get("subnet") is not None:
            data["subnet"] = _subnet_from_dict(data["subnet"])
        data["anchors"] = tuple(_subnet_from_dict(a) for a in data.get("anchors", ()))
        return cls(**data)


def default_phases(
    total_steps: int,
    *,
    learning_rate: float | None = None,
    hidden: bool = True,
    sampling: Sampling = "sandwich",
    num_random: int = 1,
    min_width: float = 0.0,
    width_multipliers: tuple[float, ...] = (),
    later_learning_rate: float | None = None,
    anchors: tuple[SubnetLike, ...] = (),
    anchors_everywhere: bool = False,
) -> tuple[PhaseConfig, ...]:
    """The BERT schedule: width, then depth, then hidden width; each large choices, then all.

    Steps are shared out equally (remainder to the last phase). Every phase keeps what earlier
    phases made elastic, as OFA and DynaBERT do. ``hidden=False`` leaves out the two hidden-width
    phases (the residual stream stays full width). ``min_width`` and ``width_multipliers`` are
    given to every phase (see :class:`PhaseConfig`): bound the widths at the smallest subnet you
    will deploy, or train the uniform widths you will deploy every step; ``anchors`` (any
    shapes to deploy) are trained every step of the phases whose part of the space holds them,
    or of every phase with ``anchors_everywhere``.
    ``later_learning_rate`` is the peak rate of the depth and hidden phases (default: that of
    the width phases), as OFA trains its later shrinking stages at a lower rate than the first.

    Example:
        >>> [p.name for p in default_phases(60)]
        ['width-large', 'width-all', 'depth-large', 'depth-all', 'hidden-large', 'hidden-all']
    """
    plan = [
        ("width-large", {"num_heads": "large", "ffn_dims": "large"}),
        ("width-all", {"num_heads": "all", "ffn_dims": "all"}),
        ("depth-large", {"num_heads": "all", "ffn_dims": "all", "depths": "large"}),
        ("depth-all", {"num_heads": "all", "ffn_dims": "all", "depths": "all"}),
        (
            "hidden-large",
            {"num_heads": "all", "ffn_dims": "all", "depths": "all", "hidden_sizes": "large"},
        ),
        (
            "hidden-all",
            {"num_heads": "all", "ffn_dims": "all", "depths": "all", "hidden_sizes": "all"},
        ),
    ]
    if later_learning_rate is not None and not later_learning_rate > 0:
        raise ValueError(f"later_learning_rate must be positive, got {later_learning_rate}")
    if not hidden:
        plan = plan[:4]
    phases = _share_steps(
        plan,
        total_steps,
        learning_rate=learning_rate,
        sampling=sampling,
        num_random=num_random,
        min_width=min_width,
        width_multipliers=tuple(width_multipliers),
        anchors=tuple(anchors),
        anchors_everywhere=anchors_everywhere,
    )
    if later_learning_rate is None:
        return phases
    return tuple(
        p
        if p.name.startswith("width")
        else dataclasses.replace(p, learning_rate=later_learning_rate)
        for p in phases
    )


def default_cnn_phases(
    total_steps: int,
    *,
    space: CnnSearchSpace | None = None,
    learning_rate: float | None = None,
    sampling: Sampling = "sandwich",
    num_random: int = 1,
    min_width: float = 0.0,
    width_multipliers: tuple[float, ...] = (),
    later_learning_rate: float | None = None,
    anchors: tuple[SubnetLike, ...] = (),
    anchors_everywhere: bool = False,
) -> tuple[PhaseConfig, ...]:
    """The CNN schedule (OFA's): kernel size, then depth, then width; each large, then all.

    Every phase keeps what earlier phases made elastic. Given ``space``, phases of dimensions it
    does not make elastic (no kernel-elastic conv, no depth choices) are left out, so no steps
    go to training the same max subnet. Steps are shared out equally (remainder to the last).
    ``min_width`` bounds every phase's channel widths and ``width_multipliers`` and
    ``anchors`` are trained every step (see :class:`PhaseConfig`; in a phase whose widths are fixed a multiplier is its
    max subnet, already trained). ``later_learning_rate`` is the peak rate of every phase after
    the first (default: the same), as OFA trains its later shrinking stages at a lower rate.

    Example:
        >>> [p.name for p in default_cnn_phases(50)]
        ['kernel', 'depth-large', 'depth-all', 'width-large', 'width-all']
    """
    plan = [
        ("kernel", "kernel_sizes", {"kernel_sizes": "all"}),
        ("depth-large", "depths", {"kernel_sizes": "all", "depths": "large"}),
        ("depth-all", "depths", {"kernel_sizes": "all", "depths": "all"}),
        ("width-large", "widths", {"kernel_sizes": "all", "depths": "all", "widths": "large"}),
        ("width-all", "widths", {"kernel_sizes": "all", "depths": "all", "widths": "all"}),
    ]
    if space is not None:
        elastic = {
            name
            for name, field_name in PHASE_FIELDS.items()
            if any(len(c) > 1 for c in getattr(space, field_name))
        }
        plan = [p for p in plan if p[1] in elastic]
        if not plan:
            raise ValueError("the space has no elastic dimension: nothing to shrink")
    if later_learning_rate is not None and not later_learning_rate > 0:
        raise ValueError(f"later_learning_rate must be positive, got {later_learning_rate}")
    phases = _share_steps(
        [(name, dims) for name, _, dims in plan],
        total_steps,
        learning_rate=learning_rate,
        sampling=sampling,
        num_random=num_random,
        min_width=min_width,
        width_multipliers=tuple(width_multipliers),
        anchors=tuple(anchors),
        anchors_everywhere=anchors_everywhere,
    )
    if later_learning_rate is None:
        return phases
    return phases[:1] + tuple(
        dataclasses.replace(p, learning_rate=later_learning_rate) for p in phases[1:]
    )


def _share_steps(
    plan: list[tuple[str, dict[str, str]]],
    total_steps: int,
    **fields: Any,
) -> tuple[PhaseConfig, ...]:
    if total_steps < len(plan):
        raise ValueError(f"the schedule has {len(plan)} phases: give at least as many steps")
    share = total_steps // len(plan)
    steps = [share] * (len(plan) - 1) + [total_steps - share * (len(plan) - 1)]
    return tuple(
        PhaseConfig(name=name, steps=n, **fields, **dims)  # type: ignore[arg-type]
        for (name, dims), n in zip(plan, steps)
    )


@dataclass(frozen=True, kw_only=True)
class TheseusConfig:
    """BERT-of-Theseus: each group of teacher layers is replaced by the subnet's kept layer
    with a probability rising linearly from ``start`` to 1 at ``until_fraction`` of the phase."""

    start: float = 0.5
    until_fraction: float = 0.8
    version: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.start <= 1 or not 0 < self.until_fraction <= 1:
            raise ValueError("Theseus start must be in [0, 1] and until_fraction in (0, 1]")

    def probability(self, progress: float) -> float:
        return min(1.0, self.start + (1 - self.start) * progress / self.until_fraction)


@dataclass(frozen=True, kw_only=True)
class TrainConfig(JsonMixin):
    """A whole supernet training run.

    Attributes:
        phases: progressive-shrinking phases, run in order.
        batch_size: rows per micro-batch on each process; ``grad_accum_steps`` micro-batches
            make one optimizer step.
        learning_rate, weight_decay: AdamW; each phase warms up over ``warmup_fraction`` of its
            steps, then decays linearly to 0.
        max_grad_norm: clipping (0 switches it off).
        distill: the losses; ``teacher_mode="inplace"`` distills from the max subnet instead of
            the frozen teacher.
        start_phase: skip the phases before this one (PaddleSlim's manual phase control).
        theseus: train shallow subnets BERT-of-Theseus style instead of by plain distillation.
        checkpoint_every_steps: write ``checkpoint/`` every this many steps (0: at the end only).
        bf16: autocast to bfloat16 on CUDA (ignored on CPU).

    Example:
        >>> config = TrainConfig(phases=default_phases(600), batch_size=32)
        >>> TrainConfig.from_json(config.to_json()) == config
        True
    """

    phases: tuple[PhaseConfig, ...]
    batch_size: int = 32
    grad_accum_steps: int = 1
    learning_rate: float = 5e-5
    weight_decay: float = 0.01
    warmup_fraction: float = 0.1
    max_grad_norm: float = 1.0
    seed: int = 0
    distill: DistillConfig = field(default_factory=DistillConfig)
    teacher_mode: Literal["frozen", "inplace"] = "frozen"
    start_phase: int = 0
    theseus: TheseusConfig | None = None
    checkpoint_every_steps: int = 0
    log_every_steps: int = 1
    bf16: bool = True
    version: int = 1

    def __post_init__(self) -> None:
        phases = tuple(PhaseConfig.from_dict(p) if isinstance(p, dict) else p for p in self.phases)
        object.__setattr__(self, "phases", phases)
        if isinstance(self.distill, dict):
            object.__setattr__(self, "distill", DistillConfig.from_dict(self.distill))
        if isinstance(self.theseus, dict):
            object.__setattr__(self, "theseus", TheseusConfig(**self.theseus))
        if not phases:
            raise ValueError("phases is empty: give at least one PhaseConfig (see default_phases)")
        if not 0 <= self.start_phase < len(phases):
            raise ValueError(f"start_phase {self.start_phase} is outside 0..{len(phases) - 1}")
        for name in ("batch_size", "grad_accum_steps", "log_every_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"{name} must be a whole number, got {value!r}: give e.g. 32")
            if value < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not (
            isinstance(self.learning_rate, (int, float))
            and not isinstance(self.learning_rate, bool)
            and 0 < self.learning_rate < float("inf")
        ):
            raise ValueError(
                f"learning_rate must be a positive finite number, got {self.learning_rate!r}: "
                "give e.g. 5e-5"
            )
        if self.weight_decay < 0 or self.max_grad_norm < 0:
            raise ValueError("learning_rate must be > 0, weight_decay and max_grad_norm >= 0")
        if not 0 <= self.warmup_fraction < 1:
            raise ValueError(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
        if self.teacher_mode not in ("frozen", "inplace"):
            raise ValueError(
                f"teacher_mode must be 'frozen' or 'inplace', got {self.teacher_mode!r}"
            )
        if self.teacher_mode == "inplace" and any(
            p.sampling != "sandwich" and p.subnet is None for p in phases
        ):
            raise ValueError(
                "in-place distillation learns from the max subnet, which only the sandwich rule "
                "samples first: use sampling='sandwich' in every phase"
            )
        if self.theseus is not None and (
            self.distill.hidden_weight > 0 or self.teacher_mode == "inplace"
        ):
            raise ValueError(
                "BERT-of-Theseus mixes teacher layers into the student: use it with a frozen "
                "teacher and hidden_weight=0"
            )
        if self.checkpoint_every_steps < 0:
            raise ValueError("checkpoint_every_steps must be >= 0")
        if self.version != 1:
            raise ValueError(f"TrainConfig version {self.version} is not supported")

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["phases"] = [p.to_dict() for p in self.phases]
        data["distill"] = self.distill.to_dict()
        data["theseus"] = None if self.theseus is None else asdict(self.theseus)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {sorted(unknown)}")
        return cls(**data)
