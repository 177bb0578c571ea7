"""What exporting needs to know of a model family, chosen in one place: how a subnet becomes an
exporter (and which options the family refuses), how an export loads, how it is verified.

Each family's code lives in its own module (``export.bert`` for BERT-family encoders,
``export.cnn`` for CNNs), which registers its adapter here with :func:`register_family`;
this registry imports no family. A new family adds one module and registers itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
from torch import nn

from ofa._registry import Registry

__all__ = ["EXPORT_FAMILIES", "ExportFamily", "export_adapter", "register_family"]


class ExportFamily(Protocol):
    name: str

    def exporter(
        self,
        supernet: Any,
        subnet: Any,
        *,
        sparsity: Any,
        onnx: bool,
        torch_export: bool,
        tokenizer: Any,
        finetune_data: Iterable[Mapping[str, torch.Tensor]] | None,
        calibration_data: Iterable[Any] | None,
        seq_len: int | None,
        default_seq_len: int | None,
    ) -> Any:
        """The object that writes the export's files (``write(tmp) -> manifest entries``)."""
        ...

    def load(
        self,
        directory: Path,
        manifest: Mapping[str, Any],
        *,
        device: str | torch.device,
        dtype: torch.dtype | None,
        semi_structured: Literal["auto", "off"],
    ) -> nn.Module: ...

    def verify(
        self, model: Any, supernet: Any, subnet: Any, manifest: Mapping[str, Any], directory: Path
    ) -> Any: ...


# family name -> adapter; each family's module registers its own when ``export`` is imported
EXPORT_FAMILIES: Registry[ExportFamily] = Registry("export adapter")


def register_family(family: ExportFamily) -> ExportFamily:
    """Make ``family`` the export adapter for models of ``family.name`` (once per name)."""
    return EXPORT_FAMILIES.register(family)


def export_adapter(name: str) -> ExportFamily:
    return EXPORT_FAMILIES.named(name)
