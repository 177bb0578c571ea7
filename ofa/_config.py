"""Frozen run settings beside the objects they act on: the keyword form kept for one release."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping
from typing import Any, TypeVar

__all__ = ["settings_from"]

C = TypeVar("C")


def settings_from(
    cls: type[C], config: C | None, keywords: Mapping[str, Any], *, where: str, name: str
) -> C:
    """``config``, or one built from the former keyword arguments ``keywords`` (with a
    ``DeprecationWarning``). Both at once, or a keyword that is no setting, is a TypeError."""
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(keywords) - fields)
    if unknown:
        raise TypeError(
            f"{where} got unexpected keyword arguments {unknown}; its settings are the fields of "
            f"{name}: {sorted(fields)}"
        )
    if config is not None:
        if keywords:
            raise TypeError(
                f"{where}: give config={name}(...) or the keywords {sorted(keywords)}, not both "
                f"(dataclasses.replace(config, ...) changes a field)"
            )
        if not isinstance(config, cls):
            raise TypeError(f"config must be a {name}, got {type(config).__name__}")
        return config
    if keywords:
        warnings.warn(
            f"{where}({', '.join(f'{k}=...' for k in sorted(keywords))}): pass "
            f"config={name}(...) instead; the keywords go in the next release",
            DeprecationWarning,
            stacklevel=3,
        )
    return cls(**keywords)
