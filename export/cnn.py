"""CNN subnets as checkpoints: a plain :class:`CnnGraph` in safetensors plus its architecture JSON.

A CNN export directory holds ``model.safetensors`` (the extracted graph's state dict, batch-norm
running statistics included), ``architecture.json`` (``CnnGraph.to_dict()``), ``subnet.json``,
``cnn_model.py`` (a loader that needs only torch and safetensors), optionally ``model.onnx``
(dynamic batch axis) and ``model.pt2`` (``torch.export``), and the manifest that
:mod:`export.checkpoint` writes around them. :func:`export.save` and :func:`export.load` dispatch
here when the supernet's (or the manifest's) family is ``"cnn"``.
"""

from __future__ import annotations

import copy
import importlib.util
import logging
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import Tensor, nn

from export._compare import DENSE_ATOL, VerifyResult, _eval, check_diff
from export._families import register_family
from export.extraction import SUBNET_FILE, WEIGHTS_FILE, extract
from export.onnx import ONNX_FILE
from ofa._io import read_json, write_json_atomic
from ofa.calibrate import calibrate_bn_, has_batch_norm
from ofa.families import cnn_graph
from ofa.families.cnn_graph import CnnGraph
from ofa.supernet import Supernet

__all__ = [
    "ARCHITECTURE_FILE",
    "LOADER_FILE",
    "PROGRAM_FILE",
    "CnnExport",
    "compare_images",
    "load_cnn",
    "loader_source",
    "sample_images",
    "verify_cnn",
]

logger = logging.getLogger(__name__)

ARCHITECTURE_FILE, LOADER_FILE, PROGRAM_FILE = "architecture.json", "cnn_model.py", "model.pt2"
CALIBRATED = "calibrated extracted model"
_ONNX_ATOL = 1e-4
_OPSET = 17

_LOADER_HEADER = '''"""Standalone loader of an ofa CNN export: needs torch and safetensors only.

    import cnn_model                      # this file, from the checkpoint directory
    model = cnn_model.load_model()        # nn.Module in eval mode, weights sha256-checked
    logits = model(images)                # (B, C, H, W) -> model output

On CPU, ``load_model(channels_last=True)`` lays the weights out channels-last (NHWC), whose
convolutions run faster, most of all at narrow widths; pass images in the same layout
(``images.contiguous(memory_format=torch.channels_last)``) and profile in it
(``ofa profile --memory-format channels_last``). Outputs are the same either way.

Written by ofa's export.save: the graph runner below is a verbatim copy of
ofa/families/cnn_graph.py (plain torch layers only, nothing imported by name), followed by
``load_model``.
"""
'''

_LOADER_FOOTER = '''

# ---- appended by export.save ------------------------------------------------------------------
def load_model(directory=None, *, device="cpu", check_sha256=True, channels_last=False):
    """The exported CNN (``architecture.json`` + ``model.safetensors``), in eval mode;
    ``channels_last`` lays its weights out NHWC (see the top of this file)."""
    import hashlib
    import pathlib

    import safetensors.torch

    here = pathlib.Path(__file__).resolve().parent
    folder = here if directory is None else pathlib.Path(directory)
    if check_sha256 and (folder / "manifest.json").is_file():
        files = json.loads((folder / "manifest.json").read_text())["files"]
        for name in ("architecture.json", "model.safetensors"):
            digest = hashlib.sha256((folder / name).read_bytes()).hexdigest()
            if digest != files[name]:
                raise ValueError(f"{folder / name} is corrupted (sha256 mismatch with manifest)")
    model = CnnGraph.from_dict(json.loads((folder / "architecture.json").read_text()))
    safetensors.torch.load_model(model, str(folder / "model.safetensors"), strict=True)
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model.eval()


__all__ += ["load_model"]
'''


def loader_source() -> str:
    """The text of ``cnn_model.py``: ofa's graph runner plus ``load_model``, torch-only."""
    text = Path(cnn_graph.__file__).read_text()
    body = text[text.index("from __future__ import annotations") :]
    imports = [line for line in body.splitlines() if line.startswith(("import ", "from "))]
    assert not any(" ofa" in line for line in imports), imports  # must stay torch-only
    return _LOADER_HEADER + "\n" + body.rstrip() + "\n" + _LOADER_FOOTER


def sample_images(
    model: CnnGraph, image_size: tuple[int, int], *, batch_size: int = 2, seed: int = 0
) -> Tensor:
    """Seeded random images ``(batch_size, C, H, W)`` of the shape ``model`` reads."""
    generator = torch.Generator().manual_seed(seed)
    shape = (batch_size, model.input_channels(), *image_size)
    return torch.randn(shape, generator=generator)


def _first_param(module: nn.Module) -> Tensor:
    return next(module.parameters())


def compare_images(model: CnnGraph, reference: nn.Module, image_size: tuple[int, int]) -> float:
    """Largest absolute output difference of the two models on two random image batches."""
    device, ref_device = _first_param(model).device, _first_param(reference).device
    worst = 0.0
    with _eval(model, reference), torch.no_grad():
        for seed, batch_size in enumerate((2, 3)):
            images = sample_images(model, image_size, batch_size=batch_size, seed=seed)
            got = model(images.to(device=device, dtype=_first_param(model).dtype))
            want = reference(images.to(device=ref_device, dtype=_first_param(reference).dtype))
            worst = max(worst, float((got.float().cpu() - want.float().cpu()).abs().max()))
    return worst


def refuse_bert_options(*, sparsity: object, tokenizer: object, finetune_data: object) -> None:
    """ValueError for the options that only BERT-family exports take."""
    if sparsity is not None:
        raise ValueError(
            "2:4 sparsity is not supported for CNN exports (it prunes the Linear layers of "
            "BERT-family encoders): export the CNN without sparsity"
        )
    if tokenizer is not None:
        raise ValueError("a CNN export takes no tokenizer (that is for BERT-family exports)")
    if finetune_data is not None:
        raise ValueError(
            "finetune_data is for the 2:4 fine-tune of BERT-family exports; to recompute a CNN "
            "subnet's batch-norm statistics pass calibration_data"
        )


class CnnExport:
    """One CNN subnet on its way to a checkpoint: extracted, checked, optionally calibrated.

    The extracted graph is compared with the supernet running the subnet (eval mode, 1e-5)
    *before* calibration; calibration then changes only batch-norm statistics, so the written
    files are checked against this calibrated model instead of the supernet.
    """

    def __init__(
        self,
        supernet: Supernet,
        subnet: Any,
        *,
        calibration_data: Iterable[Any] | None,
        onnx: bool,
        torch_export: bool,
    ) -> None:
        self.supernet, self.subnet = supernet, subnet
        space: Any = supernet.space  # a CnnSearchSpace
        self.image_size: tuple[int, int] = tuple(space.image_size)  # type: ignore[assignment]
        self.onnx, self.torch_export = onnx, torch_export
        model = extract(supernet, subnet)
        assert isinstance(model, CnnGraph), type(model)
        with supernet.using(subnet):
            diff = compare_images(model, supernet, self.image_size)
        self.check = check_diff("supernet", diff, DENSE_ATOL)
        self.calibration: dict[str, Any] | None = None
        if not has_batch_norm(model):
            logger.info("the subnet has no batch norm: nothing to calibrate")
        elif calibration_data is None:
            logger.warning(
                "no calibration_data: the exported CNN keeps the max subnet's batch-norm "
                "statistics, which a smaller subnet does not see; pass calibration_data (image "
                "batches) to recompute them"
            )
        else:
            batches = calibrate_bn_(model, calibration_data)
            model.eval()
            self.calibration = {
                "batches": batches,
                "supernet_max_abs_diff_before_calibration": diff,
                "verify_reference": CALIBRATED,
            }
        self.model = model

    def manifest_fields(self) -> dict[str, Any]:
        """The family's entries of ``manifest.json``."""
        supernet, subnet = self.supernet, self.subnet
        teacher = supernet.space.max_subnet()
        flops = {
            "batch_size": 1,
            "image_size": list(self.image_size),
            "counts": "conv and linear, 2 per MAC",
        }
        return {
            "family": "cnn",
            "architecture": type(self.model).__name__,
            "loads_with": f"export.load, or {LOADER_FILE} (torch + safetensors only)",
            "flops": {"value": supernet.flops(subnet, batch_size=1), **flops},
            "teacher_params": supernet.num_params(teacher),
            "teacher_flops": supernet.flops(teacher, batch_size=1),
            "calibration": self.calibration,
            "torch_export": None,
            "verify": self.check.to_dict(),
        }

    def write(self, tmp: Path) -> dict[str, Any]:
        """Write the CNN's files into ``tmp``; returns the manifest entries they settle."""
        metadata = {"format": "pt", "ofa_family": "cnn", "ofa_subnet": self.subnet.to_json()}
        safetensors.torch.save_model(self.model, str(tmp / WEIGHTS_FILE), metadata=metadata)
        write_json_atomic(tmp / ARCHITECTURE_FILE, self.model.to_dict())
        write_json_atomic(tmp / SUBNET_FILE, self.subnet.to_dict())
        (tmp / LOADER_FILE).write_text(loader_source())
        updates: dict[str, Any] = {"verify": self._check_written(tmp).to_dict()}
        cpu_model = self.model
        if _first_param(self.model).device.type != "cpu":
            cpu_model = copy.deepcopy(self.model).cpu()
        if self.onnx:
            updates["onnx"] = {
                "file": ONNX_FILE,
                **export_onnx_cnn(cpu_model, tmp, self.image_size),
            }
        if self.torch_export:
            updates["torch_export"] = {
                "file": PROGRAM_FILE,
                **export_program(cpu_model, tmp, self.image_size),
            }
        return updates

    def _check_written(self, tmp: Path) -> VerifyResult:
        """Reload the written files and compare: with the supernet, or the calibrated model."""
        written = _build(tmp, device=_first_param(self.model).device, dtype=None)
        if self.calibration is not None:
            return check_diff(
                CALIBRATED, compare_images(written, self.model, self.image_size), DENSE_ATOL
            )
        with self.supernet.using(self.subnet):
            diff = compare_images(written, self.supernet, self.image_size)
        return check_diff("supernet", diff, DENSE_ATOL)


def export_onnx_cnn(model: CnnGraph, tmp: Path, image_size: tuple[int, int]) -> dict[str, Any]:
    """Write ``model.onnx`` (dynamic batch axis) and check it with onnxruntime when installed."""
    path = tmp / ONNX_FILE
    images = sample_images(model, image_size, batch_size=2)
    with warnings.catch_warnings(), torch.no_grad(), _eval(model):
        warnings.simplefilter("ignore")  # tracer warnings are expected
        output = "logits" if model(images).dim() == 2 else "output"
        torch.onnx.export(
            model,
            (images,),
            str(path),
            dynamo=False,
            input_names=["pixel_values"],
            output_names=[output],
            dynamic_axes={"pixel_values": {0: "batch"}, output: {0: "batch"}},
            opset_version=_OPSET,
        )
    if importlib.util.find_spec("onnxruntime") is None:
        logger.warning("onnxruntime is not installed: %s was written but not checked", path)
        return {"checked": False, "max_abs_diff": None, "atol": _ONNX_ATOL}
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def run(images: Tensor) -> Tensor:
        return torch.from_numpy(session.run(None, {"pixel_values": images.numpy()})[0])

    worst = _worst(model, run, image_size)
    if worst > _ONNX_ATOL:
        raise ValueError(f"ONNX outputs differ from the model's by {worst:.2e} > {_ONNX_ATOL:.0e}")
    return {"checked": True, "max_abs_diff": worst, "atol": _ONNX_ATOL}


def export_program(model: CnnGraph, tmp: Path, image_size: tuple[int, int]) -> dict[str, Any]:
    """Write ``model.pt2`` (``torch.export``, dynamic batch), reload it and compare outputs."""
    path = tmp / PROGRAM_FILE
    images = sample_images(model, image_size, batch_size=2)
    with _eval(model):
        program = torch.export.export(
            model, (images,), dynamic_shapes=({0: torch.export.Dim.DYNAMIC},)
        )
    torch.export.save(program, str(path))
    loaded = torch.export.load(str(path)).module()
    worst = _worst(model, loaded, image_size)
    if worst > DENSE_ATOL:
        raise ValueError(
            f"torch.export program differs from the model by {worst:.2e} > {DENSE_ATOL:.0e}"
        )
    return {"checked": True, "max_abs_diff": worst, "atol": DENSE_ATOL, "torch": torch.__version__}


def _worst(model: CnnGraph, run: Any, image_size: tuple[int, int]) -> float:
    """Largest difference of ``run`` from ``model`` on batch sizes other than the traced 2."""
    worst = 0.0
    with _eval(model), torch.no_grad():
        for seed, batch_size in ((1, 1), (2, 5)):
            images = sample_images(model, image_size, batch_size=batch_size, seed=seed)
            got = run(images)
            worst = max(worst, float((got.float() - model(images).float()).abs().max()))
    return worst


def _build(directory: Path, *, device: str | torch.device, dtype: torch.dtype | None) -> CnnGraph:
    architecture = read_json(directory / ARCHITECTURE_FILE, what="CNN architecture")
    model = CnnGraph.from_dict(architecture)
    safetensors.torch.load_model(model, str(directory / WEIGHTS_FILE), strict=True)
    model.to(device=device, dtype=dtype)
    return model.eval()


def load_cnn(
    directory: Path, *, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> CnnGraph:
    """The plain graph of a CNN export (files already sha256-checked), in eval mode."""
    return _build(directory, device=device, dtype=dtype)


def verify_cnn(
    model: CnnGraph, supernet: Supernet, subnet: Any, manifest: Mapping[str, Any]
) -> VerifyResult:
    """Compare a loaded CNN export with the supernet running ``subnet``.

    A calibrated export's batch-norm statistics are its own, so its reference is the supernet's
    extracted subnet carrying the export's statistics (every weight still comes from the
    supernet).
    """
    space: Any = supernet.space  # a CnnSearchSpace
    image_size: tuple[int, int] = tuple(space.image_size)  # type: ignore[assignment]
    if not manifest.get("calibration"):
        with supernet.using(subnet):
            diff = compare_images(model, supernet, image_size)
        return check_diff("supernet", diff, DENSE_ATOL)
    reference = supernet.extract(subnet)
    statistics = {name: buffer for name, buffer in model.named_buffers()}
    missing = sorted(set(statistics) - {name for name, _ in reference.named_buffers()})
    if missing:
        raise ValueError(f"the export has buffers the subnet lacks: {missing[:3]}")
    reference.load_state_dict(statistics, strict=False)
    return check_diff(CALIBRATED, compare_images(model, reference, image_size), DENSE_ATOL)


def cnn_exporter(
    supernet: Any,
    subnet: Any,
    *,
    sparsity: Any,
    onnx: bool,
    torch_export: bool,
    tokenizer: Any,
    finetune_data: Any,
    calibration_data: Any,
    seq_len: int | None,
    default_seq_len: int | None,
) -> CnnExport:
    """The CNN exporter, refusing the options that are for BERT-family exports; a CNN's FLOPs
    are at its image size, so a sequence length from a latency record is moot."""
    if seq_len is not None:
        raise ValueError("seq_len is for BERT-family exports: a CNN's FLOPs are at its image size")
    refuse_bert_options(sparsity=sparsity, tokenizer=tokenizer, finetune_data=finetune_data)
    return CnnExport(
        supernet, subnet, calibration_data=calibration_data, onnx=onnx, torch_export=torch_export
    )


class CnnExportFamily:
    """Exporting CNNs: a plain graph, a standalone loader, optionally ONNX / torch.export."""

    name = "cnn"

    def exporter(self, supernet: Any, subnet: Any, **options: Any) -> CnnExport:
        return cnn_exporter(supernet, subnet, **options)

    def load(self, directory: Path, manifest: Mapping[str, Any], **options: Any) -> nn.Module:
        options.pop("semi_structured", None)  # CNN exports hold no 2:4 layers
        return load_cnn(directory, **options)

    def verify(
        self, model: Any, supernet: Any, subnet: Any, manifest: Mapping[str, Any], directory: Path
    ) -> VerifyResult:
        return verify_cnn(model, supernet, subnet, manifest)


register_family(CnnExportFamily())
