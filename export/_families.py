"""What exporting needs to know of a model family, chosen in one place: how a subnet becomes an
exporter (and which options the family refuses), how an export loads, how it is verified.

Each family's code lives in its own module (``export.bert`` and ``export.checkpoint``'s
``load_bert`` / ``export.verify``'s ``verify_bert`` for BERT-family encoders, ``export.cnn`` for
CNNs); this registry only maps the family's name to it. The adapters import those modules when
called, as those modules import this registry.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
from torch import nn

__all__ = ["EXPORT_FAMILIES", "ExportFamily", "export_adapter"]


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


class BertExportFamily:
    name = "bert"

    def exporter(self, supernet: Any, subnet: Any, **options: Any) -> Any:
        from export.bert import bert_exporter

        return bert_exporter(supernet, subnet, **options)

    def load(self, directory: Path, manifest: Mapping[str, Any], **options: Any) -> nn.Module:
        from export.checkpoint import load_bert

        return load_bert(directory, manifest, **options)

    def verify(
        self, model: Any, supernet: Any, subnet: Any, manifest: Mapping[str, Any], directory: Path
    ) -> Any:
        from export.verify import verify_bert

        return verify_bert(model, supernet, subnet, manifest, directory)


class CnnExportFamily:
    name = "cnn"

    def exporter(self, supernet: Any, subnet: Any, **options: Any) -> Any:
        from export.cnn import cnn_exporter

        return cnn_exporter(supernet, subnet, **options)

    def load(self, directory: Path, manifest: Mapping[str, Any], **options: Any) -> nn.Module:
        from export.cnn import load_cnn

        options.pop("semi_structured", None)  # CNN exports hold no 2:4 layers
        return load_cnn(directory, **options)

    def verify(
        self, model: Any, supernet: Any, subnet: Any, manifest: Mapping[str, Any], directory: Path
    ) -> Any:
        from export.cnn import verify_cnn

        return verify_cnn(model, supernet, subnet, manifest)


# family name -> adapter; filled at import time, never changed afterwards
EXPORT_FAMILIES: dict[str, ExportFamily] = {"bert": BertExportFamily(), "cnn": CnnExportFamily()}


def export_adapter(name: str) -> ExportFamily:
    if name not in EXPORT_FAMILIES:
        raise ValueError(f"unknown model family {name!r}; known: {sorted(EXPORT_FAMILIES)}")
    return EXPORT_FAMILIES[name]
