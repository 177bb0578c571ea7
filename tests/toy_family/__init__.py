"""A toy third model family, kept entirely in this package: an MLP image classifier whose
hidden widths and depth are elastic. ``ofa_toy`` is its ``ofa`` adapter (model, space, subnet),
``search_toy`` its search adapter, ``export_toy`` its export adapter; :func:`registered`
registers all three for the duration of a ``with`` block and removes them afterwards."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import export
import export._families
import ofa.families
import search
import search._families
from tests.toy_family.export_toy import ToyExportFamily
from tests.toy_family.ofa_toy import NAME, ToyFamily
from tests.toy_family.search_toy import ToyLatency

__all__ = ["NAME", "registered", "registries"]


def registries() -> dict[str, dict]:
    """The three family registries (family name -> adapter), by package."""
    return {
        "ofa": ofa.families.FAMILIES,
        "search": search._families.FAMILIES,
        "export": export._families.EXPORT_FAMILIES,
    }


@contextlib.contextmanager
def registered() -> Iterator[None]:
    """The toy family registered in ofa (ahead of ``"cnn"``), search and export; afterwards
    every registry holds exactly what it held before, in the same order."""
    before = {name: list(registry.items()) for name, registry in registries().items()}
    ofa.families.register_family(ToyFamily(), before="cnn")
    search.register_family(ToyLatency())
    export.register_family(ToyExportFamily())
    try:
        yield
    finally:
        for name, registry in registries().items():
            registry.pop(NAME, None)
            if list(registry.items()) != before[name]:
                raise AssertionError(f"the {name} family registry was not restored")
