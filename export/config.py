"""The settings of one export, as frozen JSON data (beside ``ofa.TrainConfig``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from export.sparsity import SparsityConfig, sparsity_config
from ofa._json import JsonMixin, known_fields

__all__ = ["ExportConfig"]


@dataclass(frozen=True, kw_only=True)
class ExportConfig(JsonMixin):
    """What :func:`export.save` writes besides the weights.

    Attributes:
        sparsity: ``"2:4"`` or a :class:`SparsityConfig` to prune encoder Linears 2:4 (BERT only).
        onnx: also write ``model.onnx`` (dynamic batch, and sequence for BERT), checked with
            onnxruntime when installed.
        torch_export: also write ``model.pt2`` (``torch.export``, dynamic batch) and check that
            the reloaded program reproduces the outputs (CNN only; off by default because it
            takes seconds and stores the weights a second time).
        seq_len: tokens per input the manifest's FLOPs are counted at (BERT only); default: the
            length the latency was measured at when given, else 128.

    Example:
        >>> export.save(supernet, subnet, "out/small", config=export.ExportConfig(onnx=True))
    """

    sparsity: SparsityConfig | None = None
    onnx: bool = False
    torch_export: bool = False
    seq_len: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "sparsity", sparsity_config(self.sparsity))
        for name in ("onnx", "torch_export"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False, got {getattr(self, name)!r}")
        seq_len = self.seq_len
        if seq_len is not None and (
            isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1
        ):
            raise ValueError(f"seq_len must be a positive integer, got {seq_len!r}")

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["sparsity"] = None if self.sparsity is None else self.sparsity.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExportConfig:
        data = known_fields(cls, data)
        sparsity = data.get("sparsity")
        if isinstance(sparsity, dict):
            data = {**data, "sparsity": SparsityConfig.from_dict(sparsity)}
        return cls(**data)
