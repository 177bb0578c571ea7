"""export: subnets as plain, deployable checkpoints (safetensors, config, manifest, ONNX, 2:4).

Example:
    >>> import export
    >>> export.save(supernet, subnet, "out/small", tokenizer=tokenizer,
    ...             config=export.ExportConfig(onnx=True))
    >>> model = export.load("out/small")
    >>> export.verify("out/small", supernet, subnet)
    >>> export.save(cnn_supernet, cnn_subnet, "out/cnn", calibration_data=batches)
"""

from __future__ import annotations

from export import bert as _bert  # noqa: F401  (registers the BERT-family exporter)
from export import cnn as _cnn  # noqa: F401  (registers the CNN exporter)
from export import decoder as _decoder  # noqa: F401  (registers the decoder exporter)
from export._families import ExportFamily, register_family
from export.checkpoint import check_files, load, read_manifest, save
from export.config import ExportConfig
from export.extraction import extract, fits_vanilla
from export.sparsity import SparsityConfig
from export.verification import VerifyResult, verify

__all__ = [
    "ExportConfig",
    "ExportFamily",
    "SparsityConfig",
    "VerifyResult",
    "check_files",
    "extract",
    "fits_vanilla",
    "load",
    "read_manifest",
    "register_family",
    "save",
    "verify",
]
