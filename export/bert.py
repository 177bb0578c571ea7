"""What a BERT-family export does beyond the shared checkpoint: check, 2:4 masking, files.

:func:`export.save` builds a :class:`BertExport` for BERT-family supernets (the CNN counterpart
is :class:`export.cnn.CnnExport`): it extracts the subnet as a transformers model, checks it
against the supernet, optionally masks it 2:4, and writes ``model.safetensors``,
``config.json``, ``subnet.json``, ``modeling_ofa.py`` when needed, the tokenizer and
``model.onnx``.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import safetensors.torch
import torch
from torch import nn
from transformers import PreTrainedModel

from export._compare import DENSE_ATOL, VerifyResult, check_diff, compare, masked_supernet
from export._families import register_family
from export.extraction import (
    CONFIG_FILE,
    MODELING_FILE,
    SUBNET_FILE,
    WEIGHTS_FILE,
    build_model,
    checkpoint_config,
    extract,
    fits_vanilla,
    modeling_source,
)
from export.onnx import ONNX_FILE, check_onnx, export_onnx
from export.sparsity import (
    SparsityConfig,
    apply_2_4_,
    choose_semi_structured,
    finetune_masked_,
    is_2_4,
    kernels_available,
    say_dense_once,
    select_linears,
    sparsity_config,
    to_semi_structured_,
)
from ofa._io import read_json, write_json_atomic
from ofa.space import Subnet
from ofa.supernet import Supernet

logger = logging.getLogger(__name__)

__all__ = ["BertExport", "BertExportFamily", "load_bert", "verify_bert"]

DEFAULT_SEQ_LEN = 128  # the manifest's FLOPs length when neither seq_len nor latency names one


def sparsify(
    model: PreTrainedModel,
    supernet: Supernet,
    subnet: Subnet,
    config: SparsityConfig,
    finetune_data: Iterable[Mapping[str, torch.Tensor]] | None,
) -> dict[str, Any]:
    """Mask ``model`` 2:4 in place, check it against the masked supernet, optionally fine-tune."""
    if config.finetune_steps and finetune_data is None:
        raise ValueError(
            "SparsityConfig.finetune_steps > 0 needs finetune_data (batches of inputs)"
        )
    names, skipped = select_linears(model, config)
    teacher = copy.deepcopy(model) if config.finetune_steps else None
    masks = apply_2_4_(model, names)
    reference = masked_supernet(supernet, subnet, masks)
    with reference.using(subnet):
        diff = compare(model, reference, vocab_size=model.config.vocab_size)
    check_diff("masked supernet", diff, DENSE_ATOL)  # raises when the masking went wrong
    del reference
    losses: list[float] = []
    if teacher is not None:
        assert finetune_data is not None
        losses = finetune_masked_(model, teacher, masks, finetune_data, config)
    device = next(model.parameters()).device
    kernels = None
    if kernels_available(device):
        decisions = choose_semi_structured(copy.deepcopy(model).half(), names)
        kernels = {
            "device": torch.cuda.get_device_name(device),
            "dtype": "float16",
            "layers": decisions,
        }
    return {
        **config.to_dict(),
        "layers": names,
        "dense_layers": skipped,
        "masked_max_abs_diff": diff,
        "finetune_loss": [losses[0], losses[-1]] if losses else None,
        "kernels": kernels,
    }


class BertExport:
    """A BERT-family subnet on its way to a checkpoint: extracted, checked, maybe 2:4-masked."""

    def __init__(
        self,
        supernet: Supernet,
        subnet: Subnet,
        *,
        sparsity: SparsityConfig | None,
        onnx: bool,
        tokenizer: Any,
        finetune_data: Iterable[Mapping[str, torch.Tensor]] | None,
        seq_len: int = 128,
    ) -> None:
        self.supernet, self.subnet, self.onnx, self.tokenizer = supernet, subnet, onnx, tokenizer
        self.seq_len = seq_len  # tokens per input of the manifest's FLOPs
        self.model: PreTrainedModel = extract(supernet, subnet)  # type: ignore[assignment]
        with supernet.using(subnet):
            diff = compare(self.model, supernet, vocab_size=self.model.config.vocab_size)
        self.check = check_diff("supernet", diff, DENSE_ATOL)
        self.sparse_info = None
        if sparsity is not None:
            self.sparse_info = sparsify(self.model, supernet, subnet, sparsity, finetune_data)

    def manifest_fields(self) -> dict[str, Any]:
        supernet, subnet = self.supernet, self.subnet
        teacher = supernet.space.max_subnet()
        flops = supernet.flops(subnet, batch_size=1, seq_len=self.seq_len)
        vanilla = fits_vanilla(supernet.space, subnet)
        return {
            "family": "bert",
            "architecture": type(self.model).__name__,
            "loads_with": "transformers" if vanilla else "transformers, trust_remote_code=True",
            "flops": {
                "value": flops,
                "batch_size": 1,
                "seq_len": self.seq_len,
                "counts": "matmul, 2 per MAC",
            },
            "teacher_params": supernet.num_params(teacher),
            "teacher_flops": supernet.flops(teacher, batch_size=1, seq_len=self.seq_len),
            "sparsity": self.sparse_info,
            "verify": self.check.to_dict(),
        }

    def write(self, tmp: Path) -> dict[str, Any]:
        """Write the checkpoint's files into ``tmp``; returns the manifest entries they settle."""
        model = self.model
        write_files(tmp, model, self.supernet, self.subnet, self.tokenizer, self.sparse_info)
        if not self.onnx:
            return {}
        if next(model.parameters()).device.type != "cpu":
            model = copy.deepcopy(model).cpu()
        export_onnx(model, tmp / ONNX_FILE)
        return {"onnx": {"file": ONNX_FILE, **check_onnx(model, tmp / ONNX_FILE)}}


def write_files(
    tmp: Path,
    model: PreTrainedModel,
    supernet: Supernet,
    subnet: Subnet,
    tokenizer: Any,
    sparse_info: dict[str, Any] | None,
) -> None:
    metadata = {"format": "pt", "ofa_subnet": subnet.to_json()}
    if sparse_info is not None:
        metadata["ofa_sparsity"] = json.dumps({"pattern": "2:4", "layers": sparse_info["layers"]})
    safetensors.torch.save_model(model, str(tmp / WEIGHTS_FILE), metadata=metadata)
    write_json_atomic(tmp / CONFIG_FILE, checkpoint_config(model, supernet.space, subnet))
    write_json_atomic(tmp / SUBNET_FILE, subnet.to_dict())
    if not fits_vanilla(supernet.space, subnet):
        (tmp / MODELING_FILE).write_text(modeling_source(type(model).__name__))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(tmp))


def bert_exporter(
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
) -> BertExport:
    """The BERT-family exporter, refusing the options that are for CNNs."""
    if calibration_data is not None:
        raise ValueError(
            "calibration_data recomputes CNN batch-norm statistics; a BERT-family export has "
            "none: leave it None"
        )
    if torch_export:
        raise ValueError("torch_export is supported for CNN exports only: leave it False")
    length = seq_len if seq_len is not None else default_seq_len
    return BertExport(
        supernet,
        subnet,
        sparsity=sparsity_config(sparsity),
        onnx=onnx,
        tokenizer=tokenizer,
        finetune_data=finetune_data,
        seq_len=DEFAULT_SEQ_LEN if length is None else length,
    )


def load_bert(
    directory: Path,
    manifest: Mapping[str, Any],
    *,
    device: str | torch.device,
    dtype: torch.dtype | None,
    semi_structured: Literal["auto", "off"],
) -> PreTrainedModel:
    """A BERT-family export (vanilla or per-layer), its 2:4 layers converted where they win."""
    model = build_model(read_json(directory / CONFIG_FILE, what="config"))
    safetensors.torch.load_model(model, str(directory / WEIGHTS_FILE), strict=True)
    model.to(device=device, dtype=dtype)  # type: ignore[call-arg]
    model.eval()
    sparsity = manifest.get("sparsity")
    if sparsity and semi_structured == "auto":
        model.config.ofa_semi_structured_layers = _accelerate(model, sparsity)
    return model


def _accelerate(model: nn.Module, sparsity: Mapping[str, Any]) -> list[str]:
    weight = next(model.parameters())
    if not kernels_available(weight.device) or weight.dtype not in (torch.float16, torch.bfloat16):
        say_dense_once(f"{weight.device.type} ({weight.dtype})")
        return []
    recorded = sparsity.get("kernels") or {}
    if recorded.get("device") == torch.cuda.get_device_name(weight.device):
        decisions = recorded["layers"]
    else:
        decisions = choose_semi_structured(model, sparsity["layers"])
    winners = [name for name, d in decisions.items() if d["use"]]
    logger.info("2:4 kernels on %d of %d layers", len(winners), len(sparsity["layers"]))
    return to_semi_structured_(model, winners)


def verify_bert(
    model: Any, supernet: Supernet, subnet: Subnet, manifest: Any, directory: Path
) -> VerifyResult:
    """A BERT-family export against the supernet (against the masked supernet for 2:4)."""
    vocab_size = model.config.vocab_size
    sparsity = manifest.get("sparsity")
    if not sparsity:
        with supernet.using(subnet):
            diff = compare(model, supernet, vocab_size=vocab_size)
        return check_diff("supernet", diff, DENSE_ATOL)
    modules = dict(model.named_modules())
    masks = {name: modules[name].weight.detach() != 0 for name in sparsity["layers"]}
    pattern_ok = all(is_2_4(modules[name].weight) for name in sparsity["layers"])
    reference = masked_supernet(supernet, subnet, masks)
    with reference.using(subnet):
        diff = compare(model, reference, vocab_size=vocab_size)
    if sparsity.get("finetune_steps", 0):
        result = VerifyResult(
            reference="masked supernet before fine-tune",
            max_abs_diff=diff,
            atol=None,
            passed=pattern_ok,
        )
    else:
        result = check_diff("masked supernet", diff, DENSE_ATOL)
    if not pattern_ok:
        raise ValueError(f"{directory}: a layer listed as 2:4 is not 2:4 sparse")
    return result


class BertExportFamily:
    """Exporting BERT-family encoders: a transformers checkpoint (stock or per-layer classes)."""

    name = "bert"

    def exporter(self, supernet: Any, subnet: Any, **options: Any) -> BertExport:
        return bert_exporter(supernet, subnet, **options)

    def load(self, directory: Path, manifest: Mapping[str, Any], **options: Any) -> nn.Module:
        return load_bert(directory, manifest, **options)

    def verify(
        self, model: Any, supernet: Any, subnet: Any, manifest: Mapping[str, Any], directory: Path
    ) -> VerifyResult:
        return verify_bert(model, supernet, subnet, manifest, directory)


register_family(BertExportFamily())
