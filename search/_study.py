"""Optuna plumbing: samplers, storages, the budget constraint, subnets as trial parameters."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import optuna
from optuna.storages import BaseStorage
from optuna.storages.journal import JournalFileBackend

from ofa.cnn_space import CnnSearchSpace, CnnSubnet
from ofa.space import SearchSpace, Subnet

__all__ = [
    "SAMPLERS",
    "SamplerName",
    "make_sampler",
    "open_storage",
    "set_budget_constraint",
    "subnet_params",
    "suggest_subnet",
]

SamplerName = Literal["tpe", "nsga2", "random"]
SAMPLERS: tuple[str, ...] = ("tpe", "nsga2", "random")
BUDGET_CONSTRAINT = "latency_budget"


def make_sampler(
    name: str, *, seed: int | None, population_size: int = 20
) -> optuna.samplers.BaseSampler:
    """The Optuna sampler called ``name``: ``"tpe"`` (default), ``"nsga2"`` or ``"random"``."""
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=10)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=population_size)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ValueError(f"unknown sampler {name!r}: use one of {', '.join(SAMPLERS)}")


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***``."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def open_storage(
    storage: str | os.PathLike | BaseStorage | None, out_dir: Path | None
) -> BaseStorage:
    """An Optuna storage: a journal file (default, in ``out_dir``), an RDB URL, or a given one.

    A string with ``://`` is an RDB URL (``sqlite:///study.db``, ``postgresql://user@host/db``);
    any other string or path is a journal file, which several processes can share.
    """
    if isinstance(storage, BaseStorage):
        return storage
    if storage is None:
        if out_dir is None:
            return optuna.storages.InMemoryStorage()
        out_dir.mkdir(parents=True, exist_ok=True)
        storage = out_dir / "study.journal"
    text = os.fspath(storage)
    if "://" not in text:
        path = Path(text)
        if path.is_dir():
            raise ValueError(f"storage {text} is a directory: give a journal file path or a URL")
        path.parent.mkdir(parents=True, exist_ok=True)
        backend = JournalFileBackend(str(path))
        return optuna.storages.JournalStorage(backend)
    try:
        return optuna.storages.RDBStorage(text)
    except Exception as error:  # noqa: BLE001 - SQLAlchemy raises many kinds; all mean "bad URL"
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ValueError(
            f"storage URL {redact(text)!r} could not be opened ({type(error).__name__}: {first}): "
            "give a reachable database URL such as sqlite:///study.db or "
            "postgresql://user:password@host:5432/db, or a journal file path"
        ) from None


def set_budget_constraint(
    trial: optuna.trial.Trial, *, latency_ms: float, budget_ms: float
) -> None:
    """Record ``latency_ms - budget_ms <= 0`` as the trial's feasibility constraint.

    The one place that speaks Optuna's constraint API (Optuna 5 deprecates the samplers'
    ``constraints_func`` in favour of ``Trial.set_constraint``).
    """
    trial.set_constraint(BUDGET_CONSTRAINT, float(latency_ms) - float(budget_ms))


def is_feasible(trial: optuna.trial.FrozenTrial) -> bool:
    return all(value <= 0.0 for value in trial.constraints.values())


def suggest_subnet(
    trial: optuna.trial.Trial, space: SearchSpace | CnnSearchSpace
) -> Subnet | CnnSubnet:
    """A subnet from the trial, one categorical parameter per elastic choice of ``space``.

    BERT: depth, hidden width, and heads and FFN width of every layer. Every layer's widths are
    suggested whatever the depth, so the parameter space is fixed (which NSGA-II and
    multivariate TPE need); a layer the depth drops ignores its values. CNN: a width per channel
    group (``width_i``), a depth per stage (``depth_i``) and a kernel per kernel-elastic conv
    (``kernel_i``), in the space's order; a block the depth drops ignores its values.
    """
    if isinstance(space, CnnSearchSpace):
        return _suggest_cnn(trial, space)
    depth = trial.suggest_categorical("depth", list(space.depths))
    hidden = trial.suggest_categorical("hidden_size", list(space.hidden_sizes))
    heads = [
        trial.suggest_categorical(f"heads_{i}", list(space.num_heads))
        for i in range(space.num_layers)
    ]
    ffn = [
        trial.suggest_categorical(f"ffn_{i}", list(space.ffn_dims))
        for i in range(space.num_layers)
    ]
    layers = space.layers_for(int(depth))
    return Subnet(
        layers=layers,
        num_heads=tuple(int(heads[i]) for i in layers),
        ffn_dims=tuple(int(ffn[i]) for i in layers),
        hidden_size=int(hidden),
    )


_CNN_PARAMS = (
    ("width", "channel_choices"),
    ("depth", "depth_choices"),
    ("kernel", "kernel_choices"),
)


def _suggest_cnn(trial: optuna.trial.Trial, space: CnnSearchSpace) -> CnnSubnet:
    values = [
        tuple(
            int(trial.suggest_categorical(f"{prefix}_{i}", list(options)))
            for i, options in enumerate(getattr(space, choices))
        )
        for prefix, choices in _CNN_PARAMS
    ]
    return CnnSubnet(widths=values[0], depths=values[1], kernel_sizes=values[2])


def subnet_params(
    subnet: Subnet | CnnSubnet, space: SearchSpace | CnnSearchSpace
) -> dict[str, Any]:
    """Trial parameters that :func:`suggest_subnet` maps back to ``subnet`` (for enqueueing)."""
    if isinstance(subnet, CnnSubnet):
        chosen = (subnet.widths, subnet.depths, subnet.kernel_sizes)
        return {
            f"{prefix}_{i}": value
            for (prefix, _), values in zip(_CNN_PARAMS, chosen)
            for i, value in enumerate(values)
        }
    assert isinstance(space, SearchSpace)
    params: dict[str, Any] = {"depth": subnet.depth, "hidden_size": subnet.hidden_size}
    for i in range(space.num_layers):
        # dropped layers take the nearest kept layer's widths, so uniform subnets stay uniform
        nearest = min(range(subnet.depth), key=lambda k: abs(subnet.layers[k] - i))
        params[f"heads_{i}"] = subnet.num_heads[nearest]
        params[f"ffn_{i}"] = subnet.ffn_dims[nearest]
    return params


def largest_within(
    uniform: list[Any],
    latency: Callable[[Any], float],
    budget_ms: float,
    flops: Callable[[Any], int],
) -> Any | None:
    """The uniform subnet with the most FLOPs whose latency fits, by bisection over FLOPs."""
    ordered = sorted(uniform, key=flops)
    low, high, best = 0, len(ordered) - 1, None
    while low <= high:
        middle = (low + high) // 2
        if latency(ordered[middle]) <= budget_ms:
            best, low = ordered[middle], middle + 1
        else:
            high = middle - 1
    return best
