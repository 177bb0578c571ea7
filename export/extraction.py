"""A subnet as a plain transformers model, and the config.json that describes it.

Two kinds of checkpoint come out of here:

- *vanilla*: every kept layer has ``hidden_size / head_dim`` heads and all layers share one FFN
  width. The family's own config (``BertConfig`` ...) expresses that shape, so the directory loads
  with ``AutoModelForSequenceClassification.from_pretrained(dir)`` and no remote code.
- *per-layer*: anything else. The config gets ``ofa_num_heads`` / ``ofa_ffn_dims`` /
  ``ofa_head_dim``, its own ``model_type`` and an ``auto_map`` that points at ``modeling_ofa.py``
  shipped in the directory (``trust_remote_code=True``).
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

from transformers import PreTrainedModel

from ofa.families import SubnetLike, family_named
from ofa.families.bert import SUPPORTED_CLASSES, reshape_layer_
from ofa.families.cnn_graph import CnnGraph
from ofa.space import SearchSpace, Subnet
from ofa.supernet import Supernet

__all__ = ["extract", "fits_vanilla", "checkpoint_config", "modeling_source", "build_model"]

MODELING_FILE = "modeling_ofa.py"
# file names every export (BERT-family or CNN) writes
WEIGHTS_FILE, CONFIG_FILE, SUBNET_FILE = "model.safetensors", "config.json", "subnet.json"
# family prefix of the transformers class names -> model_type suffix
_FAMILIES = {
    "Bert": "bert",
    "Roberta": "roberta",
    "XLMRoberta": "xlm_roberta",
    "Electra": "electra",
}
# keys only the per-layer config has; dropped to rebuild the family's vanilla config
_OFA_KEYS = ("ofa_num_heads", "ofa_ffn_dims", "ofa_head_dim", "ofa_base_architecture", "auto_map")


def extract(supernet: Supernet, subnet: SubnetLike) -> PreTrainedModel | CnnGraph:
    """A plain model of the supernet's class holding ``subnet``'s weights, in eval mode.

    BERT-family supernets give a transformers model; CNN supernets a plain :class:`CnnGraph`.

    Raises:
        ValueError: ``subnet`` is outside the supernet's space.

    Example:
        >>> small = export.extract(supernet, supernet.space.min_subnet())
    """
    subnet_type = family_named(supernet.family_name).subnet_type
    if not isinstance(subnet, subnet_type):
        raise TypeError(
            f"subnet must be an ofa.{subnet_type.__name__}, got {type(subnet).__name__}"
        )
    space: Any = supernet.space  # the family's search space
    space.check(subnet)
    model: Any = supernet.extract(subnet)  # type: ignore[arg-type]
    model.eval()
    return model


def fits_vanilla(space: SearchSpace, subnet: Subnet) -> bool:
    """True when the family's own config expresses ``subnet`` (so no remote code is needed).

    Vanilla configs derive the head width as ``hidden_size / num_attention_heads`` and have one
    ``intermediate_size``: every layer must keep ``hidden_size / head_dim`` heads and one FFN width.
    """
    full_heads = subnet.hidden_size // space.head_dim
    return all(h == full_heads for h in subnet.num_heads) and len(set(subnet.ffn_dims)) == 1


def _family_prefix(architecture: str) -> str:
    for prefix in sorted(_FAMILIES, key=len, reverse=True):
        if re.fullmatch(rf"{prefix}(Model|ForSequenceClassification)", architecture):
            return prefix
    raise ValueError(f"cannot export {architecture}: supported are {sorted(SUPPORTED_CLASSES)}")


def checkpoint_config(
    model: PreTrainedModel, space: SearchSpace, subnet: Subnet
) -> dict[str, Any]:
    """The config.json of the export of ``model`` (as :func:`extract` returned it)."""
    config = model.config.to_dict()
    config["ofa_subnet"] = subnet.to_dict()
    architecture = type(model).__name__
    config["architectures"] = [architecture]
    if fits_vanilla(space, subnet):
        return config
    prefix = _family_prefix(architecture)
    head = (
        "ForSequenceClassification"
        if architecture.endswith("ForSequenceClassification")
        else "Model"
    )
    config.update(
        model_type=f"ofa_{_FAMILIES[prefix]}",
        architectures=[f"Ofa{head}"],
        auto_map={
            "AutoConfig": "modeling_ofa.OfaConfig",
            "AutoModel": "modeling_ofa.OfaModel",
            "AutoModelForSequenceClassification": "modeling_ofa.OfaForSequenceClassification",
        },
        ofa_num_heads=list(subnet.num_heads),
        ofa_ffn_dims=list(subnet.ffn_dims),
        ofa_head_dim=space.head_dim,
        ofa_base_architecture=architecture,
    )
    return config


def modeling_source(architecture: str) -> str:
    """The text of ``modeling_ofa.py`` for a model of class ``architecture``."""
    prefix = _family_prefix(architecture)
    text = (Path(__file__).parent / "_remote_modeling.py").read_text()
    for kind in ("Config", "Model", "ForSequenceClassification"):
        old = f"from transformers import Bert{kind} as Base{kind}\n"
        assert old in text, old
        text = text.replace(old, f"from transformers import {prefix}{kind} as Base{kind}\n")
    return text.replace('MODEL_TYPE = "ofa_bert"', f'MODEL_TYPE = "ofa_{_FAMILIES[prefix]}"')


def build_model(config: dict[str, Any]) -> PreTrainedModel:
    """An (untrained) model of the shape a checkpoint's config.json describes, with ofa's classes.

    Works for vanilla and per-layer configs alike, without running any shipped code.
    """
    architecture = config.get("ofa_base_architecture") or (config.get("architectures") or [""])[0]
    if architecture not in SUPPORTED_CLASSES:
        raise ValueError(
            f"config.json names architecture {architecture!r}, which is not an ofa export; "
            f"supported: {sorted(SUPPORTED_CLASSES)}"
        )
    model_class = SUPPORTED_CLASSES[architecture]
    plain = {k: v for k, v in copy.deepcopy(config).items() if k not in _OFA_KEYS}
    plain.pop("model_type", None)
    plain["architectures"] = [architecture]
    config_class: Any = model_class.config_class
    model = model_class(config_class.from_dict(plain))
    if "ofa_num_heads" in config:
        base: Any = model.base_model
        layers = base.encoder.layer
        if not len(config["ofa_num_heads"]) == len(config["ofa_ffn_dims"]) == len(layers):
            raise ValueError("config.json: ofa_num_heads / ofa_ffn_dims need one entry per layer")
        for layer, heads, ffn_dim in zip(layers, config["ofa_num_heads"], config["ofa_ffn_dims"]):
            reshape_layer_(
                layer,
                hidden=config["hidden_size"],
                num_heads=int(heads),
                head_dim=int(config["ofa_head_dim"]),
                ffn_dim=int(ffn_dim),
            )
    return model
