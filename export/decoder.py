"""Exporting decoder-only LMs (Llama, Qwen2, Mistral): a transformers checkpoint.

:func:`export.save` builds a :class:`DecoderExport` for decoder supernets: it extracts the
subnet as a transformers model, checks its logits against the supernet's, and writes
``model.safetensors``, ``config.json``, ``subnet.json``, ``generation_config.json`` (the
model's), the tokenizer when given, and ``modeling_ofa.py`` when needed.

Two kinds of checkpoint come out:

- *stock*: every kept layer has the same query heads, KV heads and MLP width, and the family's
  config accepts the shape (Llama's asks ``hidden_size % num_attention_heads == 0``). The config
  keeps ``head_dim`` apart from ``hidden_size / num_attention_heads``, so the directory loads with
  ``AutoModelForCausalLM.from_pretrained(dir)``, no remote code, and ``generate()`` works.
- *per-layer*: anything else. The config gets ``ofa_num_heads`` / ``ofa_num_kv_heads`` /
  ``ofa_ffn_dims``, its own ``model_type`` and an ``auto_map`` to the ``modeling_ofa.py``
  shipped beside it (:mod:`ofa.families.decoder_modeling`; ``trust_remote_code=True``).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import safetensors.torch
import torch
from torch import nn
from transformers import GenerationConfig, PreTrainedModel

from export._compare import DENSE_ATOL, VerifyResult, check_diff, compare
from export._families import register_family
from export.extraction import CONFIG_FILE, MODELING_FILE, SUBNET_FILE, WEIGHTS_FILE, extract
from ofa._io import read_json, write_json_atomic
from ofa.decoder_space import DecoderSubnet
from ofa.families import decoder_modeling
from ofa.families.decoder import SUPPORTED_CLASSES
from ofa.families.decoder_modeling import reshape_layer_
from ofa.supernet import Supernet

logger = logging.getLogger(__name__)

__all__ = [
    "DecoderExport",
    "DecoderExportFamily",
    "build_decoder",
    "decoder_checkpoint_config",
    "fits_stock",
]

DEFAULT_SEQ_LEN = 128  # the manifest's FLOPs length when neither seq_len nor latency names one
GENERATION_FILE = "generation_config.json"
_MODEL_TYPES = {"Llama": "llama", "Qwen2": "qwen2", "Mistral": "mistral"}
_LISTS = ("ofa_num_heads", "ofa_num_kv_heads", "ofa_ffn_dims")
_OFA_KEYS = (*_LISTS, "ofa_base_architecture", "auto_map")


def _parts(architecture: str) -> tuple[str, str]:
    """``("Llama", "ForCausalLM")`` of ``"LlamaForCausalLM"``; ``"Model"`` for a bare one."""
    for prefix in _MODEL_TYPES:
        for head in ("ForCausalLM", "Model"):
            if architecture == prefix + head:
                return prefix, head
    raise ValueError(f"cannot export {architecture}: supported are {sorted(SUPPORTED_CLASSES)}")


def fits_stock(model: PreTrainedModel, subnet: DecoderSubnet) -> bool:
    """True when the family's own config expresses the extracted ``model`` of ``subnet``."""
    if not subnet.is_uniform:
        return False
    try:  # the stock config's own checks (transformers raises huggingface_hub's strict errors)
        type(model.config).from_dict(model.config.to_dict())
    except Exception as error:  # noqa: BLE001
        logger.info("the stock config refuses subnet %s: %s", subnet.to_json(), error)
        return False
    return True


def decoder_checkpoint_config(model: PreTrainedModel, subnet: DecoderSubnet) -> dict[str, Any]:
    """The config.json of the export of ``model`` (as the family's ``extract`` returned it)."""
    config = model.config.to_dict()
    config["ofa_subnet"] = subnet.to_dict()
    architecture = type(model).__name__
    config["architectures"] = [architecture]
    if fits_stock(model, subnet):
        return config
    prefix, head = _parts(architecture)
    config.update(
        model_type=f"ofa_{_MODEL_TYPES[prefix]}",
        architectures=[f"Ofa{head}"],
        auto_map={
            "AutoConfig": "modeling_ofa.OfaConfig",
            "AutoModel": "modeling_ofa.OfaModel",
            "AutoModelForCausalLM": "modeling_ofa.OfaForCausalLM",
        },
        ofa_num_heads=list(subnet.num_heads),
        ofa_num_kv_heads=list(subnet.num_kv_heads),
        ofa_ffn_dims=list(subnet.ffn_dims),
        ofa_base_architecture=architecture,
    )
    return config


def modeling_source(architecture: str) -> str:
    """The text of ``modeling_ofa.py`` for a model of class ``architecture``."""
    prefix, _ = _parts(architecture)
    text = Path(decoder_modeling.__file__).read_text()
    for kind in ("Config", "ForCausalLM", "Model"):
        old = f"from transformers import Llama{kind} as Base{kind}\n"
        assert old in text, old
        text = text.replace(old, f"from transformers import {prefix}{kind} as Base{kind}\n")
    return text.replace('MODEL_TYPE = "ofa_llama"', f'MODEL_TYPE = "ofa_{_MODEL_TYPES[prefix]}"')


def build_decoder(config: Mapping[str, Any]) -> PreTrainedModel:
    """An (untrained) model of the shape a decoder checkpoint's config.json describes, with
    transformers' own classes (per-layer shapes set in process: no shipped code runs)."""
    architecture = config.get("ofa_base_architecture") or (config.get("architectures") or [""])[0]
    if architecture not in SUPPORTED_CLASSES:
        raise ValueError(
            f"config.json names architecture {architecture!r}, which is not an ofa decoder "
            f"export; supported: {sorted(SUPPORTED_CLASSES)}"
        )
    model_class = SUPPORTED_CLASSES[architecture]
    plain = {k: v for k, v in copy.deepcopy(dict(config)).items() if k not in _OFA_KEYS}
    plain.pop("model_type", None)
    plain["architectures"] = [architecture]
    config_class: Any = model_class.config_class
    if "ofa_num_heads" not in config:
        return model_class(config_class.from_dict(plain))
    # per-layer heads: the stock check (hidden_size % num_attention_heads) does not apply
    heads = {k: plain.pop(k) for k in ("num_attention_heads", "num_key_value_heads")}
    model_config = config_class.from_dict(
        {**plain, "num_attention_heads": 1, "num_key_value_heads": 1}
    )
    for key, value in heads.items():
        setattr(model_config, key, value)
    model = model_class(model_config)
    lists = [config[name] for name in _LISTS]
    layers: Any = model.base_model.layers
    if any(len(values) != len(layers) for values in lists):
        raise ValueError(f"config.json: {', '.join(_LISTS)} need one entry per decoder layer")
    for layer, num_heads, kv_heads, ffn_dim in zip(layers, *lists):
        reshape_layer_(
            layer,
            hidden_size=int(config["hidden_size"]),
            num_heads=int(num_heads),
            num_kv_heads=int(kv_heads),
            head_dim=int(config["head_dim"]),
            ffn_dim=int(ffn_dim),
        )
    return model


def _check(model: PreTrainedModel, supernet: Supernet, subnet: DecoderSubnet) -> VerifyResult:
    with supernet.using(subnet):  # type: ignore[arg-type]
        diff = compare(model, supernet, vocab_size=model.config.vocab_size)
    return check_diff("supernet", diff, DENSE_ATOL)


class DecoderExport:
    """A decoder subnet on its way to a checkpoint: extracted and checked against the supernet."""

    def __init__(
        self, supernet: Supernet, subnet: DecoderSubnet, *, tokenizer: Any, seq_len: int
    ) -> None:
        self.supernet, self.subnet, self.tokenizer, self.seq_len = (
            supernet,
            subnet,
            tokenizer,
            seq_len,
        )
        self.model: PreTrainedModel = extract(supernet, subnet)  # type: ignore[assignment]
        self.check = _check(self.model, supernet, subnet)
        self.stock = fits_stock(self.model, subnet)

    def manifest_fields(self) -> dict[str, Any]:
        supernet, subnet = self.supernet, self.subnet
        teacher = supernet.space.max_subnet()
        shape = {"batch_size": 1, "seq_len": self.seq_len}
        flops = supernet.flops(subnet, **shape)  # type: ignore[arg-type]
        return {
            "family": "decoder",
            "architecture": type(self.model).__name__,
            "loads_with": "transformers" if self.stock else "transformers, trust_remote_code=True",
            "flops": {"value": flops, **shape, "counts": "matmul, 2 per MAC"},
            "teacher_params": supernet.num_params(teacher),  # type: ignore[arg-type]
            "teacher_flops": supernet.flops(teacher, **shape),  # type: ignore[arg-type]
            "verify": self.check.to_dict(),
        }

    def write(self, tmp: Path) -> dict[str, Any]:
        """Write the checkpoint's files into ``tmp``; nothing more for the manifest."""
        model, subnet = self.model, self.subnet
        metadata = {"format": "pt", "ofa_subnet": subnet.to_json()}
        safetensors.torch.save_model(model, str(tmp / WEIGHTS_FILE), metadata=metadata)
        write_json_atomic(tmp / CONFIG_FILE, decoder_checkpoint_config(model, subnet))
        write_json_atomic(tmp / SUBNET_FILE, subnet.to_dict())
        if not self.stock:
            (tmp / MODELING_FILE).write_text(modeling_source(type(model).__name__))
        generation = getattr(model, "generation_config", None)
        if generation is not None:
            generation.save_pretrained(str(tmp))
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(str(tmp))
        return {}


def decoder_exporter(
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
) -> DecoderExport:
    """The decoder exporter, refusing the options it does not have yet."""
    refused = {
        "sparsity": sparsity is not None,
        "onnx": onnx,
        "torch_export": torch_export,
        "finetune_data": finetune_data is not None,
        "calibration_data": calibration_data is not None,
    }
    named = [name for name, given in refused.items() if given]
    if named:
        raise ValueError(
            f"a decoder export does not take {', '.join(named)} (2:4 sparsity, ONNX and "
            "torch.export are for BERT-family and CNN exports): leave them unset"
        )
    length = seq_len if seq_len is not None else default_seq_len
    return DecoderExport(
        supernet,
        subnet,
        tokenizer=tokenizer,
        seq_len=DEFAULT_SEQ_LEN if length is None else length,
    )


def load_decoder(
    directory: Path,
    manifest: Mapping[str, Any],
    *,
    device: str | torch.device,
    dtype: torch.dtype | None,
    semi_structured: Literal["auto", "off"],
) -> PreTrainedModel:
    """A decoder export (stock or per-layer) with its generation config, in eval mode."""
    model = build_decoder(read_json(directory / CONFIG_FILE, what="config"))
    safetensors.torch.load_model(model, str(directory / WEIGHTS_FILE), strict=True)
    if (directory / GENERATION_FILE).is_file():
        model.generation_config = GenerationConfig.from_pretrained(str(directory))
    model.to(device=device, dtype=dtype)  # type: ignore[call-arg]
    return model.eval()


class DecoderExportFamily:
    """Exporting decoder-only LMs: a transformers checkpoint (stock or per-layer classes)."""

    name = "decoder"

    def exporter(self, supernet: Any, subnet: Any, **options: Any) -> DecoderExport:
        return decoder_exporter(supernet, subnet, **options)

    def load(self, directory: Path, manifest: Mapping[str, Any], **options: Any) -> nn.Module:
        return load_decoder(directory, manifest, **options)

    def verify(
        self, model: Any, supernet: Any, subnet: Any, manifest: Mapping[str, Any], directory: Path
    ) -> VerifyResult:
        return _check(model, supernet, subnet)


register_family(DecoderExportFamily())
