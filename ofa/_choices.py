"""Choice rules of training phases ("max", "large", "all" or values), shared by the families."""

from __future__ import annotations

from typing import Any

__all__ = ["PHASE_DIMENSIONS", "at_least", "restrict"]

# every dimension a phase can name; each family says which of them its supernets have
PHASE_DIMENSIONS = ("depths", "num_heads", "ffn_dims", "hidden_sizes", "widths", "kernel_sizes")


def restrict(choices: tuple[int, ...], rule: Any, name: str) -> tuple[int, ...]:
    if rule == "max":
        return choices[-1:]
    if rule == "all":
        return choices
    if rule == "large":
        return choices[len(choices) // 2 :]
    values = tuple(sorted(int(v) for v in rule))
    bad = sorted(set(values) - set(choices))
    if bad:
        raise ValueError(
            f"phase choices {bad} for {name} are not in the supernet's space {choices}"
        )
    return values


def at_least(choices: tuple[int, ...], bound: float) -> tuple[int, ...]:
    """The choices at or above ``bound`` (the largest alone when none is)."""
    kept = tuple(c for c in choices if c >= bound - 1e-9)
    return kept or choices[-1:]
